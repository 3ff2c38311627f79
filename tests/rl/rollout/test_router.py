"""RolloutRouter: sessions stay on their server, new ones go to the newest weights without starving a server, and
agents on real engines behind it play and record episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentscope.agents import ReActAgent
from agentscope.exceptions import SessionError
from agentscope.message import Msg
from agentscope.rl.rollout import RolloutChatModel, RolloutRouter, RolloutService, TorchEngine

QUESTION = [Msg(role="user", content="hi")]


def scripted_router(tokenizer: Any, helpers: Any, servers: int = 2, **kwargs: Any) -> RolloutRouter:
    return RolloutRouter(
        [RolloutService(helpers.ScriptedEngine(tokenizer, ["ok"] * 50), tokenizer) for _ in range(servers)],
        **kwargs,
    )


async def test_a_session_stays_on_the_server_it_opened_on(tokenizer: Any, helpers: Any) -> None:
    router = scripted_router(tokenizer, helpers)
    sessions = [router.open_session() for _ in range(4)]
    placed = [router.server_of(s) for s in sessions]
    assert sorted(placed) == [0, 0, 1, 1]  # least loaded first
    for sid, index in zip(sessions, placed, strict=True):
        for _ in range(2):
            response = await router.chat(sid, QUESTION)
            assert response.metadata["server"] == index
            assert response.metadata["session_id"] == sid
        assert router.servers[index].session_turns(sid) == router.session_turns(sid)
    turns = router.close_session(sessions[0])
    assert len(turns) == 2
    assert sessions[0] not in router.servers[placed[0]].sessions
    with pytest.raises(SessionError, match="no rollout session"):
        await router.chat(sessions[0], QUESTION)
    assert router.open_session(sessions[1]) == sessions[1]  # reopening an open id is a no-op
    assert router.server_of(sessions[1]) == placed[1]


async def test_new_sessions_prefer_the_newest_weights_but_never_starve_a_server(
    tokenizer: Any, helpers: Any
) -> None:
    router = scripted_router(tokenizer, helpers, max_imbalance=2)
    await router.servers[1].update_weights({}, 1)  # server 1 went first in a rolling sync
    placed = [router.server_of(router.open_session()) for _ in range(4)]
    # server 1 (newest) takes sessions until it holds max_imbalance more than server 0; then server 0 takes one
    assert placed == [1, 1, 1, 0]
    stats = router.stats()
    assert stats["rollout/version_spread"] == 1
    assert stats["rollout/policy_version"] == 0  # the oldest weights still serving
    assert stats["rollout/sessions_on_newest_fraction"] == 0.75
    await router.servers[0].update_weights({}, 1)
    assert router.server_of(router.open_session()) == 0  # same version again: the least loaded
    assert router.stats()["rollout/version_spread"] == 0


class DownService(RolloutService):
    """A server known to be down (its process died and is being replaced)."""

    up = True

    @property
    def available(self) -> bool:
        return self.up


async def test_new_sessions_avoid_a_server_that_is_down(tokenizer: Any, helpers: Any) -> None:
    servers = [DownService(helpers.ScriptedEngine(tokenizer, ["ok"] * 9), tokenizer) for _ in range(2)]
    router = RolloutRouter(servers)
    servers[0].up = False
    assert [router.server_of(router.open_session()) for _ in range(3)] == [1, 1, 1]  # never the dead one
    servers[1].up = False
    assert router.server_of(router.open_session()) == 0  # none is up: the least loaded, rather than nothing
    assert not router.available
    servers[0].up = True
    assert router.available
    assert router.server_of(router.open_session()) == 0


async def test_a_call_without_a_session_goes_to_the_least_loaded_newest_server(
    tokenizer: Any, helpers: Any
) -> None:
    router = scripted_router(tokenizer, helpers)
    router.open_session()  # on server 0
    response = await router.chat(None, QUESTION)
    assert response.metadata["server"] == 1
    assert len(router.sessions) == 1  # a call without a session opens none


async def test_stats_add_up_over_servers(tokenizer: Any, helpers: Any) -> None:
    router = scripted_router(tokenizer, helpers, servers=3)
    for _ in range(3):
        sid = router.open_session()
        first = await router.chat(sid, QUESTION)
        reply = Msg(role="assistant", content=first.content)
        await router.chat(sid, [*QUESTION, reply, Msg(role="user", content="again")])
    stats = router.stats()
    each = [s.stats() for s in router.servers]
    assert stats["rollout/turns"] == 6 == sum(s["rollout/turns"] for s in each)
    assert stats["rollout/servers"] == 3
    assert [stats[f"rollout/server{i}/sessions_opened"] for i in range(3)] == [1, 1, 1]
    assert stats["rollout/session_imbalance"] == 0
    assert stats["rollout/incremental_fraction"] == 0.5  # each session's second turn extends its first
    reused = 1 - stats["rollout/new_prompt_tokens"] / stats["rollout/prompt_tokens"]
    assert stats["rollout/prompt_tokens_reused_fraction"] == pytest.approx(reused)
    assert 0 < reused < 1


def test_a_router_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        RolloutRouter([])


@pytest.mark.usefixtures("allow_model_requests")
async def test_agents_on_two_real_engines_play_and_record_their_episodes(
    memorized_dir: Path, tokenizer: Any, helpers: Any
) -> None:
    servers = [
        RolloutService(TorchEngine(memorized_dir, max_batch=4, max_seq_len=1024, seed=i), tokenizer)
        for i in range(2)
    ]
    async with RolloutRouter(servers) as router:
        sessions = [router.open_session() for _ in range(4)]
        for sid in sessions:
            model = RolloutChatModel(router, sid, settings={"temperature": 0.0})
            agent = ReActAgent("solver", helpers.SYSTEM, model, toolkit=helpers.toolkit())
            reply = await agent(Msg(role="user", content=helpers.QUESTION))
            assert reply.text == "The answer is 42."
        for sid in sessions:
            turns = router.close_session(sid)
            assert len(turns) == 2
            assert turns[1].prompt_ids[: len(turns[0].prompt_ids)] == turns[0].prompt_ids  # one token stream
        stats = router.stats()
        assert stats["rollout/server0/sessions_opened"] == stats["rollout/server1/sessions_opened"] == 2
        assert stats["rollout/generated_tokens"] == sum(
            s.stats()["rollout/generated_tokens"] for s in servers
        )
        assert stats["rollout/generated_tokens"] > 0
