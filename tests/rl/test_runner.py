"""The runner in-process (BlockBuster watching the loop): a short training run, resume, export and eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentscope.exceptions import ConfigError, UsageError
from agentscope.rl import Trajectory, Turn
from agentscope.rl._config import load_config
from agentscope.rl._runner import (
    EXPORT_KEYS,
    evaluate,
    export_record,
    export_trajectories,
    import_object,
    train,
)
from agentscope.rl._sft import record_demonstrations
from agentscope.rl.envs import ArithEnv, get_task_set, load_tasks, react_agent_factory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = [
    "policy.tiny.vocab_size=512",
    "policy.tiny.hidden_size=32",
    "policy.tiny.intermediate_size=64",
    "policy.tiny.num_layers=1",
    "policy.tiny.num_heads=2",
    "policy.tiny.num_kv_heads=1",
    "policy.tiny.max_position_embeddings=512",
    "policy.tiny.corpus_conversations=100",
    "rollout.max_seq_len=512",
    "rollout.max_tokens=16",
    "tasks=arith:n=8,seed=0,max_operand=9",
    "env.slots=4",
    "env.max_turns=2",
    "agent.kwargs.max_iters=1",
    "data.group_size=2",
    "data.batch_groups=1",
    "data.drop_zero_variance=false",
    "data.success_replay=false",
    "schedule.steps=2",
    "threads=1",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runner") / "run"


async def test_train_in_process_then_resume(run: Path) -> None:
    config = load_config(None, TINY)
    result = await train(config, run)
    assert result.steps == 2
    assert result.resumed_from is None
    assert "train/policy_loss" in result.metrics
    assert (run / "checkpoints" / "latest" / "model.safetensors").is_file()
    assert result.initial_policy == run / "policy_init"
    assert (result.initial_policy / "config.json").is_file()

    with pytest.raises(UsageError, match="already holds a run"):
        await train(config, run)

    more = load_config(None, [*TINY, "schedule.steps=3", "schedule.mode=sync"])
    resumed = await train(more, run, resume=True)
    assert resumed.resumed_from == 2
    assert resumed.steps == 3
    assert resumed.initial_policy is None
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


async def test_export_and_eval(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    count = await export_trajectories(run, out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == count > 0
    assert all(set(EXPORT_KEYS) <= set(r) for r in records)
    with pytest.raises(UsageError, match="no trajectory store"):
        await export_trajectories(tmp_path, out)

    config = load_config(None, TINY)
    report = await evaluate(config, run, "arith:n=3,seed=1,max_operand=9", temperature=0.0)
    assert report["episodes"] == 3
    assert report["checkpoint"].endswith("latest")
    assert sum(report["statuses"].values()) == 3


def test_export_record_of_a_rewritten_history() -> None:
    turns = [
        Turn(prompt_ids=[1, 2], completion_ids=[3], logprobs=[-0.1], version_head=0, version_tail=0),
        Turn(prompt_ids=[9, 9], completion_ids=[4, 5], logprobs=[-0.2, -0.3], version_head=1, version_tail=1),
    ]
    trajectory = Trajectory(task_id="t", group_id="g", turns=turns, reward=1.0, status="ok")
    record = export_record(trajectory, 3)
    assert record["prompt_ids"] == [1, 2]
    assert record["response_ids"] == [3]
    assert record["trained_at_step"] == 3
    assert record["policy_versions"] == [0, 1]
    assert [s["prompt_ids"] for s in record["more_samples"]] == [[9, 9]]
    empty = export_record(Trajectory(task_id="t", group_id="g", status="failed_infra"), None)
    assert empty["response_ids"] == []
    assert empty["status"] == "failed_infra"


def test_import_object_names_the_field() -> None:
    assert (
        import_object("agentscope.rl.envs:react_agent_factory", "agent.factory").__name__
        == "react_agent_factory"
    )
    with pytest.raises(ConfigError, match=r"agent\.factory: expected MODULE:ATTRIBUTE"):
        import_object("nothing", "agent.factory")
    with pytest.raises(ConfigError, match=r"env\.factory: cannot import 'no_such_module_xyz'"):
        import_object("no_such_module_xyz:f", "env.factory")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        import_object("agentscope.rl.envs:nope", "env.factory")


def test_the_warm_start_imitates_the_warm_split_of_the_training_set() -> None:
    config = load_config(None, ["sft.steps=10", "sft.demonstrations=24", "tasks=arith:n=8,seed=0,split=train"])
    assert config.warm_start_spec() == "arith:n=24,seed=0,split=warm"
    config = load_config(None, ["sft.steps=10", "tasks=arith:n=8,seed=0"])  # no split: the training tasks
    assert config.warm_start_spec() == "arith:n=8,seed=0"
    assert load_config(None, ["tasks=arith:n=8,split=train"]).warm_start_spec() is None  # sft.steps=0: none


async def test_demonstrations_are_the_expert_playing_through_the_real_environment_and_agent() -> None:
    tasks = load_tasks("arith:n=12,seed=3,split=warm")
    demos, played = await record_demonstrations(
        get_task_set("arith"), tasks, ArithEnv, react_agent_factory, budget=5, slots=3
    )
    assert len(demos) == 5
    assert 5 <= played <= 5 + 3  # a slot may finish the episode it had begun
    for demo, task in zip(demos, tasks, strict=False):  # the first tasks, in order
        roles = [m.role for m in demo.messages]
        assert roles == ["system", "user", "assistant", "tool", "assistant"]
        assert demo.messages[1].text == task.prompt
        assert demo.messages[-1].text == f"The answer is {task.answer}."
        assert [t.name for t in demo.tools] == ["calculator"]
