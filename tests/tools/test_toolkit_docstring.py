"""The docstring parser behind tool descriptions (Google, NumPy, Sphinx and Epydoc styles)."""

from agentscope.tools._docstring import ParsedDocstring, parse_docstring


def test_no_docstring() -> None:
    assert parse_docstring(None) == ParsedDocstring()
    assert parse_docstring("") == ParsedDocstring()
    assert parse_docstring("   Just a summary.   ") == ParsedDocstring("Just a summary.", {})


def test_google_style_with_types_continuations_and_other_sections() -> None:
    doc = """Summary line.

    Body paragraph one,
    still one.

    Body paragraph two.

    Args:
        path (str): File to read.
        encoding: Text encoding,
            for example utf-8.

            Blank lines inside an entry are fine.
        *args: Extra positional values.
        **options (dict[str, int]): Extra options.

    Returns:
        str: The content.

    Raises:
        OSError: when unreadable.
    """
    parsed = parse_docstring(doc)
    assert parsed.description == "Summary line.\n\nBody paragraph one,\nstill one.\n\nBody paragraph two."
    assert parsed.params == {
        "path": "File to read.",
        "encoding": "Text encoding, for example utf-8. Blank lines inside an entry are fine.",
        "args": "Extra positional values.",
        "options": "Extra options.",
    }


def test_google_section_aliases() -> None:
    for header in ("Arguments", "Parameters", "Params", "Keyword Args"):
        parsed = parse_docstring(f"Do.\n\n{header}:\n    x: The x.\n")
        assert parsed == ParsedDocstring("Do.", {"x": "The x."}), header


def test_numpy_style() -> None:
    doc = """Compute things.

    Parameters
    ----------
    x : int
        The first value,
        on two lines.
    y, z : float, optional
        Coordinates.
    flag
        No type given.

    Returns
    -------
    float
        The result.
    """
    parsed = parse_docstring(doc)
    assert parsed.description == "Compute things."
    assert parsed.params == {
        "x": "The first value, on two lines.",
        "y": "Coordinates.",
        "z": "Coordinates.",
        "flag": "No type given.",
    }


def test_sphinx_and_epydoc_styles() -> None:
    doc = """Send a message.

    Longer explanation.

    :param to: Recipient
        address.
    :param str body: The text.
    :type to: str
    :raises ValueError: never.
    :returns: the message id.
    """
    parsed = parse_docstring(doc)
    assert parsed.description == "Send a message.\n\nLonger explanation."
    assert parsed.params == {"to": "Recipient address.", "body": "The text."}

    epydoc = "Send.\n\n@param to: Recipient.\n@return: id\n"
    assert parse_docstring(epydoc) == ParsedDocstring("Send.", {"to": "Recipient."})


def test_sections_without_parameters_end_the_description() -> None:
    parsed = parse_docstring("Do it.\n\nExamples:\n    >>> do()\n\nNote:\n    Careful.\n")
    assert parsed == ParsedDocstring("Do it.", {})


def test_words_ending_in_a_colon_inside_text_are_not_sections() -> None:
    parsed = parse_docstring("Fetch a URL.\n\nThe following is supported: http and https.\nFormat: JSON.\n")
    assert parsed.description == "Fetch a URL.\n\nThe following is supported: http and https.\nFormat: JSON."
