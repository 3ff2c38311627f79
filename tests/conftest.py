"""Guards that every test runs under.

- **No real model requests.** ``agentscope.models.ALLOW_MODEL_REQUESTS`` is ``False`` for the whole session,
  so a real model client (``OpenAIChatModel``, ``AnthropicChatModel``) raises ``ModelRequestsBlockedError``
  instead of sending a request. Use ``ScriptedModel``/``FunctionModel`` from ``agentscope.testing``; a test
  that talks to a fake provider on 127.0.0.1 opts in with the ``allow_model_requests`` fixture.
- **No blocking calls on the event loop from our code.** An autouse BlockBuster fixture patches the blocking
  functions (``time.sleep``, file and socket I/O, ``sqlite3``, lock waits, ``input``...): calling one while an
  event loop runs in the current thread, with a frame of the ``agentscope`` package on the stack, raises
  ``blockbuster.BlockingError`` and fails the test. Test code alone may block (it is not scanned), and sync
  code in a worker thread (``anyio.to_thread.run_sync``) is not checked: that is the fix to use.
  Exemptions live in ``BLOCKING_EXEMPTIONS``, each with its reason; keep the list short.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from click.testing import Result

import agentscope.models

agentscope.models.ALLOW_MODEL_REQUESTS = False


class BlockingExemption(NamedTuple):
    """A blocking function that the named functions of one file may call on the loop, and why."""

    blocking_function: str
    """Key in ``BlockBuster.functions``, e.g. ``"io.BufferedReader.read"``."""
    filename: str
    """Suffix of the calling frame's file, e.g. ``"importlib/metadata/__init__.py"``."""
    functions: frozenset[str]
    """Names (``co_name``) of the calling functions in that file."""
    reason: str


BLOCKING_EXEMPTIONS: tuple[BlockingExemption, ...] = ()
"""Blocking calls allowed on the loop in every test. Empty so far: nothing in agentscope (or in a library
it calls on the loop) has needed one. Add an entry only for a call that is cheap and bounded (never the
network, never a user-sized file), e.g.
``BlockingExemption("os.stat", "inspect.py", frozenset({"getsourcefile"}), "why it is fine")``;
fix everything else with ``anyio.to_thread.run_sync``. One test can exempt a call through the
``blockbuster`` fixture: ``blockbuster.functions["time.sleep"].can_block_in("agentscope/_x.py", "f")``."""


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Tests marked ``@pytest.mark.anyio`` run on asyncio (the loop pytest-asyncio also uses)."""
    return "asyncio"


@pytest.fixture
def allow_model_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let real model clients send requests in this one test (to a fake provider on 127.0.0.1 only)."""
    monkeypatch.setattr(agentscope.models, "ALLOW_MODEL_REQUESTS", True)


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke ``agentscope`` in-process as a user would, on a terminal wide enough that rich never wraps an
    error box (a wrapped box splits the message a test looks for, and how it wraps depends on the path of
    the checkout)."""
    from typer.testing import CliRunner

    from agentscope.cli import app

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "4000", "NO_COLOR": "1", "TERM": "dumb"})

    return invoke


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_process() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m agentscope.cli *args`` as a user would: a subprocess in the checkout, without a terminal,
    with a minimal environment (plus ``env``)."""

    def run(
        *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentscope.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
        )

    return run


@contextmanager
def _serve_studio(store: Path, folder: Path) -> Generator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    import httpx2

    log_path = folder / "studio.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentscope.cli", "studio", "--store", str(store), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx2.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the studio did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def studio_server() -> Callable[[Path, Path], AbstractContextManager[str]]:
    """Serve a trace store with ``agentscope studio`` as a subprocess on a free 127.0.0.1 port:
    ``with studio_server(store, tmp_path) as url:`` (its output goes to ``tmp_path / "studio.log"``, shown when
    it does not start; it is stopped on leaving the block)."""
    return _serve_studio


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail the test if code of the ``agentscope`` package blocks a running event loop."""
    with blockbuster_ctx("agentscope") as bb:
        for exemption in BLOCKING_EXEMPTIONS:
            bb.functions[exemption.blocking_function].can_block_in(exemption.filename, exemption.functions)
        yield bb
