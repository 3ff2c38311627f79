"""The configuration of ``agentscope rl train``: one pydantic model, loaded from YAML plus ``--set`` overrides.

Every field has a docstring; ``agentscope rl train --help`` lists them all (generated from the model by
:func:`config_help`). Unknown keys and bad values fail at load time with a :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import math
import textwrap
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeAlias, cast

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agentscope.exceptions import ConfigError
from agentscope.rl._rollout_config import RolloutConfig, check_rollout_engine
from agentscope.rl.data import DataConfig
from agentscope.rl.policy import TinyPolicyConfig
from agentscope.rl.trainer import TrainerConfig

__all__ = [
    "AgentConfig",
    "EnvConfig",
    "EvalConfig",
    "PolicyConfig",
    "RLConfig",
    "RolloutConfig",
    "SFTConfig",
    "ScheduleConfig",
    "config_help",
    "load_config",
]

_STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _check_task_spec(spec: str) -> str:
    from agentscope.rl.tasks import parse_task_spec  # the task sets load only when a config names a spec

    parse_task_spec(spec)  # raises ValueError naming what is malformed
    return spec


TaskSpec = Annotated[str, AfterValidator(_check_task_spec)]
"""A task set spec, ``name:key=value,...``, checked for syntax when the config loads."""


class PolicyConfig(BaseModel):
    """The policy being trained: a Hugging Face causal LM, or the tiny one built offline."""

    model_config = _STRICT

    path: str | None = None
    """Directory of a Hugging Face causal LM and its tokenizer (``from_pretrained``). None: build the tiny
    Qwen2-architecture policy described by ``tiny``."""
    tiny: TinyPolicyConfig = Field(default_factory=TinyPolicyConfig)
    """Shape of the tiny policy (used when ``path`` is None)."""
    cache_dir: str | None = None
    """Reuse the built (and warm-started) initial policy across runs from this directory, keyed by the config
    that makes it (``policy``, ``sft``, the warm-start tasks, the agent and the environment). None: build it
    inside the run directory (``DIR/policy_init``)."""

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data: object) -> object:
        if isinstance(data, dict):
            moved = {"warm_start_steps": "steps", "warm_start_lr": "lr", "warm_start_tasks": "tasks"}
            for old, new in moved.items():
                if old in data:
                    raise ValueError(f"policy.{old} moved to sft.{new} (the sft section: agentscope rl sft)")
        return cast(object, data)


class SFTConfig(BaseModel):
    """The supervised warm start (``agentscope rl sft``, and the first stage of ``rl train`` when ``steps > 0``):
    the policy imitates scripted-expert demonstrations of training-side tasks, so that RL starts from well-formed
    tool calls. Only the loss on what the policy generates counts (assistant turns)."""

    model_config = _STRICT

    steps: int = Field(default=0, ge=0)
    """Optimizer steps of the warm start (the most, with ``validation_tasks``). 0: none (RL starts from the policy
    as built or loaded)."""
    tasks: TaskSpec | None = None
    """The tasks whose expert demonstrations are imitated: training-side tasks only, never the evaluation ones
    (checked when the config loads). None: the training spec with ``split=warm`` and ``n=demonstrations`` when
    the training spec names a split, else the training tasks themselves."""
    demonstrations: int = Field(default=256, ge=1)
    """The demonstration budget: how many expert episodes are imitated (the first tasks of ``tasks`` whose
    episode the expert solves, each once). Fixed, so that runs and papers can say what the warm start saw."""
    lr: float = Field(default=3e-3, gt=0)
    """AdamW learning rate (constant)."""
    batch_size: int = Field(default=8, ge=1)
    """Demonstrations per optimizer step."""
    validation_tasks: TaskSpec | None = None
    """Early stopping: every ``validate_every`` steps the policy plays these tasks (greedy, one attempt each), and
    the warm start stops once ``patience`` validations in a row have not beaten the best so far; the best policy
    is kept (ties: the earlier). Use training-side tasks that are not demonstrated (e.g. ``split=train``): they
    may share nothing with ``eval_tasks`` or with the demonstrations (checked when the config loads), so choosing
    the stopping point never looks at held-out tasks. None: exactly ``steps`` steps."""
    validate_every: int = Field(default=250, ge=1)
    """Steps between validations (with ``validation_tasks``)."""
    patience: int = Field(default=8, ge=1)
    """Validations in a row without a new best before the warm start stops (with ``validation_tasks``). Long by
    default: on the lookup suite validation success dips for up to 1,000 steps before it rises again; there a
    patience of 8 (250 steps apart, 256 tasks) kept a policy scoring 47.7 % held out, where 3 (500 apart, 128
    tasks) had kept one scoring 9.4 % (``benchmarks/RESULTS.md``, rl_learning)."""
    threads: int | None = Field(default=None, ge=1)
    """torch intra-op threads while the warm start trains. It runs alone, before any rollout or RL step, so it can
    use every core (on 2 cores, 2 threads make a step ~1.7x faster than 1) while the top-level ``threads`` stays
    low for the RL phase, where rollout and trainer share the cores. None: the top-level ``threads``. The thread
    count changes the order of floating-point sums, so a warm start made on another count is another policy: a
    set value is part of the policy cache key."""


class EvalConfig(BaseModel):
    """How ``rl eval``, ``rl sft`` and ``rl train`` measure success on ``eval_tasks``."""

    model_config = _STRICT

    attempts: int = Field(default=1, ge=1)
    """Episodes per task."""
    temperature: float | None = Field(default=None, ge=0)
    """Sampling temperature of evaluation episodes (0: greedy). None: the rollout's."""
    before_after: bool = False
    """``rl train`` evaluates the policy it starts from and the one it ends with on ``eval_tasks`` and reports
    both (``DIR/eval.json``); ``rl sft`` evaluates the warm-started policy."""
    breakdown: str | None = None
    """Also report success per value of this task metadata field (e.g. ``level``, or ``task`` for MiniWoB++)."""
    training_tasks: int = Field(default=0, ge=0)
    """With ``before_after``: also play the first this many training tasks before and after (``train_before``,
    ``train_after`` in ``DIR/eval.json``), so the gap between what RL fitted and what generalises is visible."""


class EnvConfig(BaseModel):
    """The environment cluster."""

    model_config = _STRICT

    name: str | None = None
    """Task set whose environment plays the episodes (see ``load_tasks``). None: the task set of ``tasks``."""
    factory: str | None = None
    """``module:callable`` building one environment, instead of the task set's. Called with ``kwargs``."""
    kwargs: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Keyword arguments of the environment (of ``factory`` when set, else of the task set's environment), e.g.
    ``{require_tool: false}`` for the arithmetic task."""
    slots: int = Field(default=8, ge=1)
    """Episodes played at once (E); a finished episode's slot is refilled at once."""
    step_timeout_s: float | None = Field(default=60.0, gt=0)
    """Longest a model call or an environment step may take; past it the episode is failed by infrastructure
    and the environment restarted. None: no limit."""
    episode_timeout_s: float | None = Field(default=600.0, gt=0)
    """Longest an episode may take (same consequence). None: no limit."""
    max_turns: int | None = Field(default=8, ge=1)
    """Most model calls per episode; past it the episode is truncated. None: no limit."""
    backend: Literal["inprocess", "ray"] = "inprocess"
    """Where the episodes are played. ``inprocess``: in the training process (asyncio tasks). ``ray``: in
    ``workers`` Ray actors (placed by ``worker_cpus``, restarted by Ray), the ``slots`` split between them; each
    talks to the rollout servers over HTTP (so it needs ``rollout.backend: process`` or ``ray``) and returns its
    trajectories to the training process as Ray objects. An episode whose worker dies ends as ``failed_infra``."""
    workers: int = Field(default=1, ge=1)
    """``backend: ray`` only: environment actors; ``slots`` is split evenly between them."""
    worker_cpus: float = Field(default=0.5, ge=0.0)
    """``backend: ray`` only: Ray's CPU reservation per environment actor (agents and environments mostly wait
    on the model and on tools)."""


class AgentConfig(BaseModel):
    """The agent that plays the episodes: the same class users deploy."""

    model_config = _STRICT

    factory: str = "agentscope.rl.envs:react_agent_factory"
    """The agent spec, as for ``agentscope run``: ``module:NAME`` or ``path/to/file.py[:NAME]`` (default NAME:
    ``build_agent``), a function returning a fresh agent. It gets ``model=`` (the policy), ``toolkit=`` (the
    environment's tools) and ``kwargs``, each if it declares it."""
    kwargs: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Extra keyword arguments of the factory (e.g. ``sys_prompt``, ``max_iters``); each must be one it takes."""


ScheduleMode: TypeAlias = Literal["sync-wave", "sync-refill", "async"]
"""The schedules of :class:`ScheduleConfig` (``sync`` is read as ``sync-wave``)."""


def _schedule_mode(value: object) -> object:
    # "sync" meant "generate, train, publish" (README, ARCHITECTURE): the strictly on-policy schedule.
    return "sync-wave" if value == "sync" else value


class ScheduleConfig(BaseModel):
    """How generation and training are interleaved: two synchronous schedules and one asynchronous."""

    model_config = _STRICT

    mode: Annotated[ScheduleMode, BeforeValidator(_schedule_mode)] = "async"
    """``sync-wave``: strictly on-policy. Each step plays waves of episodes: a wave fills every env slot with
    whole groups at once and ends when all of its episodes have (no slot takes a new episode before), until the
    batch is full; then train, publish the weights to every server, and discard the groups left over (status
    ``dropped_stale``, counted in ``sched/discarded_*``), so every trained token comes from the current policy.
    ``sync`` is read as ``sync-wave``. ``sync-refill``: per-trajectory refill: each round launches the groups
    the batch lacks, oversampled by the share curation drops, and a finished episode's slot takes the round's
    next episode at once; then train and publish. Not strictly on-policy: groups left over from a round are
    trained the next step, one version late. ``async``: the environment cluster, rollout service, data manager
    and trainer all run at once; the trainer takes a batch whenever one is ready within ``max_staleness``."""
    steps: int = Field(default=10, ge=1)
    """Trainer steps to run (a resumed run continues up to this many in total)."""
    max_staleness: int | None = Field(default=2, ge=0)
    """Drop a trajectory whose oldest token came from a policy more than this many versions behind the trainer.
    None: no bound. Always 0 in ``sync-wave`` mode (whatever is written here)."""
    publish_every: int = Field(default=1, ge=1)
    """Send the trainer's weights to the rollout service every this many steps (1 in ``sync-wave`` mode)."""
    weight_sync: Literal["global", "rolling"] = "rolling"
    """Async: ``global``: every rollout server takes the new weights at once and the trainer waits (a barrier).
    ``rolling``: one server after another in the background while the others keep serving (DART's per-worker
    sync). The sync modes always publish to every server before generating again."""
    max_ahead: int | None = Field(default=None, ge=1)
    """Async: how far generation may run ahead of the trainer, in episodes: a new group starts only while fewer
    than this many episodes are launched and not yet trained (playing, finished in a group still open, or ready to
    train). None: ``max_staleness`` (at least 1) batches' worth of episodes (``batch_groups`` × ``group_size``
    each), so a group starts behind at most that many batches, and only while the trainer trains: while it waits
    for a batch, generation is the bottleneck and every free env slot takes an episode at once. A number is a hard
    cap, waiting trainer or not: set it when a trainer-bound run drops too many episodes as stale. No bound when
    both are None."""
    abort_stale: bool = True
    """Async: stop episodes that can no longer be trained (older than ``max_staleness`` already)."""
    checkpoint_every: int = Field(default=1, ge=0)
    """Save a checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int | None = Field(default=2, ge=1)
    """Checkpoints kept on disk, the newest (None: every one, e.g. to evaluate each afterwards)."""
    time_limit_s: float | None = Field(default=None, gt=0)
    """Stop training after this many seconds of wall-clock (counted from the first episode; the step running then
    finishes), whatever ``steps`` says. None: no limit. For comparisons at equal training time."""

    @field_validator("publish_every")
    @classmethod
    def _publish_every_step_on_policy(cls, value: int, info: ValidationInfo) -> int:
        if value != 1 and info.data.get("mode") == "sync-wave":
            raise ValueError(
                f"sync-wave trains only on the current policy, so it publishes after every step: remove "
                f"publish_every: {value}, or use mode sync-refill or async"
            )
        return value

    @model_validator(mode="after")
    def _on_policy(self) -> Self:
        if self.mode == "sync-wave":
            self.max_staleness = 0  # nothing older than the current policy is ever trained
        return self


class RLConfig(BaseModel):
    """Everything ``agentscope rl train`` needs."""

    model_config = _STRICT

    tasks: TaskSpec = "arith:n=64,seed=0"
    """Training task set spec, ``name:key=value,...`` (``load_tasks``)."""
    eval_tasks: TaskSpec | None = None
    """Task set for ``agentscope rl eval`` when ``--tasks`` is not given. None: ``tasks``."""
    seed: int = 0
    """Seed of task order and sampling."""
    threads: int | None = Field(default=None, ge=1)
    """torch intra-op threads of the trainer (and of building the policy, unless ``sft.threads``). None: torch's
    default."""
    trace: bool = True
    """Record every episode, model and tool call as spans, and the metrics, in DIR/traces.db (the studio reads
    it)."""
    trace_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    """Fraction of episodes traced (whole episodes, chosen by trace id); metrics are always recorded. Lower it when
    rollouts are CPU-bound: recording every span costs ~200 µs of CPU per agent step (benchmarks/RESULTS.md)."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """The policy."""
    sft: SFTConfig = Field(default_factory=SFTConfig)
    """The supervised warm start on expert demonstrations."""
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    """How success on ``eval_tasks`` is measured."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """The rollout service."""
    env: EnvConfig = Field(default_factory=EnvConfig)
    """The environment cluster."""
    agent: AgentConfig = Field(default_factory=AgentConfig)
    """The agent."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The data manager (its staleness bound comes from ``schedule.max_staleness``)."""
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    """The trainer (verl's algorithms)."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Sync or async, steps, publishing, checkpoints."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (
            "max_staleness" in self.data.model_fields_set
            and self.data.max_staleness != self.schedule.max_staleness
        ):
            raise ValueError(
                "data.max_staleness: set schedule.max_staleness instead (the data manager takes it)"
            )
        self.data.max_staleness = self.schedule.max_staleness
        if self.env.backend == "ray" and self.rollout.backend == "inprocess":
            raise ValueError(
                "env.backend: ray needs rollout servers the environment actors can reach over HTTP: set "
                "rollout.backend to process or ray"
            )
        if self.env.backend == "ray" and self.env.slots < self.env.workers:
            raise ValueError(f"env.workers: {self.env.workers} workers need at least as many env.slots")
        if self.trainer.temperature != self.rollout.temperature:
            raise ValueError(
                f"trainer.temperature: {self.trainer.temperature} must equal rollout.temperature "
                f"({self.rollout.temperature}), or the trainer's log-probs do not match the rollout's"
            )
        return self

    def warm_start_spec(self) -> str | None:
        """The task spec whose demonstrations the warm start imitates (see ``sft.tasks``); None without one."""
        if not self.sft.steps:
            return None
        if self.sft.tasks is not None:
            return self.sft.tasks
        from agentscope.rl.tasks import parse_task_spec, with_task_spec_args

        if "split" not in parse_task_spec(self.tasks)[1]:
            return self.tasks
        return with_task_spec_args(self.tasks, split="warm", n=self.sft.demonstrations)

    @model_validator(mode="after")
    def _rollout_engine(self) -> Self:
        check_rollout_engine(self.rollout)
        return self

    @model_validator(mode="after")
    def _held_out(self) -> Self:
        """Evaluation tasks share no content key with the training, warm-start or warm-start validation tasks (no
        leak), and validation tasks none with the demonstrations (they would measure memorisation)."""
        from agentscope.rl.tasks import load_tasks, overlapping

        loaded: dict[str, list[Any]] = {}  # the warm-start and validation specs are compared twice

        def load(field: str, spec: str) -> list[Any]:
            if spec not in loaded:
                try:
                    loaded[spec] = load_tasks(spec)
                # ImportError: a suite's extra is not installed
                except (ValueError, OSError, ImportError) as exc:
                    raise ValueError(f"{field}: cannot load {spec!r}: {exc}") from None
            return loaded[spec]

        warm = self.warm_start_spec()
        validation = self.sft.validation_tasks if warm is not None else None
        if warm is not None and validation is not None:
            shared = overlapping(load("sft.validation_tasks", validation), load("sft.tasks", warm))
            if shared:
                raise ValueError(
                    f"sft.validation_tasks: {len(shared)} of its tasks are demonstrated in the warm start "
                    f"({warm!r}), e.g. {shared[0].prompt!r}: validate on tasks it does not imitate (split=train)"
                )
        if self.eval_tasks is None:
            return self
        held_out = load("eval_tasks", self.eval_tasks)
        sides = [("tasks", self.tasks)]
        if warm is not None and warm != self.tasks:
            sides.append(("sft.tasks", warm))
        if validation is not None:
            sides.append(("sft.validation_tasks", validation))
        leaks: list[str] = []
        for field, spec in sides:
            shared = overlapping(held_out, load(field, spec))
            if shared:
                distinct = len({t.content_key for t in shared})
                leaks.append(
                    f"{len(shared)} of its {len(held_out)} tasks ({distinct} distinct) are also in {field} "
                    f"({spec!r}), e.g. {shared[0].prompt!r}"
                )
        if leaks:
            raise ValueError(
                f"eval_tasks: {'; '.join(leaks)}. Held-out tasks must share nothing with training or warm start: "
                f"give each spec its split (split=train, split=warm, split=eval)"
            )
        return self


# ---------------------------------------------------------------------- loading


def _describe(exc: ValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, eq, raw = item.partition("=")
    key = key.strip()
    if not eq or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. trainer.lr=1e-5")
    text = raw.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an integer of more than 4300 digits
        value = text
    if isinstance(value, dict | list) and not text.startswith(("{", "[")):
        value = text  # "a: b" is text here; write {a: b} or [a, b] for a mapping or a list
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child: object = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {key}: {where} is a value, not a section")
        node = typing.cast(dict[str, Any], child)
    node[parts[-1]] = value


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RLConfig:
    """Load a YAML config (None: the defaults) and apply ``KEY=VALUE`` overrides: dotted keys, values read as
    YAML scalars (``1e-5``, ``true``, ``null``; an empty value is null; ``{...}``/``[...]`` for mappings and lists;
    anything else is text).

    Reads the file: call it from a worker thread in async code.

    Raises:
        ConfigError: the file is missing or not a YAML mapping, an override is malformed, or a field is unknown
            or invalid (the message names each field, e.g. ``trainer.lr: Input should be greater than 0``).
    """
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path} nests its values too deeply") from None
        except ValueError as exc:  # an integer beyond Python's 4300-digit limit
            raise ConfigError(f"{path} holds a value that cannot be read: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections, not {type(loaded).__name__}")
        data = typing.cast(dict[str, Any], loaded or {})
    for item in overrides:
        _apply_override(data, item)
    problem = _value_problem(data)
    if problem is not None:
        raise ConfigError(f"invalid {where}: {problem}")
    try:
        return RLConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {where}: {_describe(exc)}") from None
    except RecursionError:
        raise ConfigError(f"invalid {where}: values nested too deeply") from None


_MAX_VALUES = 100_000
"""Most values (counting every repetition of a YAML alias) a config may hold before it is validated."""


def _value_problem(data: object) -> str | None:
    """What is wrong with the raw values, before validation: a NaN or infinite number (which no field means),
    named by its dotted key; or more than ``_MAX_VALUES`` values, as YAML aliases that repeat (or contain)
    a section make (validating such a config would take for ever). None when neither."""
    # Each entry: a value and its key as a linked list (key part, parent), joined only for a message.
    stack: list[tuple[object, _KeyLink]] = [(data, None)]
    seen = 0
    while stack:
        value, link = stack.pop()
        seen += 1
        if seen > _MAX_VALUES:
            return f"holds more than {_MAX_VALUES:,} values (YAML aliases repeating or containing a section?)"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{_dotted(link)}: {value}: must be a finite number"
        if isinstance(value, dict):
            items = typing.cast(dict[object, object], value).items()
            stack.extend((child, (str(key), link)) for key, child in items)
        elif isinstance(value, list):
            stack.extend(
                (child, (f"[{i}]", link)) for i, child in enumerate(typing.cast(list[object], value))
            )
    return None


_KeyLink: TypeAlias = "tuple[str, _KeyLink] | None"


def _dotted(link: _KeyLink) -> str:
    parts: list[str] = []
    while link is not None:
        parts.append(link[0])
        link = link[1]
    dotted = ""
    for part in reversed(parts):
        dotted += part if part.startswith("[") or not dotted else f".{part}"
    return dotted or "(root)"


# ---------------------------------------------------------------------- help text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{key}.")
            continue
        default = info.get_default(call_default_factory=True)
        doc = " ".join((info.description or _attribute_docs(model).get(name, "")).split())
        yield key, _type_name(annotation), repr(default) if isinstance(default, str) else str(default), doc


@functools.cache
def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Attribute docstrings read from the class source (for models without ``use_attribute_docstrings``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(model)))
    except (OSError, TypeError, SyntaxError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


def config_help() -> str:
    """Every config field, one per line: ``key (type, default): what it does``."""
    return "\n".join(
        f"{key} ({kind}, default {default}): {doc}" for key, kind, default, doc in _fields(RLConfig, "")
    )
