"""RolloutService: token-in/token-out sessions driven by a real ReActAgent with tools."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from agentscope.agents import ReActAgent
from agentscope.exceptions import SessionError
from agentscope.message import Msg, TextBlock, ToolUseBlock
from agentscope.rl import Trajectory, Turn
from agentscope.rl.policy import ChatFormat, ChatTokenizer
from agentscope.rl.rollout import RolloutChatModel, RolloutService, SamplingParams, TorchEngine

CALL_1 = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 + 25"}}\n</tool_call>'
CALL_2 = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "42 - 2"}}\n</tool_call>'


def assert_extends(turns: list[Turn]) -> None:
    """Turn t+1's prompt begins with exactly turn t's prompt + completion ids."""
    for before, after in itertools.pairwise(turns):
        context = before.prompt_ids + before.completion_ids
        assert after.prompt_ids[: len(context)] == context


async def run_episode(
    service: RolloutService, helpers: Any, **settings: Any
) -> tuple[Msg, list[Turn], ReActAgent]:
    sid = service.open_session()
    agent = ReActAgent(
        "solver",
        helpers.SYSTEM,
        RolloutChatModel(service, sid, settings=settings or None),
        toolkit=helpers.toolkit(),
    )
    reply = await agent(Msg(role="user", content=helpers.QUESTION))
    return reply, service.close_session(sid), agent


async def test_a_react_episode_is_recorded_token_in_token_out(tokenizer: Any, helpers: Any) -> None:
    engine = helpers.ScriptedEngine(tokenizer, [CALL_1, "Let me check.\n" + CALL_2, "The answer is 42."])
    service = RolloutService(engine, tokenizer)
    reply, turns, agent = await run_episode(service, helpers)

    assert reply.text == "The answer is 42."
    assert len(turns) == 3
    assert [t.finish_reason for t in turns] == ["tool_calls", "tool_calls", "stop"]
    assert_extends(turns)
    assert [t.prompt_ids for t in turns] == engine.prompts
    # the tool results were appended as observation tokens, never re-tokenizing the history
    chat = ChatTokenizer(tokenizer)
    observation = turns[1].prompt_ids[len(turns[0].prompt_ids) + len(turns[0].completion_ids) :]
    assert (
        tokenizer.decode(observation)
        == "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    # these completions are canonical, so encoding the whole conversation afresh gives the same ids
    history = [Msg(role="system", content=helpers.SYSTEM), *(await agent.memory.get())]
    fresh, _ = chat.encode_conversation(history[:-1], agent.toolkit.schemas())
    assert fresh + chat.generation_prompt_ids == turns[2].prompt_ids
    # one verl sample: generated tokens masked 1, tool/environment tokens 0
    trajectory = Trajectory(task_id="t", group_id="g", turns=turns)
    (sample,) = trajectory.flatten()
    assert sample.prompt_ids == turns[0].prompt_ids
    generated = [tok for tok, m in zip(sample.response_ids, sample.response_mask, strict=True) if m]
    assert generated == [tok for t in turns for tok in t.completion_ids]
    assert service.stats()["rollout/incremental_fraction"] == pytest.approx(2 / 3)
    # a context budget counts exactly the ids the policy reads: the model counts with the policy's tokenizer
    model = RolloutChatModel(service, None)
    assert model.count_tokens(history[:-1], agent.toolkit.schemas()) == len(turns[2].prompt_ids)


async def test_generated_ids_are_kept_even_when_they_are_not_canonical(tokenizer: Any, helpers: Any) -> None:
    odd = "  Sure,   I will  compute it.\n\n" + CALL_1 + "\n"  # extra spaces the parser strips
    engine = helpers.ScriptedEngine(tokenizer, [odd, "42"])
    service = RolloutService(engine, tokenizer)
    reply, turns, _ = await run_episode(service, helpers)
    assert reply.text == "42"
    assert_extends(turns)
    canonical = ChatTokenizer(tokenizer).assistant_completion_ids(
        Msg(
            role="assistant",
            content=[
                TextBlock(text="Sure,   I will  compute it."),
                ToolUseBlock(id="x", name="calculator", input={"expression": "17 + 25"}),
            ],
        )
    )
    assert turns[0].completion_ids != canonical  # re-tokenizing would have changed what the policy generated


async def test_a_rewritten_history_starts_over_and_flattens_into_two_samples(
    tokenizer: Any, helpers: Any
) -> None:
    engine = helpers.ScriptedEngine(tokenizer, ["first", "second"])
    service = RolloutService(engine, tokenizer)
    sid = service.open_session("episode-1")
    assert sid == "episode-1"
    one = await service.chat(sid, [Msg(role="user", content="hello")])
    assert one.metadata["incremental"] is False
    two = await service.chat(sid, [Msg(role="user", content="a different start")])
    assert two.metadata["incremental"] is False
    turns = service.close_session(sid)
    assert len(Trajectory(task_id="t", group_id="g", turns=turns).flatten()) == 2
    with pytest.raises(SessionError):
        service.close_session(sid)
    with pytest.raises(SessionError):
        await service.chat("never-opened", [Msg(role="user", content="x")])


async def test_response_fields_settings_and_versions(tokenizer: Any, helpers: Any) -> None:
    engine = helpers.ScriptedEngine(tokenizer, ["abc STOP def", "unrecorded"])
    service = RolloutService(engine, tokenizer, default_params=SamplingParams(max_tokens=99, temperature=0.5))
    await service.update_weights({}, version=7)
    assert service.version == 7
    sid = service.open_session()
    response = await service.chat(
        sid,
        [Msg(role="user", content="go")],
        settings={"temperature": 0.9, "top_p": 0.8, "stop": ["STOP"], "seed": 3},
    )
    assert response.text == "abc"
    params = engine.params[0]
    assert (params.max_tokens, params.temperature, params.top_p, params.stop, params.seed) == (
        99,
        0.9,
        0.8,
        ["STOP"],
        3,
    )
    assert params.stop_token_ids == ChatTokenizer(tokenizer).stop_token_ids
    assert response.policy_version == 7
    assert response.metadata["version_head"] == 7
    assert response.prompt_token_ids == engine.prompts[0]
    assert response.completion_token_ids is not None
    assert response.logprobs == [-0.5] * len(response.completion_token_ids)
    assert response.usage is not None
    assert response.usage.output_tokens == len(response.completion_token_ids)
    # without a session nothing is recorded
    await service.chat(None, [Msg(role="user", content="eval")])
    assert len(service.close_session(sid)) == 1
    assert service.sessions == []


async def test_the_memorised_policy_plays_a_react_episode_on_the_torch_engine(
    memorized_dir: Path, tokenizer: Any, helpers: Any
) -> None:
    async with RolloutService(
        TorchEngine(memorized_dir, max_batch=4, max_seq_len=1024),
        tokenizer,
        ChatFormat.for_tokenizer(tokenizer),
    ) as service:
        reply, turns, _ = await run_episode(service, helpers, temperature=0.0)
        assert reply.text == "The answer is 42."
        assert len(turns) == 2
        assert turns[0].finish_reason == "tool_calls"
        assert_extends(turns)
        for turn in turns:
            assert len(turn.logprobs) == len(turn.completion_ids)
            assert turn.completion_ids[-1] == ChatTokenizer(tokenizer).im_end_id
            assert (turn.version_head, turn.version_tail) == (0, 0)
        stats = service.stats()
        assert stats["rollout/incremental_fraction"] == 0.5
        assert 0 < stats["rollout/prompt_tokens_reused_fraction"] < 1
