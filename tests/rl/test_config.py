"""RLConfig: YAML + --set overrides, errors that name the field, --help generated from the fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from agentscope.exceptions import ConfigError
from agentscope.rl._config import RLConfig, config_help, load_config

SMOKE = Path(__file__).resolve().parents[2] / "examples" / "rl" / "smoke.yaml"


def test_defaults_and_smoke_config_load() -> None:
    default = load_config(None)
    assert default == RLConfig()
    assert default.data.max_staleness == default.schedule.max_staleness == 2
    smoke = load_config(SMOKE)
    assert smoke.tasks.startswith("arith:")
    assert smoke.policy.tiny.hidden_size == 64
    assert smoke.schedule.steps >= 2


@pytest.mark.parametrize("path", sorted(SMOKE.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.schedule.steps >= 1


def test_overrides_are_dotted_yaml_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  lr: 0.001\nschedule:\n  mode: async\n")
    config = load_config(
        path,
        [
            "trainer.lr=1e-5",
            "schedule.mode=sync-refill",
            "schedule.max_staleness=1",
            "env.kwargs.step_latency.median_s=0.5",
            "agent.kwargs.sys_prompt=Be brief: answer with a number.",
            "policy.path=null",
            "env.step_timeout_s=",
        ],
    )
    assert config.trainer.lr == 1e-5
    assert config.schedule.mode == "sync-refill"
    assert config.data.max_staleness == 1  # follows schedule.max_staleness
    assert config.env.kwargs == {"step_latency": {"median_s": 0.5}}
    assert config.agent.kwargs["sys_prompt"] == "Be brief: answer with a number."
    assert config.policy.path is None
    assert config.env.step_timeout_s is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.lrr=1"], "trainer.lrr: unknown field"),
        (["trainer.lr=-1"], "trainer.lr: Input should be greater than 0"),
        (["schedule.mode=fast"], "schedule.mode: Input should be 'sync-wave', 'sync-refill' or 'async'"),
        (["env.slots=many"], "env.slots: Input should be a valid integer"),
        (["data.max_staleness=5"], "data.max_staleness: set schedule.max_staleness instead"),
        (["rollout.temperature=0.7"], "trainer.temperature: 1.0 must equal rollout.temperature (0.7)"),
        (["trainer"], "expected KEY=VALUE"),
        (["tasks.n=3"], "tasks: Input should be a valid string"),
        (["tasks=arith:n"], "tasks: bad task spec item 'n'"),
        (["eval_tasks=:n=3"], "eval_tasks: empty task spec"),
        (["sft.tasks=arith:seed"], "sft.tasks: bad task spec item 'seed'"),
        (["policy.warm_start_steps=10"], "policy: policy.warm_start_steps moved to sft.steps"),
        (["trainer.lr=1", "trainer.lr.x=2"], "trainer.lr is a value, not a section"),
        (["trace_sample_rate=1.5"], "trace_sample_rate: Input should be less than or equal to 1"),
    ],
)
def test_errors_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("schedule:\n  steps: 0\n")
    with pytest.raises(
        ConfigError, match=r"invalid .*bad.yaml: schedule.steps: Input should be greater than or equal to 1"
    ):
        load_config(bad)


def test_help_lists_every_field_with_its_doc(cli: Callable[..., Result]) -> None:
    text = config_help()
    for key in (
        "trainer.lr",
        "schedule.mode",
        "schedule.max_staleness",
        "env.slots",
        "data.group_size",
        "policy.tiny.hidden_size",
    ):
        assert f"\n{key} (" in f"\n{text}"
    assert (
        "schedule.mode (sync-wave|sync-refill|async, default 'async'): ``sync-wave``: strictly on-policy"
        in text
    )
    assert "policy.tiny.hidden_size (int, default 256): Width of the residual stream." in text

    result = cli("rl", "train", "--help")
    assert result.exit_code == 0, result.output
    for key in (
        "--run-dir",
        "--set",
        "--resume",
        "trainer.lr",
        "schedule.checkpoint_every",
        "env.step_timeout_s",
    ):
        assert key in result.output


def test_cli_reports_config_errors(tmp_path: Path, cli: Callable[..., Result]) -> None:
    result = cli("rl", "train", str(SMOKE), "--run-dir", str(tmp_path / "run"), "--set", "trainer.bogus=1")
    assert result.exit_code == 2
    assert "trainer.bogus: unknown field" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lost", ["trainer", "data"])
def test_cli_reports_a_lost_trainer_or_data_manager_as_its_one_error(
    lost: str, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentscope.rl import _runner
    from agentscope.rl._data_ray import DataManagerLost
    from agentscope.rl.trainer import TrainerLostError

    error = (
        TrainerLostError("the trainer died")
        if lost == "trainer"
        else DataManagerLost("the data manager died")
    )

    async def train(*_: object, **__: object) -> None:
        raise error

    monkeypatch.setattr(_runner, "train", train)
    result = cli("rl", "train", str(SMOKE), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert result.output.count(" died") == 1, result.output
    assert f"error: {error}" in result.output


# The task sets of the learn.yaml of 2026-11-25 (its policy.warm_start_* fields are sft.* now): its warm-start set
# held 242 of the 243 possible questions, every held-out one among them, and 11 distinct held-out questions were
# training questions too.
LEAKING_LEARN_YAML = """
tasks: arith:n=32,seed=0,max_operand=9
eval_tasks: arith:n=64,seed=7,max_operand=9
sft:
  steps: 600
  tasks: arith:n=2000,seed=100,max_operand=9
"""


def test_a_config_whose_evaluation_set_leaks_fails_naming_the_overlap(tmp_path: Path) -> None:
    path = tmp_path / "learn.yaml"
    path.write_text(LEAKING_LEARN_YAML)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "eval_tasks: 13 of its 64 tasks (11 distinct) are also in tasks" in message
    assert "64 of its 64 tasks (59 distinct) are also in sft.tasks" in message
    assert "split=eval" in message


def test_splits_make_the_same_config_load(tmp_path: Path) -> None:
    path = tmp_path / "learn.yaml"
    path.write_text(
        LEAKING_LEARN_YAML.replace("max_operand=9\n", "max_operand=9,split=train\n", 1)
        .replace("seed=7,max_operand=9", "seed=7,max_operand=9,split=eval")
        .replace("n=2000,seed=100,max_operand=9", "n=40,seed=100,max_operand=9,split=warm")
        .replace("n=64,seed=7", "n=40,seed=7")
    )
    config = load_config(path)
    assert config.eval_tasks == "arith:n=40,seed=7,max_operand=9,split=eval"


def test_warm_start_validation_tasks_may_share_nothing_with_the_held_out_set_or_the_demonstrations() -> None:
    """Early stopping chooses the warm start's length on ``sft.validation_tasks``: tasks from the evaluation set
    would leak it into that choice, demonstrated tasks would measure memorisation. Either fails at load time."""
    base = [
        "tasks=arith:n=32,seed=0,max_operand=9,split=train",
        "eval_tasks=arith:n=20,seed=7,max_operand=9,split=eval",
        "sft.steps=10",
        "sft.demonstrations=20",
    ]
    with pytest.raises(
        ConfigError, match=r"eval_tasks: 20 of its 20 tasks \(\d+ distinct\) are also in sft.validation"
    ):
        load_config(None, [*base, "sft.validation_tasks=arith:n=40,seed=7,max_operand=9,split=eval"])
    with pytest.raises(
        ConfigError, match=r"sft\.validation_tasks: 20 of its tasks are demonstrated in the warm start"
    ):
        load_config(None, [*base, "sft.validation_tasks=arith:n=20,seed=0,max_operand=9,split=warm"])
    config = load_config(None, [*base, "sft.validation_tasks=arith:n=20,seed=3,max_operand=9,split=train"])
    assert config.sft.validation_tasks == "arith:n=20,seed=3,max_operand=9,split=train"


def test_an_unloadable_evaluation_set_names_its_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval_tasks: cannot load 'arith:n=100,max_operand=2,split=eval'"):
        load_config(None, ["eval_tasks=arith:n=100,max_operand=2,split=eval"])


def test_the_ray_example_is_the_quickstart_with_only_its_backends_and_placement_changed() -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "rl"
    quickstart = load_config(examples / "quickstart.yaml").model_dump(mode="json")
    on_ray = load_config(examples / "ray.yaml").model_dump(mode="json")
    assert (on_ray["rollout"]["backend"], on_ray["rollout"]["servers"]) == ("ray", 2)
    assert (quickstart["rollout"]["backend"], quickstart["rollout"]["servers"]) == ("inprocess", 1)
    assert (on_ray["env"]["backend"], on_ray["env"]["workers"]) == ("ray", 2)
    assert (quickstart["env"]["backend"], quickstart["env"]["workers"]) == ("inprocess", 1)
    assert (on_ray["data"]["placement"], quickstart["data"]["placement"]) == ("ray", "inprocess")
    assert (on_ray["trainer"]["placement"], on_ray["trainer"]["cpus"]) == ("ray", 1)
    assert quickstart["trainer"]["placement"] == "inprocess"
    for config in (quickstart, on_ray):
        del config["rollout"]["backend"], config["rollout"]["servers"]
        del config["env"]["backend"], config["env"]["workers"]
        del config["data"]["placement"]
        del config["trainer"]["placement"]
    assert on_ray == quickstart


def test_environment_actors_need_rollout_servers_they_can_reach() -> None:
    with pytest.raises(
        ConfigError, match=r"env\.backend: ray needs rollout servers .* rollout\.backend to process or ray"
    ):
        load_config(None, ["env.backend=ray"])
    with pytest.raises(ConfigError, match=r"env\.workers: 4 workers need at least as many env\.slots"):
        load_config(None, ["env.backend=ray", "rollout.backend=ray", "env.workers=4", "env.slots=2"])
    config = load_config(None, ["env.backend=ray", "rollout.backend=process", "env.workers=2"])
    assert (config.env.backend, config.env.workers, config.env.worker_cpus) == ("ray", 2, 0.5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.placement=gpu"], "trainer.placement: Input should be 'inprocess' or 'ray'"),
        (["trainer.ranks=2"], r"trainer\.ranks: 2: several ranks are verl's FSDP actor on Ray only"),
        (
            ["trainer.placement=ray", "trainer.ranks=2"],
            r"trainer\.ranks: 2: several ranks are verl's FSDP actor on Ray only",
        ),
        (
            ["trainer.backend=verl_fsdp", "trainer.ranks=2"],
            r"trainer\.ranks: 2: several ranks are verl's FSDP actor on Ray only",
        ),
        (["trainer.ranks=0"], r"trainer\.ranks: Input should be greater than or equal to 1"),
        (
            ["trainer.placement=ray", "trainer.backend=verl_fsdp", "trainer.cpus=0.5"],
            r"trainer\.cpus: 0\.5: a verl rank reserves at least 1 CPU",
        ),
        (
            ["trainer.placement=ray", "trainer.backend=verl_fsdp", "trainer.gpus=0.5"],
            r"trainer\.gpus: 0\.5: a verl rank trains on 0 or 1 GPU",
        ),
        (["trainer.placement=ray", "trainer.device=cuda"], r"trainer\.gpus: 0: device cuda needs 1 GPU"),
        (
            ["trainer.placement=ray", "trainer.device=cuda:1", "trainer.gpus=1"],
            r"trainer\.gpus: 1: device cuda:1 needs 2 GPU",
        ),
        (["trainer.cpus=2"], r"trainer\.cpus: 2 is used by placement ray only"),
        (["trainer.gpus=1"], r"trainer\.gpus: 1 is used by placement ray only"),
        (["trainer.placement=ray", "trainer.cpus=0"], r"trainer\.cpus: Input should be greater than 0"),
        (
            ["trainer.placement=ray", "trainer.gpus=-1"],
            r"trainer\.gpus: Input should be greater than or equal",
        ),
    ],
)
def test_a_bad_trainer_placement_fails_at_load_naming_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["trainer.placement=ray"],
        ["trainer.placement=ray", "trainer.cpus=2", "trainer.gpus=1"],
        ["trainer.placement=ray", "trainer.backend=verl_fsdp", "trainer.ranks=2", "trainer.gpus=1"],
    ],
)
def test_a_dumped_config_loads_again_whatever_the_placement(overrides: list[str]) -> None:
    """Actors and rollout-server processes load the run's config from its dump (JSON, config.yaml)."""
    config = load_config(None, overrides)
    assert RLConfig.model_validate_json(config.model_dump_json()) == config


def test_the_trainer_actor_reserves_what_it_is_given() -> None:
    config = load_config(
        None, ["trainer.placement=ray", "trainer.cpus=2", "trainer.gpus=0.5", "trainer.device=cuda"]
    )
    assert (config.trainer.placement, config.trainer.cpus, config.trainer.gpus) == ("ray", 2.0, 0.5)
    assert load_config(None, ["trainer.placement=ray"]).trainer.cpus == 1.0  # one CPU, no GPU by default


def test_the_trainer_placement_may_change_on_resume() -> None:
    """Where the trainer runs is a deployment choice, as env.backend is: a run checkpointed in process resumes on
    Ray (and back) without --allow-config-change."""
    from agentscope.rl._resume import check_config

    saved = load_config(None, []).model_dump(mode="json")
    moved = load_config(None, ["trainer.placement=ray", "trainer.cpus=2"])
    changes = check_config(saved, moved, allow=False, source="the checkpoint")
    assert changes == {"trainer.placement": ("inprocess", "ray"), "trainer.cpus": (1.0, 2.0)}
    with pytest.raises(ConfigError, match=r"trainer\.lr"):
        check_config(saved, load_config(None, ["trainer.lr=0.1"]), allow=False, source="the checkpoint")
