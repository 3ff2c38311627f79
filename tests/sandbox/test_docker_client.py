"""The Docker client when no engine answers: a clear SandboxError, and no socket left open behind it."""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox._docker import close_docker_client, docker_client

pytest.importorskip("docker")


@pytest.fixture
def dead_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DOCKER_HOST pointing at the socket file of an engine that died: the file is there, nothing listens."""
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    close_docker_client()
    yield str(path)
    close_docker_client()


def test_a_dead_engine_is_a_clear_error_and_leaks_no_socket(dead_engine: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(SandboxError, match="no Docker engine answers"):
            docker_client()
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]
