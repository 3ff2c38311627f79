"""EnvCluster against a stand-in rollout service: per-trajectory slots, timeouts, crashes, rewards, stats."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import pytest

from agentscope.agents import AgentBase
from agentscope.exceptions import ContextLengthExceeded, ModelConnectionError
from agentscope.message import Msg, TextBlock, ToolResultBlock
from agentscope.models import ChatModel
from agentscope.rl import Task, Trajectory
from agentscope.rl.envs import (
    EnvCluster,
    Environment,
    EnvironmentCrashed,
    EnvResult,
    Observation,
    ScriptedRollout,
    react_agent_factory,
)
from agentscope.rl.tasks import ArithEnv, load_tasks
from agentscope.testing import ScriptItem, run_virtual, tool_call
from agentscope.tools import Toolkit


def solve_arith(messages: list[Msg]) -> ScriptItem:
    """A perfect policy for the arithmetic task: call the calculator on the expression, then answer."""
    last = messages[-1]
    results = last.blocks_of(ToolResultBlock)
    if results:
        output = results[0].output
        return f"The answer is {output if isinstance(output, str) else ''}."
    match = re.search(r"What is (.+)\?", messages[-1].text)
    assert match is not None
    return tool_call("calculator", expression=match.group(1))


def make_cluster(
    rollout: ScriptedRollout, env_factory: Callable[[], Environment] = ArithEnv, **kwargs: object
) -> EnvCluster:
    return EnvCluster(
        env_factory,
        react_agent_factory,
        rollout,
        model_factory=rollout.model,
        **kwargs,  # type: ignore[arg-type]
    )


async def feed(tasks: list[Task]) -> AsyncIterator[tuple[Task, str]]:
    for i, task in enumerate(tasks):
        yield task, f"g{i}"


class SlowEnv(Environment):
    """An environment whose one tool takes ``task.metadata['delay']`` seconds; counts instances and closes."""

    created = 0
    closed = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).created += 1
        self.task: Task | None = None

    async def reset(self, task: Task) -> Observation:
        self.task = task
        if task.metadata.get("reset_raises"):
            raise OSError("sandbox did not start")
        toolkit = Toolkit()
        toolkit.register(self.work)
        return Observation(msg=Msg(role="user", content=task.prompt), toolkit=toolkit)

    async def work(self) -> str:
        """Do the task's work."""
        assert self.task is not None
        delay = self.task.metadata.get("delay", 0.0)
        assert isinstance(delay, int | float)
        await anyio.sleep(delay)
        if self.task.metadata.get("crash"):
            self.fail("the sandbox died")
        reward = self.task.metadata.get("step_reward")
        if isinstance(reward, int | float):
            self.add_step_reward(reward)
        return "done"

    async def evaluate(self, reply: Msg) -> EnvResult:
        return EnvResult(reward=1.0 if "done" in reply.text else 0.0, success="done" in reply.text)

    async def close(self) -> None:
        type(self).closed += 1


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    SlowEnv.created = 0
    SlowEnv.closed = 0


def work_policy(messages: list[Msg]) -> ScriptItem:
    if messages[-1].blocks_of(ToolResultBlock):
        return "work is done"
    return tool_call("work")


def slow_task(i: int, delay: float, **metadata: object) -> Task:
    return Task(id=f"t{i}", prompt="do the work", metadata={"delay": delay, **metadata})  # type: ignore[dict-item]


# ---------------------------------------------------------------------- episodes


async def test_arith_episode_ok_with_turns_reward_and_metrics() -> None:
    rollout = ScriptedRollout(solve_arith)
    cluster = make_cluster(rollout, slots=2)
    task = load_tasks("arith:n=3,seed=1")[0]
    trajectory = await cluster.run_episode(task, "g0")
    await cluster.aclose()

    assert trajectory.status == "ok", trajectory.error
    assert trajectory.reward == 1.0
    assert trajectory.success
    assert trajectory.task_id == task.id
    assert trajectory.group_id == "g0"
    assert len(trajectory.turns) == 2  # tool call, then the answer
    assert (
        trajectory.turns[1].prompt_ids[: len(trajectory.turns[0].prompt_ids)]
        == trajectory.turns[0].prompt_ids
    )
    assert trajectory.metrics["env/steps"] == 1.0
    assert trajectory.metrics["rollout/turns"] == 2.0
    assert trajectory.metrics["env/tool_calls"] == 1.0
    assert len(rollout.closed) == 1
    assert rollout.sessions == []
    assert len(trajectory.flatten()) == 1


async def test_wrong_answer_scores_zero() -> None:
    def wrong(messages: list[Msg]) -> ScriptItem:
        if messages[-1].blocks_of(ToolResultBlock):
            return "The answer is 123456."
        return tool_call("calculator", expression="1+1")

    cluster = make_cluster(ScriptedRollout(wrong), slots=1)
    trajectory = await cluster.run_episode(load_tasks("arith:n=1")[0], "g")
    assert trajectory.status == "ok"
    assert trajectory.reward == 0.0
    assert not trajectory.success


def test_policy_version_of_first_token_is_tracked() -> None:
    rollout = ScriptedRollout(work_policy, latency_s=1.0)
    rollout.version = 3
    cluster = make_cluster(rollout, env_factory=SlowEnv, slots=1)
    seen: list[int | None] = []

    async def main() -> Trajectory:
        async def watch() -> None:
            await anyio.sleep(0.5)
            seen.extend(e.first_version for e in cluster.live())
            await anyio.sleep(1.0)
            seen.extend(e.first_version for e in cluster.live())
            rollout.version = 4

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            return await cluster.run_episode(slow_task(0, 0.0), "g")

    trajectory = run_virtual(main)
    assert seen == [None, 3]
    assert trajectory.policy_versions == [3, 4]
    assert trajectory.min_version == 3


# ---------------------------------------------------------------------- failures


async def test_step_timeout_fails_episode_and_replaces_env() -> None:
    cluster = make_cluster(ScriptedRollout(work_policy), env_factory=SlowEnv, slots=1, step_timeout_s=0.05)
    hung = await cluster.run_episode(slow_task(0, 30.0), "g")
    after = await cluster.run_episode(slow_task(1, 0.0), "g")
    await cluster.aclose()

    assert hung.status == "failed_infra"
    assert hung.error is not None
    assert "timed out after 0.05s" in hung.error
    assert hung.reward == 0.0
    assert after.status == "ok"
    assert SlowEnv.created == 2  # replaced after the hang
    assert SlowEnv.closed == 2
    assert cluster.stats()["env/restarts"] == 1.0


async def test_model_call_timeout_is_an_infra_failure() -> None:
    cluster = make_cluster(
        ScriptedRollout(work_policy, latency_s=10.0), env_factory=SlowEnv, slots=1, step_timeout_s=0.05
    )
    trajectory = await cluster.run_episode(slow_task(0, 0.0), "g")
    assert trajectory.status == "failed_infra"
    assert trajectory.error == "a model call timed out after 0.05s"


async def test_env_fail_from_a_tool_is_failed_infra() -> None:
    rollout = ScriptedRollout(work_policy)
    cluster = make_cluster(rollout, env_factory=SlowEnv, slots=1)
    trajectory = await cluster.run_episode(slow_task(0, 0.0, crash=True), "g")
    assert trajectory.status == "failed_infra"
    assert trajectory.error == "environment failed: the sandbox died"
    assert len(trajectory.turns) == 1  # stopped right after the tool: no further model call
    assert rollout.sessions == []
    assert SlowEnv.closed == 1


async def test_reset_raising_is_failed_infra() -> None:
    cluster = make_cluster(ScriptedRollout(work_policy), env_factory=SlowEnv, slots=1)
    trajectory = await cluster.run_episode(slow_task(0, 0.0, reset_raises=True), "g")
    assert trajectory.status == "failed_infra"
    assert trajectory.error == "reset raised OSError: sandbox did not start"
    assert trajectory.turns == []


async def test_episode_timeout() -> None:
    cluster = make_cluster(ScriptedRollout(work_policy), env_factory=SlowEnv, slots=1, episode_timeout_s=0.05)
    trajectory = await cluster.run_episode(slow_task(0, 30.0), "g")
    assert trajectory.status == "failed_infra"
    assert trajectory.error == "episode timed out after 0.05s"


async def test_rollout_failure_is_infra_and_agent_bug_is_failed_agent() -> None:
    def broken_service(messages: list[Msg]) -> ScriptItem:
        raise ModelConnectionError("rollout server gone")

    def buggy_agent(messages: list[Msg]) -> ScriptItem:
        raise ValueError("bug in the agent")

    infra = await make_cluster(ScriptedRollout(broken_service), env_factory=SlowEnv, slots=1).run_episode(
        slow_task(0, 0.0), "g"
    )
    agent = await make_cluster(ScriptedRollout(buggy_agent), env_factory=SlowEnv, slots=1).run_episode(
        slow_task(0, 0.0), "g"
    )
    assert infra.status == "failed_infra"
    assert infra.error == "ModelConnectionError: rollout server gone"
    assert agent.status == "failed_agent"
    assert agent.error == "ValueError: bug in the agent"
    assert SlowEnv.closed == 1  # only the infra failure replaced its environment


async def test_max_turns_truncates_and_judges_the_last_answer() -> None:
    def loops(messages: list[Msg]) -> ScriptItem:
        return [TextBlock(text="done so far"), tool_call("work")]

    rollout = ScriptedRollout(loops)
    cluster = make_cluster(rollout, env_factory=SlowEnv, slots=1, max_turns=3)
    trajectory = await cluster.run_episode(slow_task(0, 0.0), "g")
    assert trajectory.status == "truncated"
    assert len(trajectory.turns) == 3
    assert trajectory.reward == 1.0  # "done" is in the last answer
    assert trajectory.metrics["env/steps"] == 3.0


async def test_agent_max_iters_reply_is_truncated() -> None:
    def loops(messages: list[Msg]) -> ScriptItem:
        return tool_call("work")

    cluster = EnvCluster(
        SlowEnv,
        lambda model, toolkit: react_agent_factory(model, toolkit, max_iters=2),
        rollout := ScriptedRollout(loops),
        slots=1,
        model_factory=rollout.model,
    )
    trajectory = await cluster.run_episode(slow_task(0, 0.0), "g")
    assert trajectory.status == "truncated"
    assert len(trajectory.turns) == 3  # two iterations and the forced answer


async def test_step_rewards_attach_to_the_turn_that_asked() -> None:
    cluster = make_cluster(ScriptedRollout(work_policy), env_factory=SlowEnv, slots=1)
    trajectory = await cluster.run_episode(slow_task(0, 0.0, step_reward=0.25), "g")
    assert trajectory.status == "ok"
    assert trajectory.reward == 1.25
    assert [t.reward for t in trajectory.turns] == [0.25, 1.0]
    sample = trajectory.flatten()[0]
    assert sample.token_rewards is not None
    assert sum(sample.token_rewards) == 1.25


def test_environment_hands_step_rewards_and_failure_to_its_runner() -> None:
    """The runner's side of Environment: take_step_rewards drains what tools added, begin_episode starts clean."""
    env = SlowEnv()
    env.add_step_reward(0.5)
    env.add_step_reward(1)
    assert env.take_step_rewards() == [0.5, 1.0]
    assert env.take_step_rewards() == []
    env.add_step_reward(2.0)
    with pytest.raises(EnvironmentCrashed, match="the sandbox died"):
        env.fail("the sandbox died")
    assert env.failure == "the sandbox died"
    env.begin_episode()  # a reused environment forgets the last episode's leftovers
    assert env.failure is None
    assert env.take_step_rewards() == []


async def test_custom_agent_factory_and_async_env_factory() -> None:
    class Echo(AgentBase):
        async def reply(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: object) -> Msg:
            return Msg(role="assistant", content="done")

    async def env_factory() -> Environment:
        return SlowEnv()

    async def agent_factory(model: ChatModel, toolkit: Toolkit) -> AgentBase:
        return Echo("echo")

    rollout = ScriptedRollout(work_policy)
    cluster = EnvCluster(env_factory, agent_factory, rollout, slots=1, model_factory=rollout.model)
    trajectory = await cluster.run_episode(slow_task(0, 0.0), "g")
    assert trajectory.status == "ok"
    assert trajectory.reward == 1.0
    assert trajectory.turns == []


# ---------------------------------------------------------------------- scheduling (virtual time)


def test_finished_slot_is_refilled_at_once_and_stats_are_exact() -> None:
    """2 slots; one 100 s episode and four 10 s ones: the short ones run beside the long one, one after another."""
    tasks = [slow_task(0, 100.0)] + [slow_task(i, 10.0) for i in range(1, 5)]
    finished: list[tuple[str, float]] = []

    async def main() -> dict[str, float]:
        cluster = make_cluster(ScriptedRollout(work_policy), env_factory=SlowEnv, slots=2)

        async def sink(trajectory: Trajectory) -> None:
            finished.append((trajectory.task_id, anyio.current_time()))

        await cluster.run(feed(tasks), sink)
        stats = cluster.stats()
        await cluster.aclose()
        return stats

    stats = run_virtual(main)
    assert finished == [("t1", 10.0), ("t2", 20.0), ("t3", 30.0), ("t4", 40.0), ("t0", 100.0)]
    # occupied: 100 s on slot 1 + 40 s on slot 2, out of 2 x 100 s; busy = the tool calls = the same here
    assert stats["env/slot_occupancy"] == pytest.approx(140 / 200)
    assert stats["env/utilisation"] == pytest.approx(140 / 200)
    assert stats["env/episodes"] == 5
    assert stats["env/episodes_ok"] == 5
    assert SlowEnv.created == 2  # one environment per slot, reused


def test_utilisation_counts_only_env_time() -> None:
    """Model calls of 1 s and one tool call of 3 s: the slot is occupied 5 s, the env busy 3 s."""

    async def main() -> dict[str, float]:
        cluster = make_cluster(ScriptedRollout(work_policy, latency_s=1.0), env_factory=SlowEnv, slots=1)

        async def sink(trajectory: Trajectory) -> None:
            assert trajectory.metrics["env/episode_s"] == 5.0
            assert trajectory.metrics["env/busy_s"] == 3.0

        await cluster.run(feed([slow_task(0, 3.0)]), sink)
        return cluster.stats()

    stats = run_virtual(main)
    assert stats["env/slot_occupancy"] == pytest.approx(1.0)
    assert stats["env/utilisation"] == pytest.approx(3 / 5)


def test_abort_stops_episodes_and_frees_their_slots() -> None:
    statuses: dict[str, str] = {}

    async def main() -> None:
        cluster = make_cluster(ScriptedRollout(work_policy), env_factory=SlowEnv, slots=2)

        async def sink(trajectory: Trajectory) -> None:
            statuses[trajectory.task_id] = trajectory.status

        async def aborter() -> None:
            await anyio.sleep(5)
            assert cluster.abort(lambda e: e.task.id == "t0") == 1
            assert cluster.abort(lambda e: e.task.id == "t0") == 0  # already stopping

        async with anyio.create_task_group() as tg:
            tg.start_soon(aborter)
            await cluster.run(feed([slow_task(0, 100.0), slow_task(1, 10.0), slow_task(2, 1.0)]), sink)
        assert anyio.current_time() == 10.0  # t2 took the aborted episode's slot at t=5 and finished at t=6

    run_virtual(main)
    assert statuses == {"t0": "aborted", "t1": "ok", "t2": "ok"}


def test_cancelling_run_closes_sessions_and_environments() -> None:
    rollout = ScriptedRollout(work_policy)

    async def main() -> None:
        cluster = make_cluster(rollout, env_factory=SlowEnv, slots=3)

        async def sink(trajectory: Trajectory) -> None:
            raise AssertionError("nothing finishes")

        with anyio.move_on_after(5):
            await cluster.run(feed([slow_task(i, 100.0) for i in range(3)]), sink)
        await cluster.aclose()

    run_virtual(main)
    assert len(rollout.closed) == 3
    assert rollout.sessions == []
    assert SlowEnv.created == 3
    assert SlowEnv.closed == 3


def test_cluster_validates_arguments() -> None:
    rollout = ScriptedRollout(work_policy)
    with pytest.raises(ValueError, match="slots"):
        make_cluster(rollout, slots=0)
    with pytest.raises(ValueError, match="step_timeout_s"):
        make_cluster(rollout, slots=1, step_timeout_s=0)
    with pytest.raises(ValueError, match="max_turns"):
        make_cluster(rollout, slots=1, max_turns=0)


async def test_episode_is_a_traced_span_with_the_agent_inside() -> None:
    from agentscope import tracing

    exporter = tracing.InMemoryExporter()
    tracing.init(None, exporters=[exporter])
    try:
        cluster = make_cluster(ScriptedRollout(solve_arith), slots=1)
        trajectory = await cluster.run_episode(load_tasks("arith:n=1")[0], "g7")
        await tracing.aflush()
    finally:
        await anyio.to_thread.run_sync(tracing.shutdown)
    assert trajectory.trace_id is not None
    spans = [s for s in exporter.spans if s.trace_id == trajectory.trace_id]
    episode = next(s for s in spans if s.name.startswith("episode "))
    assert episode.kind == "env"
    assert episode.attributes["agentscope.rl.group_id"] == "g7"
    assert episode.attributes["agentscope.rl.status"] == "ok"
    assert episode.attributes["agentscope.rl.reward"] == 1.0
    kinds = {s.kind for s in spans}
    assert {"agent", "model", "tool"} <= kinds  # the agent's work is inside the episode's trace


async def test_a_conversation_that_outgrows_the_context_is_truncated_and_judged_not_an_infra_failure() -> (
    None
):
    calls = 0

    def outgrows(messages: list[Msg]) -> ScriptItem:
        nonlocal calls
        calls += 1
        if calls == 3:  # the third prompt no longer fits the policy's context window
            raise ContextLengthExceeded("prompt of 4126 tokens leaves no room to generate (max_seq_len=4096)")
        return [TextBlock(text="done so far"), tool_call("work")]

    cluster = make_cluster(ScriptedRollout(outgrows), env_factory=SlowEnv, slots=1, max_turns=10)
    trajectory = await cluster.run_episode(slow_task(0, 0.0), "g")
    # out of room, as at max_turns: a policy that rambles earns its reward
    assert trajectory.status == "truncated"
    assert trajectory.error is not None
    assert "leaves no room to generate" in trajectory.error
    assert trajectory.metrics["env/context_exceeded"] == 1.0
    assert len(trajectory.turns) == 2
    assert trajectory.reward == 1.0  # the last answer the policy gave is judged ("done" is in it)
    assert SlowEnv.closed == 0  # the environment is fine: it is not replaced
    assert cluster.stats()["env/restarts"] == 0.0


async def test_a_first_prompt_that_does_not_fit_the_context_is_failed_infra_not_a_silent_zero() -> None:
    def never_fits(messages: list[Msg]) -> ScriptItem:
        raise ContextLengthExceeded("prompt of 900 tokens leaves no room to generate (max_seq_len=512)")

    cluster = make_cluster(ScriptedRollout(never_fits), env_factory=SlowEnv, slots=1)
    trajectory = await cluster.run_episode(slow_task(0, 0.0), "g")
    assert trajectory.status == "failed_infra"  # nothing was played: no answer to judge, nothing to train
    assert trajectory.error is not None
    assert "first prompt" in trajectory.error
