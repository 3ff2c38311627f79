"""Serving the studio: ``agentscope studio`` runs :func:`serve`."""

from __future__ import annotations

import secrets
from pathlib import Path

from agentscope._net import is_loopback_host
from agentscope.exceptions import UsageError

__all__ = ["check_binding", "serve", "studio_url"]


def studio_url(host: str, port: int, token: str | None = None) -> str:
    """The address to open in a browser (with the token in the fragment, which is never sent to the server)."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    return f"{url}#token={token}" if token else url


def check_binding(host: str, token: str | None) -> None:
    """Refuse to expose the studio beyond loopback without a token.

    Raises:
        UsageError: ``host`` is not a loopback address and there is no token (or it is too short).
    """
    if is_loopback_host(host):
        return
    if not token:
        raise UsageError(
            f"binding the studio to {host} makes your traces reachable from the network: pass --token "
            f"(e.g. --token {secrets.token_urlsafe(24)}) or bind 127.0.0.1"
        )
    if len(token) < 16:
        raise UsageError("the studio token must be at least 16 characters long")


def serve(
    store: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the studio over ``store`` until interrupted (blocking; uvicorn runs its own event loop).

    Raises:
        UsageError: a non-loopback ``host`` without a ``token``.
    """
    check_binding(host, token)
    from agentscope.studio._app import create_app

    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError("the studio needs FastAPI and uvicorn: pip install -e '.[studio]'") from exc
    allowed = None
    if token is None:  # loopback without a token: accept only loopback Host headers (no DNS rebinding)
        allowed = ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = create_app(store, token=token, allowed_hosts=allowed)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
