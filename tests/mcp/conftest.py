"""Fixtures of the MCP tests: the npm ``server-everything`` over streamable HTTP, as a process a test can kill
and start again.

Every server listens on 127.0.0.1 only: a Node server gets ``servers/loopback.cjs`` preloaded, which makes it
listen on the loopback and announce the port it got. The npm servers are installed into ``.cache/npm`` by
``scripts/setup.d/10-mcp-npm.sh``; their tests skip only when that folder (or node) is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LOOPBACK = HERE / "servers" / "loopback.cjs"
NPM = HERE.parents[1] / ".cache" / "npm" / "node_modules" / "@modelcontextprotocol"
EVERYTHING_JS = NPM / "server-everything" / "dist" / "index.js"
_LISTENING = re.compile(r"LOOPBACK LISTENING ([\d.]+):(\d+)")


@dataclass
class ServerProcess:
    """A server process on 127.0.0.1 that a test can kill and start again on the same port."""

    argv: Sequence[str]
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
        env["PORT"] = str(self.port)
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 20
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline().decode(errors="replace")
            if not line:
                break
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                assert match.group(1) == "127.0.0.1", line
                self.port = int(match.group(2))
                return
        self.stop()
        raise AssertionError(f"server {self.argv} did not start:\n{''.join(seen)}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients."""
        if self.process is not None:
            self.process.kill()
            self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@pytest.fixture
def everything_http() -> Iterator[ServerProcess]:
    """``@modelcontextprotocol/server-everything`` in streamable HTTP mode, on 127.0.0.1 and a free port."""
    node = shutil.which("node")
    if node is None or not EVERYTHING_JS.is_file():
        pytest.skip("node or the npm MCP servers in .cache/npm are missing (run scripts/setup.sh)")
    server = ServerProcess([node, "--require", str(LOOPBACK), str(EVERYTHING_JS), "streamableHttp"])
    server.start()
    yield server
    server.stop()
