"""The guards of tests/conftest.py work: model requests are blocked, and blocking calls made by agentscope
code on the event loop fail the test, while the same calls in test code, in worker threads or outside a loop
do not."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from blockbuster import BlockBuster, BlockingError

import agentscope
import agentscope.models
from agentscope.exceptions import ModelRequestsBlockedError
from agentscope.models import check_model_requests_allowed

AGENTSCOPE_DIR = Path(agentscope.__file__).parent

PROBE_SOURCE = """
import time
from pathlib import Path

import anyio


def sleep_briefly() -> None:
    time.sleep(0.001)


async def sleep_on_the_loop() -> None:
    time.sleep(0.001)


async def read_on_the_loop(path: Path) -> str:
    with open(path) as f:
        return f.read()


async def sleep_in_a_worker_thread() -> None:
    await anyio.to_thread.run_sync(sleep_briefly)


async def await_callback(callback) -> None:
    await callback()
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    """Functions whose code lives, as BlockBuster sees it, in the agentscope package (a frame counts as
    ours when its code's filename is under agentscope/). Compiled, never written: the package is untouched."""
    namespace: dict[str, Any] = {"__name__": "agentscope._blockbuster_probe"}
    code = compile(textwrap.dedent(PROBE_SOURCE), str(AGENTSCOPE_DIR / "_blockbuster_probe.py"), "exec")
    exec(code, namespace)
    return namespace


def test_model_requests_are_blocked_in_tests() -> None:
    assert agentscope.models.ALLOW_MODEL_REQUESTS is False
    with pytest.raises(ModelRequestsBlockedError, match="allow_model_requests"):
        check_model_requests_allowed()


@pytest.mark.usefixtures("allow_model_requests")
def test_allow_model_requests_fixture_opts_in() -> None:
    assert agentscope.models.ALLOW_MODEL_REQUESTS is True
    check_model_requests_allowed()


def test_blockbuster_is_active(blockbuster: BlockBuster) -> None:
    assert blockbuster.functions["time.sleep"].activated
    assert blockbuster.functions["io.BufferedReader.read"].activated


async def test_agentscope_sleep_on_the_loop_fails(probe: dict[str, Any]) -> None:
    with pytest.raises(BlockingError, match=r"time\.sleep"):
        await probe["sleep_on_the_loop"]()


async def test_agentscope_file_read_on_the_loop_fails(probe: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("hello")
    with pytest.raises(BlockingError, match="read"):
        await probe["read_on_the_loop"](path)


async def test_test_code_called_by_agentscope_is_checked(probe: dict[str, Any]) -> None:
    """A blocking callback (a tool written in a test, say) awaited by agentscope code blocks its loop."""

    async def blocking_callback() -> None:
        time.sleep(0.001)  # noqa: ASYNC251 (the point of the test)

    with pytest.raises(BlockingError):
        await probe["await_callback"](blocking_callback)


async def test_worker_thread_is_the_fix(probe: dict[str, Any]) -> None:
    await probe["sleep_in_a_worker_thread"]()


async def test_test_code_may_block() -> None:
    """Only agentscope frames are scanned: test code alone may block the loop."""
    time.sleep(0.001)  # noqa: ASYNC251 (the point of the test)
    await anyio.lowlevel.checkpoint()


def test_sync_code_outside_a_loop_may_block(probe: dict[str, Any]) -> None:
    sleep_briefly: Callable[[], None] = probe["sleep_briefly"]
    sleep_briefly()


async def test_exemption_through_the_fixture(probe: dict[str, Any], blockbuster: BlockBuster) -> None:
    """How an exemption works (BLOCKING_EXEMPTIONS in the conftest makes the same call): the named
    function of the named file may make that one blocking call; nothing else changes."""
    blockbuster.functions["time.sleep"].can_block_in("agentscope/_blockbuster_probe.py", "sleep_on_the_loop")
    await probe["sleep_on_the_loop"]()
    with pytest.raises(BlockingError):
        await probe["read_on_the_loop"](Path(__file__))
