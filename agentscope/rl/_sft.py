"""The initial policy and its supervised warm start (``agentscope rl sft``, and the first stage of ``rl train``).

The policy RL starts from is ``policy.path`` (any Hugging Face causal LM) or the tiny Qwen2 built offline, then,
when ``sft.steps > 0``, fine-tuned on a fixed budget of scripted-expert demonstrations of training-side tasks
(``sft.tasks``: by default the training set's ``split=warm``, which shares no content key with the training or the
evaluation split). Demonstrations are recorded by playing the task set's expert through the real environment and
the real agent, exactly as RL episodes are played, so that they show the policy the prompts it will see; a task set
without an expert may give static transcripts instead (``TaskSet.demonstrations``). The tiny policy's tokenizer is
trained on the demonstrations' text too, so that task words get short encodings.

The result is a directory that ``from_pretrained`` loads, made once and reused: ``DIR/policy_init`` or, with
``policy.cache_dir``, a directory there keyed by the config that makes it. ``sft.json`` in it says what the warm
start saw and did.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread

from agentscope.exceptions import ConfigError, UsageError
from agentscope.message import Msg, new_id
from agentscope.models import (
    ChatModel,
    ChatResponse,
    ModelSettings,
    ResponseFormat,
    ToolChoice,
    ToolSchema,
    to_response,
)
from agentscope.rl._config import RLConfig
from agentscope.rl._progress import StepProgress
from agentscope.rl._types import Task, Trajectory, Turn
from agentscope.rl.envs import DEFAULT_SYS_PROMPT, AgentFactory, EnvCluster, EnvFactory, ScriptedPolicy
from agentscope.rl.tasks import TaskSet, get_task_set, load_tasks, parse_task_spec

if TYPE_CHECKING:
    from rich.console import Console

    from agentscope.rl.policy import Demonstration

__all__ = ["SFTReport", "prepare_policy", "record_demonstrations"]

POLICY_DIR = "policy_init"
REPORT_FILE = "sft.json"
_READY = ".ready"
_KEY_VERSION = (
    3  # bump when what the key covers changes meaning, or the code it depends on (task tools, tokenizer)
)


@dataclass(slots=True)
class SFTReport:
    """What making the initial policy did (``sft.json`` beside its weights)."""

    key: str
    """The config key the directory is made for."""
    base: str
    """``policy.path``, or ``tiny`` for the policy built offline."""
    warm_start_tasks: str | None
    """The task spec whose demonstrations were imitated (None: no warm start)."""
    demonstrations: int = 0
    """Demonstrations imitated."""
    expert_episodes: int = 0
    """Expert episodes played to record them."""
    expert_successes: int = 0
    """How many of those the expert solved (only solved ones are imitated)."""
    steps: int = 0
    """Optimizer steps."""
    loss_first: float | None = None
    """Mean loss of the first 10 steps."""
    loss_last: float | None = None
    """Mean loss of the last 10 steps trained (with early stopping, some may come after ``kept_step``)."""
    record_s: float = 0.0
    """Seconds spent recording demonstrations."""
    build_s: float = 0.0
    """Seconds spent building the tiny policy and training it (validations included)."""
    validation: list[dict[str, float]] = field(default_factory=list[dict[str, float]])
    """With ``sft.validation_tasks``: each validation's ``step``, ``success_rate`` and ``seconds``."""
    kept_step: int | None = None
    """With ``sft.validation_tasks``: the step whose policy was kept (the best validation); ``steps`` were
    trained."""


# ---------------------------------------------------------------------- demonstrations


class _Recorder:
    """A rollout client for the cluster whose sessions are played by the expert, recording what the agent sent."""

    def __init__(self, expert: ScriptedPolicy) -> None:
        self.expert = expert
        self.calls: dict[str, list[tuple[list[Msg], list[ToolSchema], ChatResponse]]] = {}

    def open_session(self, session_id: str | None = None) -> str:
        sid = session_id or new_id()
        self.calls[sid] = []
        return sid

    def close_session(self, session_id: str) -> list[Turn]:
        return []

    def model(self, session_id: str) -> ChatModel:
        return _ExpertModel(self, session_id)

    def transcript(self, session_id: str) -> Demonstration | None:
        """The episode as the agent had it: the last call's messages and the final answer; None when the expert
        never answered in text."""
        from agentscope.rl.policy import Demonstration

        calls = self.calls.pop(session_id, [])
        if not calls:
            return None
        messages, tools, response = calls[-1]
        if response.tool_calls:
            return None
        return Demonstration([*messages, response.to_msg("agent")], tools)


class _ExpertModel(ChatModel):
    def __init__(self, recorder: _Recorder, session_id: str) -> None:
        self.recorder = recorder
        self.session_id = session_id
        self.model_name = "expert"

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        step = self.recorder.expert(list(messages))
        if inspect.isawaitable(step):
            step = await step
        response = to_response(step)
        self.recorder.calls[self.session_id].append((list(messages), list(tools or []), response))
        return response


async def record_demonstrations(
    task_set: TaskSet,
    tasks: Sequence[Task],
    env_factory: EnvFactory,
    agent_factory: AgentFactory,
    *,
    budget: int,
    slots: int = 8,
    max_turns: int | None = None,
    step_timeout_s: float | None = 60.0,
) -> tuple[list[Demonstration], int]:
    """Play ``task_set``'s expert on ``tasks`` (in order, ``slots`` at once) through the real environment and
    agent until ``budget`` episodes were solved; returns their transcripts (task order) and the episodes played.

    Raises:
        ConfigError: the task set has no expert.
    """
    if task_set.expert is None:
        raise ConfigError(
            f"sft: task set {task_set.name!r} has no scripted expert to record demonstrations from"
        )
    recorder = _Recorder(task_set.expert())
    cluster = EnvCluster(
        env_factory,
        agent_factory,
        recorder,
        slots=slots,
        step_timeout_s=step_timeout_s,
        max_turns=max_turns,
        model_factory=recorder.model,
    )
    solved: dict[int, Demonstration] = {}
    played = 0
    index_of = {task.id: i for i, task in enumerate(tasks)}

    async def feed() -> AsyncIterator[tuple[Task, str]]:
        for task in tasks:
            if len(solved) >= budget:
                return
            yield task, new_id()

    async def sink(trajectory: Trajectory) -> None:
        nonlocal played
        played += 1
        demo = recorder.transcript(trajectory.trajectory_id)  # the cluster names the session after it
        if trajectory.success and trajectory.status == "ok" and demo is not None:
            solved[index_of[trajectory.task_id]] = demo

    async with cluster:
        await cluster.run(feed(), sink)
    return [solved[i] for i in sorted(solved)][:budget], played


async def _demonstrations(
    config: RLConfig, env_factory: EnvFactory, agent_factory: AgentFactory, report: SFTReport
) -> list[Demonstration]:
    """The warm start's demonstrations: the expert played on ``sft.tasks``, or the task set's transcripts."""
    from agentscope.rl.policy import Demonstration

    spec = config.warm_start_spec()
    assert spec is not None
    task_set = get_task_set(parse_task_spec(spec)[0])
    tasks = await anyio.to_thread.run_sync(load_tasks, spec)
    budget = config.sft.demonstrations
    started = time.perf_counter()
    if task_set.expert is not None:
        demos, played = await record_demonstrations(
            task_set,
            tasks,
            env_factory,
            agent_factory,
            budget=budget,
            slots=config.env.slots,
            max_turns=config.env.max_turns,
            step_timeout_s=config.env.step_timeout_s,
        )
        report.expert_episodes, report.expert_successes = played, len(demos)
    elif task_set.demonstrations is not None:
        system = Msg(role="system", name="agent", content=_sys_prompt(config))
        env = env_factory()
        if inspect.isawaitable(env):
            env = await env
        try:
            tools = (await env.reset(tasks[0])).toolkit.schemas()
        finally:
            await env.close()
        demos = [Demonstration([system, *d], tools) for d in task_set.demonstrations(tasks[:budget])]
    else:
        raise ConfigError(f"sft.tasks: task set {task_set.name!r} has neither an expert nor demonstrations")
    report.record_s = time.perf_counter() - started
    if not demos:
        raise ConfigError(f"sft.tasks: the expert solved none of the {len(tasks)} tasks of {spec!r}")
    report.demonstrations = len(demos)
    return demos


def _sys_prompt(config: RLConfig) -> str:
    prompt = config.agent.kwargs.get("sys_prompt", DEFAULT_SYS_PROMPT)
    return prompt if isinstance(prompt, str) else DEFAULT_SYS_PROMPT


def policy_key(config: RLConfig) -> str:
    """What the initial policy is made from, hashed: it is rebuilt exactly when this changes."""
    material = {
        "version": _KEY_VERSION,
        "policy": config.policy.model_dump(mode="json", exclude={"cache_dir"}),
        # Fields left unset keep the keys that policies made before the fields existed have.
        "sft": config.sft.model_dump(mode="json", exclude=_unset_sft_fields(config)),
        "warm_start_tasks": config.warm_start_spec(),
        "agent": config.agent.model_dump(mode="json"),
        "env": config.env.model_dump(mode="json", include={"name", "factory", "kwargs", "max_turns"}),
        "seed": config.seed,
    }
    if _validates(config):
        # Which policy early stopping keeps depends on how the validation episodes are played (greedy).
        material["validation"] = {
            "rollout": config.rollout.model_dump(mode="json", exclude={"temperature"}),
            "env": config.env.model_dump(mode="json", include={"step_timeout_s", "episode_timeout_s"}),
        }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _validates(config: RLConfig) -> bool:
    """Whether the warm start stops early on ``sft.validation_tasks`` (they are ignored without a warm start)."""
    return config.sft.validation_tasks is not None and config.warm_start_spec() is not None


def _unset_sft_fields(config: RLConfig) -> set[str]:
    unset: set[str] = set()
    if config.sft.threads is None:
        unset.add("threads")
    if not _validates(config):
        unset.update(("validation_tasks", "validate_every", "patience"))
    return unset


def policy_dir(config: RLConfig, run_dir: Path) -> Path:
    """Where the initial policy of ``config`` lives (``DIR/policy_init``, or keyed in ``policy.cache_dir``)."""
    if config.policy.cache_dir:
        return Path(config.policy.cache_dir) / f"policy-{policy_key(config)}"
    return run_dir / POLICY_DIR


async def prepare_policy(
    config: RLConfig,
    run_dir: Path,
    env_factory: EnvFactory,
    agent_factory: AgentFactory,
    *,
    console: Console | None = None,
) -> tuple[Path, SFTReport | None]:
    """The directory of the initial policy, made once: ``policy.path`` as it is, or built (tiny) and/or
    warm-started into :func:`policy_dir`. Returns it and, when it was made or found made, its report. With a
    ``console``, says what it does and shows the warm start's steps as a progress bar.

    Raises:
        UsageError: ``DIR/policy_init`` holds a policy made from another config.
        ConfigError: the warm-start tasks have no expert or demonstrations, or the expert solved none.
    """
    if config.policy.path is not None and not config.sft.steps:
        return Path(config.policy.path), None
    key = policy_key(config)
    target = policy_dir(config, run_dir)
    found = await anyio.to_thread.run_sync(_read_ready, target)
    if found is not None:
        if found.key != key:
            raise UsageError(
                f"{target} holds an initial policy made from another config (policy, sft, agent or env changed): "
                f"remove it or choose another --run-dir"
            )
        if console is not None:
            console.print(f"initial policy: {target} (made before, reused)")
        return target, found
    report = SFTReport(key=key, base=config.policy.path or "tiny", warm_start_tasks=config.warm_start_spec())
    if console is not None and config.sft.steps:
        console.print(
            f"warm start: collecting {config.sft.demonstrations} demonstrations of {config.warm_start_spec()}"
        )
    demos = await _demonstrations(config, env_factory, agent_factory, report) if config.sft.steps else []
    with StepProgress(
        console, "warm start", config.sft.steps if demos else 0, log_every=_LOG_EVERY
    ) as progress:

        def on_step(done: int, loss: float) -> None:
            progress.update(done, f"loss {loss:.3f}")

        await anyio.to_thread.run_sync(_build, config, target, demos, report, on_step, progress.note)
    if console is not None:
        console.print(f"initial policy: {target} ({report.build_s:.0f} s to build)")
    return target, report


_LOG_EVERY = 100
"""Warm-start steps between progress lines when the console is not a terminal (a log file, CI)."""


def _read_ready(target: Path) -> SFTReport | None:
    ready = target / _READY
    if not ready.is_file():
        return None
    try:
        data = json.loads((target / REPORT_FILE).read_text(encoding="utf-8"))
        return SFTReport(**data)
    except (OSError, ValueError, TypeError):
        return SFTReport(key=ready.read_text(encoding="utf-8").strip(), base="?", warm_start_tasks=None)


def _build(
    config: RLConfig,
    target: Path,
    demos: list[Demonstration],
    report: SFTReport,
    on_step: Callable[[int, float], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> None:
    """Build (tiny) and warm-start into a staging directory, then rename it into place (blocking, CPU-heavy), with
    torch's thread count set to ``sft.threads`` (else ``threads``) for the while. ``note`` gets a line per
    validation (with ``sft.validation_tasks``)."""
    with _torch_threads(config.sft.threads or config.threads):
        _build_in_place(config, target, demos, report, on_step, note)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Generator[None]:
    """Run the block with torch's intra-op thread count at ``threads`` (unchanged when None), then restore it.

    The count is per thread under OpenMP, so this affects only the calling thread."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build_in_place(
    config: RLConfig,
    target: Path,
    demos: list[Demonstration],
    report: SFTReport,
    on_step: Callable[[int, float], None] | None,
    note: Callable[[str], None] | None = None,
) -> None:
    started = time.perf_counter()
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        _build_staged(config, target, staging, demos, report, on_step, note, started)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # its name holds our pid: nobody else would remove it
        raise


def _build_staged(
    config: RLConfig,
    target: Path,
    staging: Path,
    demos: list[Demonstration],
    report: SFTReport,
    on_step: Callable[[int, float], None] | None,
    note: Callable[[str], None] | None,
    started: float,
) -> None:
    from transformers import AutoModelForCausalLM

    from agentscope.rl.policy import ChatFormat, build_tiny_policy, load_tokenizer, warm_start

    source: Path = staging
    if config.policy.path is None:
        chat = ChatFormat(tools_style=config.policy.tiny.tools_style)
        corpus = [chat.render(d.messages, d.tools, add_generation_prompt=False) for d in demos]
        tiny = config.policy.tiny.model_copy(
            update={"extra_corpus": [*config.policy.tiny.extra_corpus, *corpus]}
        )
        build_tiny_policy(tiny, staging)
    else:
        source = Path(config.policy.path)
    tokenizer: Any = load_tokenizer(source)
    if demos:
        model: Any = AutoModelForCausalLM.from_pretrained(source)
        stopper = (
            _EarlyStopping(config, model, tokenizer, staging / ".validation", report, note)
            if _validates(config)
            else None
        )
        losses = warm_start(
            model,
            tokenizer,
            demos,
            config.sft.steps,
            lr=config.sft.lr,
            batch_size=config.sft.batch_size,
            seed=config.policy.tiny.seed if config.policy.path is None else config.seed,
            on_step=on_step,
            validate_every=config.sft.validate_every,
            on_validate=stopper,
        )
        if stopper is not None:
            stopper.restore_best()
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        report.steps = len(losses)
        report.loss_first = sum(losses[:10]) / len(losses[:10])
        report.loss_last = sum(losses[-10:]) / len(losses[-10:])
    report.build_s = time.perf_counter() - started
    (staging / REPORT_FILE).write_text(json.dumps(asdict(report), indent=1) + "\n", encoding="utf-8")
    (staging / _READY).write_text(report.key, encoding="utf-8")
    try:
        staging.rename(target)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / _READY).is_file():
            raise


class _EarlyStopping:
    """``warm_start``'s ``on_validate`` for ``sft.validation_tasks``: measures the policy on them (through
    :func:`~agentscope.rl._evaluation.evaluate`, on the event loop that runs the warm start's thread), remembers the
    best weights, and stops after ``sft.patience`` validations without a new best. The best weights are kept as a
    copy in memory (one more model's worth: small for the tiny policy, worth knowing for a large ``policy.path``).
    Validation episodes have the env's timeouts, so on a loaded machine the stopping point can vary."""

    def __init__(
        self,
        config: RLConfig,
        model: Any,
        tokenizer: Any,
        scratch: Path,
        report: SFTReport,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._note = note
        self._model = model
        self._tokenizer = tokenizer
        self._scratch = scratch
        self._report = report
        self._best = -1.0
        self._best_state: dict[str, Any] | None = None
        self._since_best = 0

    def __call__(self, steps_done: int) -> bool:
        from agentscope.rl._evaluation import evaluate

        started = time.perf_counter()
        self._model.save_pretrained(self._scratch)
        self._tokenizer.save_pretrained(self._scratch)
        spec = self._config.sft.validation_tasks
        result = anyio.from_thread.run(
            functools.partial(evaluate, self._config, self._scratch, spec, attempts=1, temperature=0.0)
        )
        success = float(result["success_rate"])
        self._report.validation.append(
            {"step": steps_done, "success_rate": success, "seconds": time.perf_counter() - started}
        )
        if success > self._best:
            self._best, self._since_best = success, 0
            self._best_state = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
            self._report.kept_step = steps_done
        else:
            self._since_best += 1
        stop = self._since_best >= self._config.sft.patience
        if self._note is not None:
            self._note(
                f"warm start: step {steps_done}, validation success {success:.1%} on {spec} "
                f"(best {self._best:.1%} at step {self._report.kept_step})"
                + (f"; stopping: no new best in {self._since_best} validations" if stop else "")
            )
        return stop

    def restore_best(self) -> None:
        """Put the best validated weights back into the model, and remove the scratch copy."""
        if self._best_state is not None:
            self._model.load_state_dict(self._best_state)
        shutil.rmtree(self._scratch, ignore_errors=True)
