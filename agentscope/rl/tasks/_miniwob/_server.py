"""Where the MiniWoB++ pages come from: the ``miniwob`` package's HTML, served on 127.0.0.1 by one server per process.

Only the package's files are used (``html/miniwob/<task>.html``, ``html/core/core.js``...); the package itself is
never imported (its ``__init__`` registers gymnasium environments and its runtime drives Selenium), so it is found
with :func:`importlib.util.find_spec`, which reads no module.
"""

from __future__ import annotations

import difflib
import functools
import http.server
import importlib.util
import logging
import sys
import threading
from pathlib import Path

import anyio

__all__ = ["html_dir", "miniwob_task_names", "serve_html", "task_url", "validate_task_names"]

logger = logging.getLogger("agentscope.rl.tasks")

_INSTALL = "MiniWoB++ tasks need the miniwob package: pip install -e '.[miniwob]'"


@functools.cache
def html_dir() -> Path:
    """The package's ``html`` folder (blocking: file-system look-ups)."""
    spec = importlib.util.find_spec("miniwob")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "html"
        if (candidate / "miniwob").is_dir() and (candidate / "core" / "core.js").is_file():
            return candidate
    raise ImportError(_INSTALL, name="miniwob")


@functools.cache
def miniwob_task_names() -> tuple[str, ...]:
    """Every task the installed package ships (130 in miniwob 1.1), sorted. Blocking: lists a folder."""
    return tuple(sorted(p.stem for p in (html_dir() / "miniwob").glob("*.html")))


def validate_task_names(names: list[str]) -> None:
    """Raise ValueError naming each unknown task (with the closest known names)."""
    known = miniwob_task_names()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown MiniWoB++ task {name!r}{hint} (the miniwob package ships {len(known)} tasks: "
                f"agentscope.rl.tasks.miniwob_task_names() lists them)"
            )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a page loads about ten files
    # The files are UTF-8 but declare no charset: without one Chromium decodes unicode-test's "Cancél" as "CancÃ©l".
    extensions_map = {  # noqa: RUF012 - the base class's class attribute, replaced
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "max-age=3600")  # the files never change while we run
        super().end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A context closed while its page still loads drops the connection (BrokenPipe, ConnectionReset): normal
        # at the end of every episode, not worth the traceback socketserver prints.
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            logger.warning("miniwob HTTP server: a request failed", exc_info=error)


_lock = threading.Lock()
_server: _Server | None = None


def _start() -> str:
    """Start the server once per process (blocking); returns its origin."""
    global _server
    with _lock:
        if _server is None:
            handler = functools.partial(_QuietHandler, directory=str(html_dir()))
            server = _Server(("127.0.0.1", 0), handler)
            thread = threading.Thread(target=server.serve_forever, name="miniwob-http", daemon=True)
            thread.start()
            _server = server
        return f"http://127.0.0.1:{_server.server_address[1]}"


async def serve_html() -> str:
    """The origin (``http://127.0.0.1:PORT``) of this process's MiniWoB++ server, started on first use.

    The server is a daemon thread bound to the loopback on a free port; it serves the package's files and nothing
    else, and lives as long as the process.
    """
    if _server is not None:
        return f"http://127.0.0.1:{_server.server_address[1]}"
    return await anyio.to_thread.run_sync(_start)


def task_url(origin: str, name: str) -> str:
    """The page of task ``name`` on the server at ``origin``."""
    return f"{origin}/miniwob/{name}.html"
