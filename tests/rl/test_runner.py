"""The runner in-process (BlockBuster watching the loop): a short training run, resume, export and eval; and with
``data.store: postgres`` (a real server, see conftest.py): a short run, a second run refused on the same namespace
or in a run directory holding a run (of either store), a resume that trains nothing twice, and ``rl export`` reading
the store the run's config names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentscope.exceptions import ConfigError, UsageError
from agentscope.rl import Trajectory, Turn
from agentscope.rl._components import import_object
from agentscope.rl._config import load_config
from agentscope.rl._evaluation import evaluate, evaluate_cached
from agentscope.rl._export import EXPORT_KEYS, export_record, export_trajectories
from agentscope.rl._runner import sft, train
from agentscope.rl._sft import record_demonstrations
from agentscope.rl.data import PostgresTrajectoryStore, TrajectoryStore
from agentscope.rl.envs import react_agent_factory
from agentscope.rl.tasks import ArithEnv, get_task_set, load_tasks
from agentscope.rl.trainer import CheckpointError
from agentscope.testing import TINY_RL_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = [
    *TINY_RL_OVERRIDES,
    "env.slots=4",
    "schedule.steps=2",
]

CALCULATOR = Path(__file__).resolve().parents[2] / "examples" / "calculator.py"
"""The example agent of ``agentscope run``, trained as it is."""

BEFORE_AFTER = [
    *TINY,
    "tasks=arith:n=8,seed=0,max_operand=9,split=train",
    "eval_tasks=arith:n=2,seed=1,max_operand=9,split=eval",
    "evaluation.before_after=true",
]
"""A run that evaluates on held-out tasks before and after (later overrides replace these)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runner") / "run"


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def stored(run: Path) -> dict[str, tuple[Trajectory, int | None]]:
    async with TrajectoryStore(run / "trajectories.db") as store:
        return {t.trajectory_id: (t, step) async for t, step in store.iter_all()}


async def test_train_in_process_then_resume(run: Path) -> None:
    config = load_config(None, TINY)
    result = await train(config, run)
    assert result.steps == 2
    assert result.resumed_from is None
    assert "train/policy_loss" in result.metrics
    assert (run / "checkpoints" / "latest" / "model.safetensors").is_file()
    assert result.initial_policy == run / "policy_init"
    assert result.initial_policy is not None
    assert (result.initial_policy / "config.json").is_file()

    with pytest.raises(UsageError, match="already holds a run"):
        await train(config, run)

    # The disk lost the end of step 2's weights, and the run had gone on past its last good checkpoint: policy
    # version 2 made a group that is stored, and the crash cut a log line in half.
    weights = run / "checkpoints" / "step_00000002" / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size - 100)
    [(template, _), *_] = (await stored(run)).values()
    lost = [
        template.model_copy(
            update={
                "trajectory_id": f"lost-{i}",
                "group_id": "lost-group",
                "reward": float(i),
                "turns": [
                    t.model_copy(update={"version_head": 2, "version_tail": 2}) for t in template.turns
                ],
            }
        )
        for i in range(2)
    ]
    async with TrajectoryStore(run / "trajectories.db") as store:
        await store.add_many(lost)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "train/pol')
    config_before = (run / "config.yaml").read_text()

    changed = load_config(None, [*TINY, "schedule.steps=3", "trainer.lr=3e-5"])
    with pytest.raises(
        ConfigError, match=r"in 1 field\(s\): trainer\.lr: 1e-05 -> 3e-05\. .*--allow-config-change"
    ):
        await train(changed, run, resume=True)
    assert (run / "config.yaml").read_text() == config_before  # refused: nothing touched
    assert (run / "metrics.jsonl").read_text().endswith('"train/pol')

    resumed = await train(changed, run, resume=True, allow_config_change=True)
    assert resumed.resumed_from == 1  # step 2's checkpoint was refused
    assert resumed.steps == 3
    assert resumed.initial_policy is None
    metrics = lines(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]  # each step once; the cut line is gone
    batches = lines(run / "batches.jsonl")
    assert [b["step"] for b in batches] == [1, 2, 3]
    ids = [i for b in batches for i in b["trajectory_ids"]]
    assert len(ids) == len(set(ids))  # nothing trained twice
    # Versions never repeat: the restored weights (version 1) are served above the lost version 2.
    assert [m["version"] for m in metrics] == [1, 4, 5]
    rows = await stored(run)
    assert {rows[f"lost-{i}"][0].status for i in range(2)} == {"dropped_stale"}
    # Every trajectory that version 2 had a hand in is dropped and counted: the two above, and any the first run
    # stored after step 2 and never trained (how many depends on timing: none on an idle machine, some on a busy one).
    made_by_lost_version = [t for t, _ in rows.values() if 2 in t.policy_versions]
    assert {t.status for t in made_by_lost_version} == {"dropped_stale"}
    assert metrics[-1]["data/dropped_lost_version"] == len(made_by_lost_version) >= 2
    assert all(t.min_version <= 1 or t.min_version >= 3 for t, step in rows.values() if step is not None)

    [record] = lines(run / "resumes.jsonl")
    assert record["step"] == 1
    assert record["config_changes"] == {"schedule.steps": [2, 3], "trainer.lr": [1e-05, 3e-05]}
    [(path, why)] = record["refused"].items()
    assert path.endswith("step_00000002")
    assert why.startswith("model.safetensors has")
    assert record["set_aside"] == [str(run / "checkpoints" / "refused-step_00000002")]
    assert record["log_lines_dropped"] == {"metrics.jsonl": 2, "batches.jsonl": 1}
    assert record["data"]["lost_versions"] == [2, 2]
    assert record["data"]["version"] == 3
    assert "lr: 3.0e-05" in (run / "config.yaml").read_text()


async def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    config = load_config(None, TINY)
    with pytest.raises(
        CheckpointError, match=r"holds no run to resume \(.*trajectories\.db does not exist\)"
    ):
        await train(config, tmp_path / "nothing", resume=True)
    assert not (tmp_path / "nothing").exists()
    async with TrajectoryStore(tmp_path / "early" / "trajectories.db"):
        pass  # killed before its first checkpoint
    with pytest.raises(CheckpointError, match=r"checkpoints holds no checkpoint"):
        await train(config, tmp_path / "early", resume=True)


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


async def test_held_out_success_before_and_after_is_reported_and_traced(tmp_path: Path) -> None:
    """``evaluation.before_after``: eval.json holds both reports, and the studio's held-out chart gets a point at
    the first and at the last step (``eval/success_rate`` in the run's trace store)."""
    from agentscope.tracing import TraceStore

    config = load_config(
        None,
        [
            *BEFORE_AFTER,
            "eval_tasks=arith:n=3,seed=1,max_operand=9,split=eval",
            "evaluation.temperature=0",
            "evaluation.training_tasks=2",
        ],
    )
    result = await train(config, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(report) == {"before", "after", "train_before", "train_after"}
    assert report["before"]["episodes"] == report["after"]["episodes"] == 3
    assert report["after"]["training_overlap"] == 0
    assert report["train_before"]["episodes"] == report["train_after"]["episodes"] == 2
    assert report["train_after"]["training_overlap"] == 2  # training tasks, and counted as such

    def held_out_series() -> dict[str, list[tuple[int, float]]]:
        with TraceStore(tmp_path / "run" / "traces.db") as traces:
            (run,), _ = traces.list_runs()
            return {
                name: traces.metric_series(run["id"], name)
                for name in ("eval/success_rate", "eval_train/success_rate")
            }

    series = await anyio.to_thread.run_sync(held_out_series)
    assert series["eval/success_rate"] == [
        (0, report["before"]["success_rate"]),
        (result.steps, report["after"]["success_rate"]),
    ]
    assert series["eval_train/success_rate"] == [
        (0, report["train_before"]["success_rate"]),
        (result.steps, report["train_after"]["success_rate"]),
    ]


async def test_a_failing_plot_loses_no_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reward curve is drawn last and may fail (a broken font cache, say): eval.json is written before it."""
    import agentscope.rl._plots as plots

    def broken(run_dir: Path) -> Path:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "plot_run", broken)
    config = load_config(
        None,
        [*BEFORE_AFTER, "schedule.steps=1"],
    )
    result = await train(config, tmp_path / "run")
    assert result.evaluation is not None
    assert set(result.evaluation) == {"before", "after"}
    assert set(json.loads((tmp_path / "run" / "eval.json").read_text())) == {"before", "after"}


async def test_a_failing_evaluation_after_rl_keeps_the_run_and_what_was_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentscope.rl._runner as runner

    real = runner.evaluate

    async def evaluate_or_fail(config: Any, checkpoint: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if Path(checkpoint) == tmp_path / "run":  # the trained policy: its evaluation breaks
            raise RuntimeError("browser gone")
        return await real(config, checkpoint, *args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", evaluate_or_fail)
    config = load_config(
        None,
        [*BEFORE_AFTER, "schedule.steps=1"],
    )
    result = await train(config, tmp_path / "run")
    assert result.steps == 1
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["before"]["episodes"] == 2
    assert report["after_error"] == "RuntimeError: browser gone"


async def test_more_training_tasks_to_evaluate_than_there_are_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(
        None,
        [*BEFORE_AFTER, "evaluation.training_tasks=9"],
    )
    with pytest.raises(ConfigError, match=r"evaluation.training_tasks: 9 is more than the 8 training tasks"):
        await train(config, tmp_path / "run")


async def test_a_policy_the_user_gave_is_evaluated_without_writing_into_it(run: Path) -> None:
    """``policy.path`` is the user's directory (maybe read-only, maybe shared): the cached evaluation of an initial
    policy goes only into directories we made."""
    latest = run / "checkpoints" / "latest"
    config = load_config(
        None,
        [*TINY, f"policy.path={latest}", "sft.steps=0", "eval_tasks=arith:n=2,seed=1,max_operand=9"],
    )
    before = sorted(p.name for p in latest.iterdir())
    report = await evaluate_cached(config, latest)
    assert report["episodes"] == 2
    assert sorted(p.name for p in latest.iterdir()) == before


async def test_rl_train_trains_the_calculator_example_unchanged(tmp_path: Path) -> None:
    """``agent.factory`` takes the spec ``agentscope run`` takes (a file): the example's agent, on the policy and
    the arithmetic environment's tools, plays and is trained on (tests/rl/test_agent_spec.py checks the wiring)."""
    overrides = [o for o in TINY if not o.startswith("agent.kwargs.")]  # it takes model and toolkit only
    config = load_config(None, [*overrides, "schedule.steps=1", f"agent.factory={CALCULATOR}:build_agent"])
    result = await train(config, tmp_path / "run")
    assert result.steps == 1
    rows = list((await stored(tmp_path / "run")).values())
    trained = [t for t, step in rows if step is not None]
    assert trained, "no episode was trained on"
    assert all(t.turns and t.turns[0].completion_ids for t in trained)
    assert {t.status for t, _ in rows} <= {"ok", "truncated"}  # every episode's agent was built and played


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
    config = load_config(
        None, ["sft.steps=10", "sft.demonstrations=24", "tasks=arith:n=8,seed=0,split=train"]
    )
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


async def test_the_warm_start_shows_its_steps_and_trains_on_its_own_thread_count(tmp_path: Path) -> None:
    """``rl sft`` with a console: says what it collects, shows a progress bar over the optimizer steps (and a line
    per 100 steps when the console is not a terminal) and trains with ``sft.threads`` torch threads."""
    import io

    import torch
    from rich.console import Console

    from agentscope.rl.policy import _warm_start

    seen: list[int] = []
    original = _warm_start.warm_start

    def spy(*args: Any, **kwargs: Any) -> list[float]:
        seen.append(torch.get_num_threads())  # in the thread that trains
        return original(*args, **kwargs)

    config = load_config(
        None,
        [
            *TINY,
            "agent.kwargs.max_iters=2",  # the expert calls the calculator, then answers
            "sft.steps=100",
            "sft.demonstrations=6",
            "sft.threads=2",
            "tasks=arith:n=8,seed=0,split=train",
        ],
    )
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agentscope.rl.policy.warm_start", spy)
        summary = await sft(config, tmp_path / "run", console=Console(file=out, width=200))
    assert seen == [2]
    text = out.getvalue()
    assert "warm start: collecting 6 demonstrations of arith:n=6,seed=0,split=warm" in text
    assert "warm start 100/100 | loss " in text  # a log line: StringIO is not a terminal
    assert summary["sft"]["steps"] == 100
    again = io.StringIO()
    await sft(config, tmp_path / "run", console=Console(file=again, width=200))
    assert "made before, reused" in again.getvalue()


async def test_early_stopping_keeps_the_best_validated_policy_not_the_last(tmp_path: Path) -> None:
    """With ``sft.validation_tasks`` the warm start is measured every ``validate_every`` steps and stops after
    ``patience`` validations without a new best; the policy kept is the best one's weights, exactly: those of a
    plain warm start of that many steps."""
    import io

    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from agentscope.rl._sft import REPORT_FILE

    common = [
        *TINY,
        "agent.kwargs.max_iters=2",
        "sft.demonstrations=6",
        "tasks=arith:n=8,seed=0,split=train",
    ]
    validation = [
        "sft.steps=40",
        "sft.validation_tasks=arith:n=4,seed=5,split=train",
        "sft.validate_every=3",
        "sft.patience=1",
    ]
    # Ties keep the earlier policy, and a policy this small and this young solves none of the validation tasks:
    # the first validation (step 3) is the best, the second (step 6) is no better, and patience 1 stops there.
    out = io.StringIO()
    summary = await sft(
        load_config(None, [*common, *validation]), tmp_path / "stopped", console=Console(file=out, width=300)
    )
    said = [line for line in out.getvalue().splitlines() if "validation success" in line]
    assert len(said) == 2, out.getvalue()
    assert "warm start: step 3, validation success 0.0% on arith:n=4,seed=5,split=train" in said[0]
    assert said[1].endswith("; stopping: no new best in 1 validations")
    report = summary["sft"]
    assert [v["step"] for v in report["validation"]] == [3, 6]
    assert report["steps"] == 6
    assert report["kept_step"] == 3
    stopped = Path(summary["policy"])
    assert json.loads((stopped / REPORT_FILE).read_text())["kept_step"] == 3
    assert not (stopped / ".validation").exists()

    plain = await sft(load_config(None, [*common, "sft.steps=3"]), tmp_path / "plain")
    kept = AutoModelForCausalLM.from_pretrained(stopped).state_dict()
    three = AutoModelForCausalLM.from_pretrained(Path(plain["policy"])).state_dict()
    six = await sft(load_config(None, [*common, "sft.steps=6"]), tmp_path / "six")
    last = AutoModelForCausalLM.from_pretrained(Path(six["policy"])).state_dict()
    assert all(torch.equal(kept[name], three[name]) for name in three)
    assert not all(torch.equal(kept[name], last[name]) for name in last)


async def test_early_stopping_counts_patience_from_the_last_new_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each validation measures the weights of that step; a new best resets the count of validations without one;
    a tie is not a new best (the earlier policy is kept); the weights kept are those of the best validation."""
    import torch

    from agentscope.rl import _evaluation, _sft

    successes = iter([0.1, 0.05, 0.3, 0.2, 0.3, 0.0])
    evaluated: list[float] = []

    async def scripted(_config: Any, checkpoint: Path, *_: Any, **__: Any) -> dict[str, Any]:
        evaluated.append(float((checkpoint / "weight").read_text()))  # what the scratch copy holds
        return {"success_rate": next(successes)}

    class Model(torch.nn.Linear):
        def save_pretrained(self, path: Path) -> None:
            path.mkdir(parents=True, exist_ok=True)
            (path / "weight").write_text(str(float(self.weight.detach()[0, 0])))

    class Tokenizer:
        def save_pretrained(self, path: Path) -> None:
            pass

    monkeypatch.setattr(_evaluation, "evaluate", scripted)
    config = load_config(
        None, [*TINY, "sft.steps=50", "sft.validation_tasks=arith:n=2,seed=5", "sft.patience=2"]
    )
    model = Model(2, 2)
    report = _sft.SFTReport(key="k", base="tiny", warm_start_tasks=None)
    stopper = _sft._EarlyStopping(config, model, Tokenizer(), tmp_path / "scratch", report)

    def validate_until_stopped() -> list[bool]:
        stops: list[bool] = []
        for step in range(1, 7):
            with torch.no_grad():
                model.weight.fill_(step)
            stops.append(stopper(step))
            if stops[-1]:
                break
        stopper.restore_best()
        return stops

    stops = await anyio.to_thread.run_sync(validate_until_stopped)
    # 0.05 at step 2 is a miss, reset by the new best at 3; 4 misses, 5 ties: patience 2 is spent at step 5
    # (without the reset it would have been spent at step 4).
    assert stops == [False, False, False, False, True]
    assert evaluated == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert report.kept_step == 3
    assert [v["step"] for v in report.validation] == [1, 2, 3, 4, 5]
    assert torch.equal(model.weight, torch.full((2, 2), 3.0))
    assert not (tmp_path / "scratch").exists()


def test_the_policy_cache_key_covers_early_stopping_only_where_it_applies() -> None:
    """Validation settings decide which policy is kept, so they are part of the cache key; without a warm start
    they are ignored, and so is the key's part for them (an existing cache stays valid)."""
    from agentscope.rl._sft import policy_key

    warm = [*TINY, "tasks=arith:n=8,seed=0,split=train", "sft.steps=10", "sft.demonstrations=6"]
    validated = [*warm, "sft.validation_tasks=arith:n=4,seed=5,split=train"]
    assert policy_key(load_config(None, validated)) != policy_key(load_config(None, warm))
    assert policy_key(load_config(None, [*validated, "sft.patience=3"])) != policy_key(
        load_config(None, validated)
    )
    assert policy_key(load_config(None, [*validated, "rollout.max_tokens=8"])) != policy_key(
        load_config(None, validated)
    )
    cold = [*TINY, "tasks=arith:n=8,seed=0,split=train", "sft.steps=0"]
    assert policy_key(load_config(None, [*cold, "sft.validation_tasks=arith:n=4,seed=5,split=train"])) == (
        policy_key(load_config(None, cold))
    )


async def test_a_warm_start_whose_validation_fails_leaves_no_staging_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy is built in a staging directory named by the process id; when a validation fails, the error
    reaches the caller and the directory (with its scratch copy of the model) is removed."""
    from agentscope.rl import _evaluation

    async def broken(*_: Any, **__: Any) -> dict[str, Any]:
        raise RuntimeError("the validation episodes could not be played")

    monkeypatch.setattr(_evaluation, "evaluate", broken)
    config = load_config(
        None,
        [
            *TINY,
            "agent.kwargs.max_iters=2",
            "sft.demonstrations=6",
            "tasks=arith:n=8,seed=0,split=train",
            "sft.steps=10",
            "sft.validation_tasks=arith:n=4,seed=5,split=train",
            "sft.validate_every=5",
        ],
    )
    with pytest.raises(RuntimeError, match="could not be played"):
        await sft(config, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")] == []


def test_the_warm_start_gives_the_thread_its_torch_thread_count_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's thread count is per thread under OpenMP: ``_build`` sets ``sft.threads`` in the thread that trains
    and restores what that thread had, also when training fails."""
    import torch

    from agentscope.rl import _sft

    during: list[int] = []

    def fails(*_: Any) -> None:
        during.append(torch.get_num_threads())
        raise RuntimeError("boom")

    monkeypatch.setattr(_sft, "_build_in_place", fails)
    config = load_config(None, [*TINY, "sft.threads=2"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            _sft._build(
                config, tmp_path / "policy", [], _sft.SFTReport(key="k", base="tiny", warm_start_tasks=None)
            )
        assert during == [2]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------- data.store: postgres


@pytest.mark.integration
async def test_train_resume_and_export_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    pg = ["data.store=postgres", f"data.url={postgres_url}", "data.namespace=runner_e2e"]
    run = tmp_path / "run"
    with pytest.raises(
        CheckpointError, match=r"holds no run to resume \(PostgresTrajectoryStore\(.*holds none\)"
    ):
        await train(load_config(None, [*TINY, *pg]), run, resume=True)

    result = await train(load_config(None, [*TINY, *pg]), run)
    assert result.steps == 2
    assert not (run / "trajectories.db").exists()
    with pytest.raises(UsageError, match=r"namespace='runner_e2e'\) already holds a run; .* data\.namespace"):
        await train(load_config(None, [*TINY, *pg]), tmp_path / "another")
    # The run directory holds this run: a new run there is refused on a fresh namespace, or on SQLite, before it
    # writes anything (it would overwrite config.yaml, mix checkpoints and append to the logs).
    config_before = (run / "config.yaml").read_text()
    fresh = ["data.store=postgres", f"data.url={postgres_url}", "data.namespace=runner_fresh"]
    for other in (fresh, []):
        with pytest.raises(
            UsageError,
            match=r"run already holds a run \(found checkpoints, metrics\.jsonl, batches\.jsonl\); continue it "
            r"with --resume or choose another --run-dir",
        ):
            await train(load_config(None, [*TINY, *other]), run)
    assert (run / "config.yaml").read_text() == config_before
    assert not (run / "trajectories.db").exists()
    assert not await PostgresTrajectoryStore(postgres_url, namespace="runner_fresh").exists()

    resumed = await train(load_config(None, [*TINY, *pg, "schedule.steps=3"]), run, resume=True)
    assert (resumed.resumed_from, resumed.steps) == (2, 3)
    batches = [json.loads(line) for line in (run / "batches.jsonl").read_text().splitlines()]
    assert [b["step"] for b in batches] == [1, 2, 3]
    ids = [i for b in batches for i in b["trajectory_ids"]]
    assert len(ids) == len(set(ids))  # nothing trained twice

    out = tmp_path / "out.jsonl"
    count = await export_trajectories(run, out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    async with PostgresTrajectoryStore(postgres_url, namespace="runner_e2e") as store:
        assert len(records) == count == await store.count() > 0
    trained = {r["trajectory_id"]: r["trained_at_step"] for r in records if r["trained_at_step"] is not None}
    assert set(trained) == set(ids)


@pytest.mark.integration
async def test_a_new_run_refuses_a_run_dir_holding_a_sqlite_run(postgres_url: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    async with TrajectoryStore(run / "trajectories.db"):
        pass
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    pg = ["data.store=postgres", f"data.url={postgres_url}", "data.namespace=runner_beside_sqlite"]
    with pytest.raises(
        UsageError, match=r"run already holds a run \(found trajectories\.db, metrics\.jsonl\); .* --resume"
    ):
        await train(load_config(None, [*TINY, *pg]), run)
    assert not (run / "config.yaml").exists()
    assert not await PostgresTrajectoryStore(postgres_url, namespace="runner_beside_sqlite").exists()
