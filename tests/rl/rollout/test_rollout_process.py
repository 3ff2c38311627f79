"""Rollout servers as processes of their own (``rollout.backend: process``): a real ``agentscope rl
rollout-server`` subprocess on 127.0.0.1 samples exactly what the in-process server samples, is restarted from the
newest published weights when killed, and a server that cannot start says why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import yaml

from agentscope.agents import ReActAgent
from agentscope.exceptions import ModelConnectionError, ModelError, UsageError
from agentscope.message import Msg
from agentscope.rl import Turn, load_config
from agentscope.rl._components import build_rollout_service
from agentscope.rl._rollout_process import READY_PREFIX, ProcessRolloutServer, serve_rollout_server
from agentscope.rl.rollout import RolloutChatModel, RolloutServer, WeightPublisher

pytestmark = [pytest.mark.usefixtures("allow_model_requests"), pytest.mark.timeout(300)]

OVERRIDES = ["seed=7", "rollout.max_batch=4", "rollout.max_seq_len=1024", "rollout.max_tokens=32"]


@pytest.fixture
async def config_path(tmp_path: Path) -> Path:
    def write() -> Path:
        config = load_config(None, OVERRIDES)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        return path

    return await anyio.to_thread.run_sync(write)


async def play(server: RolloutServer, helpers: Any, episodes: int) -> list[list[Turn]]:
    """Episodes one after another (so the engine's per-request seeds come in the same order), sampled at the
    config's temperature."""
    out: list[list[Turn]] = []
    for i in range(episodes):
        sid = server.open_session(f"episode-{i}")
        model = RolloutChatModel(server, sid)
        agent = ReActAgent("solver", helpers.SYSTEM, model, toolkit=helpers.toolkit(), max_iters=2)
        await agent(Msg(role="user", content=helpers.QUESTION))
        out.append(server.close_session(sid))
    return out


def process_server(
    config_path: Path, model_dir: Path, tmp_path: Path, tokenizer: Any
) -> ProcessRolloutServer:
    return ProcessRolloutServer(
        config_path,
        model_dir,
        index=0,
        version=0,
        publisher=WeightPublisher(tmp_path / "weights"),
        tokenizer=tokenizer,
        log_path=tmp_path / "logs" / "server.log",
    )


async def test_a_server_process_samples_exactly_what_the_in_process_server_samples(
    config_path: Path, memorized_dir: Path, tokenizer: Any, helpers: Any, tmp_path: Path
) -> None:
    config = load_config(None, OVERRIDES)
    async with build_rollout_service(config, memorized_dir, tokenizer, 0) as local:
        expected = await play(local, helpers, 3)
    async with process_server(config_path, memorized_dir, tmp_path, tokenizer) as remote:
        assert remote.pid is not None
        assert remote.pid != os.getpid()
        got = await play(remote, helpers, 3)
        assert remote.count_tokens([Msg(role="user", content="hi")]) > 0
    assert [len(turns) for turns in got] == [len(turns) for turns in expected]
    assert sum(len(turns) for turns in got) >= 3
    for mine, theirs in zip(got, expected, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert a.prompt_ids == b.prompt_ids
            assert a.completion_ids == b.completion_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
            assert (a.version_head, a.version_tail, a.finish_reason) == (
                b.version_head,
                b.version_tail,
                b.finish_reason,
            )


async def test_a_killed_server_process_comes_back_with_the_newest_weights(
    config_path: Path, memorized_dir: Path, policy_dir: Path, tokenizer: Any, helpers: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    def weights() -> dict[str, Any]:
        return dict(AutoModelForCausalLM.from_pretrained(policy_dir).state_dict())

    state_dict = await anyio.to_thread.run_sync(weights)
    hello = [Msg(role="user", content="hi")]
    async with process_server(config_path, memorized_dir, tmp_path, tokenizer) as server:
        await server.update_weights(state_dict, 1)
        between_calls = server.open_session("between-calls")
        await server.chat(between_calls, hello)  # a turn recorded on the server about to die
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        sid = server.open_session("in-flight")
        with pytest.raises(ModelError):  # the episode fails (the cluster marks it failed_infra)
            await server.chat(sid, hello)
        server.close_session(sid)
        assert not server.available  # a router sends new episodes elsewhere meanwhile
        await server.update_weights(state_dict, 2)  # while it is down: left to the restart, not an error
        with anyio.fail_after(120):
            while server.pid == first or server.version < 2:  # noqa: ASYNC110 - another process restarts it
                await anyio.sleep(0.2)
        assert server.available
        assert server.restarts == 1
        assert server.stats()["rollout/server_restarts"] == 1
        # the episode that began on the dead server does not go on on its replacement, which never saw it
        with pytest.raises(ModelError, match="404"):
            await server.chat(between_calls, hello)
        assert len(server.close_session(between_calls)) == 1
        turns = (await play(server, helpers, 1))[0]
        assert {t.version_head for t in turns} == {2}  # it serves the newest version


async def test_a_server_that_cannot_start_says_so_and_where_its_log_is(
    config_path: Path, tokenizer: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(
        ModelConnectionError, match=r"rollout server 0 exited before it served; its log: .*server\.log"
    ):
        async with process_server(config_path, missing, tmp_path, tokenizer):
            pass
    log = await anyio.to_thread.run_sync((tmp_path / "logs" / "server.log").read_text)
    assert "no-such-model" in log


async def test_a_server_process_exits_when_the_process_that_started_it_dies(
    config_path: Path, memorized_dir: Path
) -> None:
    """The server watches a pipe on its stdin: its parent's death (even by SIGKILL) closes it, and it exits
    instead of holding a model forever."""
    command = [
        sys.executable,
        "-m",
        "agentscope.cli",
        "rl",
        "rollout-server",
        str(config_path),
        "--model",
        str(memorized_dir),
        "--exit-with-stdin",
    ]
    async with await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        with anyio.fail_after(120):
            first = await process.stdout.receive()
        assert first.startswith(READY_PREFIX.encode())
        await process.stdin.aclose()  # what the parent's death does
        with anyio.fail_after(60):
            assert await process.wait() == 0


async def test_a_server_beyond_loopback_needs_a_token(memorized_dir: Path) -> None:
    with pytest.raises(UsageError, match="give it a token"):
        await serve_rollout_server(load_config(None, OVERRIDES), memorized_dir, host="0.0.0.0")
