"""Rollout servers as Ray actors (``rollout.backend: ray``) on a real local Ray cluster (2 CPUs, dashboard off):
the actor samples exactly what the in-process server samples, and an actor whose process is killed is restarted by
Ray from the newest published weights while the driver rebinds to it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agentscope.agents import ReActAgent
from agentscope.exceptions import ModelError
from agentscope.message import Msg
from agentscope.rl import Turn, load_config
from agentscope.rl._components import build_rollout_service
from agentscope.rl._rollout_ray import RayRolloutServer
from agentscope.rl.rollout import RolloutChatModel, RolloutServer, WeightPublisher

ray = pytest.importorskip("ray", reason="the Ray backend needs the scale extra: pip install -e '.[scale]'")

pytestmark = [
    pytest.mark.usefixtures("allow_model_requests"),
    pytest.mark.timeout(300),
    pytest.mark.slow,
    pytest.mark.integration,
]

OVERRIDES = ["seed=11", "rollout.max_batch=4", "rollout.max_seq_len=1024", "rollout.max_tokens=32"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster for the module (~2 s and ~0.6 GB to start)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


async def play(server: RolloutServer, helpers: Any, episodes: int) -> list[list[Turn]]:
    out: list[list[Turn]] = []
    for i in range(episodes):
        sid = server.open_session(f"episode-{i}")
        agent = ReActAgent(
            "solver", helpers.SYSTEM, RolloutChatModel(server, sid), toolkit=helpers.toolkit(), max_iters=2
        )
        await agent(Msg(role="user", content=helpers.QUESTION))
        out.append(server.close_session(sid))
    return out


def ray_server(model_dir: Path, tmp_path: Path, tokenizer: Any) -> RayRolloutServer:
    return RayRolloutServer(
        load_config(None, OVERRIDES),
        model_dir,
        index=0,
        version=0,
        publisher=WeightPublisher(tmp_path / "weights"),
        tokenizer=tokenizer,
    )


@pytest.mark.usefixtures("local_ray")
async def test_a_ray_actor_samples_exactly_what_the_in_process_server_samples(
    memorized_dir: Path, tokenizer: Any, helpers: Any, tmp_path: Path
) -> None:
    async with build_rollout_service(load_config(None, OVERRIDES), memorized_dir, tokenizer, 0) as local:
        expected = await play(local, helpers, 3)
    async with ray_server(memorized_dir, tmp_path, tokenizer) as remote:
        pid = await remote.actor.pid.remote()
        assert pid != os.getpid()
        got = await play(remote, helpers, 3)
    assert [[t.completion_ids for t in e] for e in got] == [[t.completion_ids for t in e] for e in expected]
    assert [[t.prompt_ids for t in e] for e in got] == [[t.prompt_ids for t in e] for e in expected]
    for mine, theirs in zip(got, expected, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


@pytest.mark.usefixtures("local_ray")
async def test_a_killed_actor_is_restarted_by_ray_with_the_newest_weights(
    memorized_dir: Path, policy_dir: Path, tokenizer: Any, helpers: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    def weights() -> dict[str, Any]:
        return dict(AutoModelForCausalLM.from_pretrained(policy_dir).state_dict())

    state_dict = await anyio.to_thread.run_sync(weights)
    async with ray_server(memorized_dir, tmp_path, tokenizer) as server:
        await server.update_weights(state_dict, 1)
        first_url = server.base_url
        os.kill(await server.actor.pid.remote(), signal.SIGKILL)
        sid = server.open_session("in-flight")
        with pytest.raises(
            ModelError
        ):  # the episode on the dead actor fails (the cluster marks it failed_infra)
            await server.chat(sid, [Msg(role="user", content="hi")])
        server.close_session(sid)
        await server.update_weights(state_dict, 2)  # while it is down: left to the restart, not an error
        with anyio.fail_after(180):
            await server.wait_recovered()
        assert server.base_url != first_url
        assert server.restarts == 1
        assert server.version == 2
        turns = (await play(server, helpers, 1))[0]
        assert {t.version_head for t in turns} == {2}
