"""The command line as a run records it: secrets redacted (``--api-key``, URL user info, ``KEY=VALUE``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["recorded_argv"]

_SECRET_WORDS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "cookie",
)
_WORD_BREAK = re.compile(r"[^a-z0-9]+")
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#@\s]+@")
_URL_PARAM = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")
_ASSIGNMENT = re.compile(r"([A-Za-z_][\w.\-\[\]]*)=(.*)", re.DOTALL)
_REDACTED = "<redacted>"
_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9-]*)\s*:\s*\S.*", re.DOTALL)
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


def _secret_name(name: str) -> bool:
    """Whether an option, config key or URL parameter name looks like it holds a secret (a word of it ends
    in key, token, secret, password, auth...: ``--api-key``, ``model.apiKey``, ``hf_token``; not
    ``max_tokens``)."""
    return any(word.endswith(_SECRET_WORDS) for word in _WORD_BREAK.split(name.lower()) if word)


def _scrub(text: str) -> str:
    """``text`` without the secrets it may carry: URL user info (``https://user:pw@host``), URL parameters
    with secret names (``?api_key=...``), the value of a ``KEY=VALUE`` whose key looks secret, the value of an HTTP
    header line that carries credentials (``Authorization: ...``, ``X-Api-Key: ...``) and ``Bearer <token>``."""
    assignment = _ASSIGNMENT.fullmatch(text)
    if assignment is not None and _secret_name(assignment.group(1)):
        return f"{assignment.group(1)}={_REDACTED}"
    header = _HEADER.fullmatch(text)  # curl -H 'Authorization: Bearer ...', 'X-Api-Key: ...'
    if header is not None and "://" not in text:
        name = header.group(1)
        if name.lower() in _CREDENTIAL_HEADERS or _secret_name(name):
            return f"{name}: {_REDACTED}"
    text = _BEARER.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{_REDACTED}@", text)
    if "=" in text and ("?" in text or "&" in text or ";" in text):
        text = _URL_PARAM.sub(
            lambda m: f"{m.group(1)}{m.group(2)}={_REDACTED}" if _secret_name(m.group(2)) else m.group(0),
            text,
        )
    return text


def recorded_argv(argv: Sequence[str], *, capture_content: bool = True) -> list[str]:
    """The command line as a run records it, without secrets: values of options that look secret
    (``--api-key``, ``--token``) replaced by ``<redacted>``, and in every other argument URL user info
    (``https://user:pw@host``), secret-named URL parameters and the value of a ``KEY=VALUE`` with a secret-looking
    key (``--set model.api_key=...``); without ``capture_content`` only the program and the option names are
    kept (arguments such as ``-m "message"`` are what was said)."""
    recorded: list[str] = []
    hide_next = False
    for i, arg in enumerate(argv):
        if hide_next:
            recorded.append(_REDACTED)
            hide_next = False
            continue
        name, eq, value = arg.partition("=")
        is_option = arg.startswith("-") and len(arg) > 1
        if is_option and _secret_name(name):
            if eq:
                recorded.append(f"{name}={_REDACTED}")
            else:
                recorded.append(arg)
                hide_next = True
        elif i == 0 or capture_content:
            recorded.append(f"{name}={_scrub(value)}" if is_option and eq else _scrub(arg))
        elif is_option:
            recorded.append(name if eq else arg)
        else:
            recorded.append(_REDACTED)
    return recorded
