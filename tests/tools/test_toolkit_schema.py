"""Toolkit registration: JSON schemas from signatures and docstrings, names, groups, misuse."""

import enum
import functools
import weakref
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from agentscope.exceptions import UsageError
from agentscope.message import ToolUseBlock
from agentscope.models import ToolSchema
from agentscope.tools import ToolInfo, Toolkit, _schema


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(description="Street and number.")
    city: str


class Person(BaseModel):
    name: str
    address: Address


class Point(TypedDict):
    x: float
    y: float


def search(
    query: str, limit: int = 10, mode: Literal["fast", "deep"] = "fast", tags: list[str] | None = None
) -> str:
    """Search the knowledge base.

    Returns the best matching passages,
    best first.

    Args:
        query: What to look for.
        limit (int): How many results
            to return at most.
        mode: Search strategy.
        tags: Only passages with these tags.

    Returns:
        The passages.
    """
    return query


def schema_of(func: Any, **kwargs: Any) -> dict[str, Any]:
    toolkit = Toolkit()
    toolkit.register(func, **kwargs)
    (schema,) = toolkit.schemas()
    return schema.parameters


def test_schema_types_defaults_required_and_google_docstring() -> None:
    toolkit = Toolkit()
    assert toolkit.register(search) is search
    (schema,) = toolkit.schemas()
    assert isinstance(schema, ToolSchema)
    assert schema.name == "search"
    assert (
        schema.description == "Search the knowledge base.\n\nReturns the best matching passages,\nbest first."
    )
    assert schema.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "limit": {"type": "integer", "default": 10, "description": "How many results to return at most."},
            "mode": {
                "type": "string",
                "enum": ["fast", "deep"],
                "default": "fast",
                "description": "Search strategy.",
            },
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
                "description": "Only passages with these tags.",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_numpy_and_sphinx_docstrings() -> None:
    def numpy_style(x: int, y: float) -> None:
        """Move the cursor.

        Parameters
        ----------
        x : int
            Column.
        y : float
            Row, from the top.
        """

    def sphinx_style(x: int, y: float) -> None:
        """Move the cursor.

        :param x: Column.
        :param float y: Row,
            from the top.
        :returns: nothing
        """

    for func in (numpy_style, sphinx_style):
        toolkit = Toolkit()
        toolkit.register(func)
        (schema,) = toolkit.schemas()
        assert schema.description == "Move the cursor."
        props = schema.parameters["properties"]
        assert props["x"]["description"] == "Column."
        assert props["y"]["description"] == "Row, from the top."


def test_nested_models_enums_typeddict_and_literal() -> None:
    def register_person(person: Person, color: Color, where: Point, kind: Literal[1, 2] = 1) -> None:
        """Register someone."""

    params = schema_of(register_person)
    assert params["required"] == ["person", "color", "where"]
    assert params["properties"]["person"] == {"$ref": "#/$defs/Person"}
    assert params["properties"]["color"] == {"$ref": "#/$defs/Color"}
    assert params["properties"]["where"] == {"$ref": "#/$defs/Point"}
    assert params["properties"]["kind"] == {"type": "integer", "enum": [1, 2], "default": 1}
    defs = params["$defs"]
    assert defs["Person"]["properties"]["address"] == {"$ref": "#/$defs/Address"}
    assert defs["Address"]["properties"]["street"]["description"] == "Street and number."
    assert defs["Address"]["required"] == ["street", "city"]
    assert defs["Color"]["enum"] == ["red", "green"]
    assert set(defs["Point"]["properties"]) == {"x", "y"}


def test_annotated_field_description_wins_over_docstring_and_field_defaults() -> None:
    def f(
        a: Annotated[int, Field(description="From Annotated.", ge=1)],
        b: int = Field(5, description="From Field default.", le=9),
        c: list[int] = Field(default_factory=list),  # noqa: B008 - a pydantic Field as the default
    ) -> None:
        """Do it.

        Args:
            a: From the docstring.
            b: From the docstring too.
            c: Docstring for c.
        """

    props = schema_of(f)["properties"]
    assert props["a"] == {"type": "integer", "minimum": 1, "description": "From Annotated."}
    assert props["b"] == {"type": "integer", "maximum": 9, "default": 5, "description": "From Field default."}
    assert props["c"]["description"] == "Docstring for c."
    assert "default" not in props["c"]


def test_parameter_names_that_clash_with_pydantic_attributes() -> None:
    def f(schema: str, model_config: int, json: bool = False) -> str:
        return schema

    params = schema_of(f)
    assert list(params["properties"]) == ["schema", "model_config", "json"]
    assert params["required"] == ["schema", "model_config"]


def test_unannotated_parameters_accept_anything() -> None:
    def f(x, y=3):  # type: ignore[no-untyped-def]
        return x

    params = schema_of(f)
    assert params["properties"]["x"] == {}
    assert params["properties"]["y"] == {"default": 3}


def test_preset_kwargs_are_hidden_from_the_schema() -> None:
    def fetch(url: str, api_key: str, retries: int = 3) -> str:
        """Fetch a page.

        Args:
            url: The page.
            api_key: Secret.
            retries: Attempts.
        """
        return url

    params = schema_of(fetch, preset_kwargs={"api_key": "secret"})
    assert list(params["properties"]) == ["url", "retries"]
    assert params["required"] == ["url"]
    assert "api_key" not in str(params)


def test_variadic_parameters() -> None:
    def f(a: int, *args: int, **kwargs: str) -> None: ...

    params = schema_of(f)
    assert list(params["properties"]) == ["a"]
    assert "additionalProperties" not in params  # **kwargs: extra arguments are accepted


class Calculator:
    """A calculator object."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def add(self, a: int, b: int) -> int:
        """Add two numbers and the offset.

        Args:
            a: First.
            b: Second.
        """
        return a + b + self.offset

    def __call__(self, x: int) -> int:
        """Shift x by the offset.

        Args:
            x: The number.
        """
        return x + self.offset


def test_bound_methods_callable_objects_and_partials() -> None:
    calc = Calculator(1)
    toolkit = Toolkit()
    toolkit.register(calc.add)
    toolkit.register(calc, name="shift")
    toolkit.register(functools.partial(search, limit=3), name="search3")
    add, shift, search3 = toolkit.schemas()
    assert add.name == "add"
    assert add.description == "Add two numbers and the offset."
    assert list(add.parameters["properties"]) == ["a", "b"]  # no self
    assert shift.description == "Shift x by the offset."
    assert shift.parameters["properties"] == {"x": {"type": "integer", "description": "The number."}}
    assert search3.description.startswith("Search the knowledge base.")
    assert search3.parameters["properties"]["limit"]["default"] == 3


async def test_a_method_registered_on_a_fresh_toolkit_per_episode_is_described_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an environment does at every reset: its bound methods on a new toolkit. The schema is built on the
    first registration only; each toolkit still gets its own schema and calls its own instance."""
    built: list[str] = []
    build = _schema._build_function_spec

    def counting(func: Any, *, name: str, preset: Any) -> Any:
        built.append(name)
        return build(func, name=name, preset=preset)

    monkeypatch.setattr(_schema, "_build_function_spec", counting)
    monkeypatch.setattr(_schema, "_SPECS", weakref.WeakKeyDictionary())  # not what other tests registered
    toolkits = []
    for offset in range(3):
        toolkit = Toolkit()
        toolkit.register(Calculator(offset).add)
        toolkits.append(toolkit)
    assert built == ["add"]
    first, second = (t.schemas()[0] for t in toolkits[:2])
    assert first == second
    first.parameters["properties"]["a"]["description"] = "changed"  # one toolkit's schema, changed
    assert second.parameters["properties"]["a"]["description"] == "First."
    results = [await t.call(ToolUseBlock(id="c", name="add", input={"a": 1, "b": 2})) for t in toolkits]
    assert [r.output for r in results] == ["3", "4", "5"]
    # a different name, preset or an unbound function is described anew
    Toolkit().register(Calculator(0).add, name="plus")
    Toolkit().register(Calculator.add, preset_kwargs={"self": Calculator(0)})
    assert built == ["add", "plus", "add"]


def test_decorator_forms_and_explicit_name_description() -> None:
    toolkit = Toolkit()

    @toolkit.tool
    def plain(x: int) -> int:
        """Plain."""
        return x

    @toolkit.tool(name="renamed", description="Custom description.", timeout_s=2)
    async def original(x: int) -> int:
        return x

    assert toolkit.names == ["plain", "renamed"]
    assert plain(2) == 2  # the decorator returns the function unchanged
    assert "original" not in toolkit
    assert "renamed" in toolkit
    assert len(toolkit) == 2
    info = toolkit.get("renamed")
    assert isinstance(info, ToolInfo)
    assert info.description == "Custom description."
    assert info.timeout_s == 2
    assert info.streaming is False
    assert info.func is original
    assert toolkit.get("missing") is None


def test_schema_order_is_stable_and_cached_until_the_registry_changes() -> None:
    toolkit = Toolkit()
    for name in ("c", "a", "b"):
        toolkit.register(search, name=name)
    first = toolkit.schemas()
    assert [s.name for s in first] == ["c", "a", "b"]
    first.clear()  # callers get a copy; the cache is unaffected
    assert [s.name for s in toolkit.schemas()] == ["c", "a", "b"]
    assert toolkit.schemas()[0] is toolkit.schemas()[0]
    toolkit.remove("a")
    assert [s.name for s in toolkit.schemas()] == ["c", "b"]
    toolkit.register(search, name="a")
    assert [s.name for s in toolkit.schemas()] == ["c", "b", "a"]


def test_groups_change_schemas_and_instructions() -> None:
    toolkit = Toolkit()
    toolkit.register(search)
    group = toolkit.create_group("browser", "Web browsing", instructions="Open a page before reading it.")
    assert group.active is False
    toolkit.register(search, name="open_page", group="browser")
    toolkit.create_group("files", active=True, instructions="Paths are relative.")
    toolkit.register(search, name="read_file", group="files")
    assert [s.name for s in toolkit.schemas()] == ["search", "read_file"]
    assert toolkit.active_groups == ["basic", "files"]
    assert toolkit.group_instructions() == "## Tool group: files\nPaths are relative."

    toolkit.set_group_active("browser", True)
    assert [s.name for s in toolkit.schemas()] == ["search", "open_page", "read_file"]
    assert toolkit.active_groups == ["basic", "browser", "files"]
    assert toolkit.group_instructions() == (
        "## Tool group: browser (Web browsing)\nOpen a page before reading it.\n\n"
        "## Tool group: files\nPaths are relative."
    )
    toolkit.set_group_active("files", False)
    toolkit.set_group_active("basic", False)
    assert [s.name for s in toolkit.schemas()] == ["open_page"]
    assert [g.name for g in toolkit.groups] == ["basic", "browser", "files"]
    assert toolkit.names == ["search", "open_page", "read_file"]  # names lists every registered tool


def test_group_instructions_empty_when_no_active_group_has_any() -> None:
    toolkit = Toolkit()
    toolkit.create_group("quiet", active=True)
    toolkit.create_group("off", instructions="unused")
    assert toolkit.group_instructions() == ""


def test_registration_misuse_raises_usage_error() -> None:
    toolkit = Toolkit()
    toolkit.register(search)
    with pytest.raises(UsageError, match="already registered"):
        toolkit.register(search)
    with pytest.raises(UsageError, match="does not exist"):
        toolkit.register(search, name="other", group="nope")
    with pytest.raises(UsageError, match="invalid tool name"):
        toolkit.register(lambda: None)
    with pytest.raises(UsageError, match="invalid tool name"):
        toolkit.register(search, name="has space")
    with pytest.raises(UsageError, match="invalid tool name"):
        toolkit.register(search, name="trailing_newline\n")
    with pytest.raises(UsageError, match="unknown parameter"):
        toolkit.register(search, name="s2", preset_kwargs={"nope": 1})
    with pytest.raises(UsageError, match="timeout_s"):
        toolkit.register(search, name="s3", timeout_s=0)
    with pytest.raises(UsageError, match="timeout_s"):
        Toolkit(default_timeout_s=-1)
    with pytest.raises(UsageError, match="already exists"):
        toolkit.create_group("basic")
    with pytest.raises(UsageError, match="does not exist"):
        toolkit.set_group_active("nope", True)
    with pytest.raises(UsageError, match="no tool named"):
        toolkit.remove("nope")
    with pytest.raises(UsageError, match="not callable"):
        toolkit.register(42, name="x")  # type: ignore[arg-type]
    assert toolkit.names == ["search"]  # failed registrations leave nothing behind


class Opaque:
    """Not something pydantic can validate."""


def test_unschematizable_parameter_is_a_usage_error_unless_preset() -> None:
    def use(handle: Opaque, x: int) -> int:
        return x

    toolkit = Toolkit()
    with pytest.raises(UsageError, match="preset"):
        toolkit.register(use)
    toolkit.register(use, preset_kwargs={"handle": Opaque()})
    assert list(toolkit.schemas()[0].parameters["properties"]) == ["x"]


def test_unresolvable_annotation_is_a_usage_error() -> None:
    def f(x: "NotDefinedAnywhere") -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    with pytest.raises(UsageError, match="annotations cannot be resolved"):
        Toolkit().register(f)
