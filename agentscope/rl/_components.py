"""A run's parts built from an :class:`~agentscope.rl.RLConfig`, shared by ``rl train``, ``rl sft`` and ``rl eval``.

The user's code named in the config (``env.factory`` or the task set's environment, ``agent.factory``), the rollout
service over the policy, the environment cluster whose agents talk to it, and the scheduler's port onto the real
trainer; with the torch side loaded in worker threads (importing torch and transformers, the tokenizer, the model),
so that the event loop never waits on file reads.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread

from agentscope._loading import LoadError, load_object
from agentscope.agents import AgentBase, build_agent, load_agent_factory
from agentscope.exceptions import ConfigError, UsageError
from agentscope.models import ChatModel
from agentscope.rl._config import RLConfig
from agentscope.rl._types import Trajectory
from agentscope.rl.envs import AgentFactory, EnvCluster, EnvFactory
from agentscope.rl.tasks import get_task_set, parse_task_spec
from agentscope.tools import Toolkit

if TYPE_CHECKING:
    from agentscope.rl.rollout import RolloutEngine, RolloutServer, RolloutService, WeightPublisher
    from agentscope.rl.trainer import Trainer, VerlFSDPTrainer

__all__ = [
    "TorchTrainer",
    "build_agent_factory",
    "build_env_cluster",
    "build_env_factory",
    "build_rollout",
    "build_rollout_engine",
    "build_rollout_service",
    "build_trainer",
    "import_heavy",
    "import_object",
    "load_policy_model",
    "load_policy_tokenizer",
    "set_torch_threads",
]


# ---------------------------------------------------------------------- the user's code named in the config


def import_object(spec: str, what: str) -> Any:
    """``module:attribute`` (or ``file.py:attribute``) → the object (raises ConfigError naming ``what``, the
    config field)."""
    try:
        return load_object(spec)
    except LoadError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


def build_env_factory(config: RLConfig) -> EnvFactory:
    """The environment factory: ``env.factory``, or the environment of the task set (``env.name`` or the training
    tasks'), with ``env.kwargs`` bound."""
    kwargs = dict(config.env.kwargs)
    if config.env.factory is not None:
        target = import_object(config.env.factory, "env.factory")
    else:
        name = config.env.name or parse_task_spec(config.tasks)[0]
        try:
            target = get_task_set(name).env
        except ValueError as exc:
            raise ConfigError(f"env.name: {exc}") from None
    if not callable(target):
        raise ConfigError(f"env: {target!r} is not callable")
    return cast(EnvFactory, functools.partial(target, **kwargs))


def build_agent_factory(config: RLConfig) -> AgentFactory:
    """The agent factory ``agent.factory`` (an agent spec: ``module:NAME`` or ``path/to/file.py[:NAME]``) as the
    cluster calls it: ``factory(model=..., toolkit=...)`` builds the agent through
    :func:`~agentscope.agents.build_agent` with ``model``, ``toolkit`` and ``agent.kwargs`` (each passed when the
    factory declares it).

    Loads the user's code (file reads): call it from a worker thread in async code.

    Raises:
        ConfigError: the spec does not name an agent factory, ``agent.kwargs`` holds an argument the factory does
            not take, or the factory requires one that neither the cluster nor ``agent.kwargs`` gives.
    """
    spec = config.agent.factory
    try:
        target = load_agent_factory(spec)
    except UsageError as exc:
        raise ConfigError(f"agent.factory: {exc}") from None
    kwargs: dict[str, object] = dict(config.agent.kwargs)
    _check_agent_kwargs(spec, target, kwargs)

    async def agent_factory(*, model: ChatModel, toolkit: Toolkit) -> AgentBase:
        return await build_agent(target, model=model, toolkit=toolkit, **kwargs)

    return agent_factory


def _check_agent_kwargs(spec: str, factory: AgentFactory, kwargs: dict[str, object]) -> None:
    """Fail at load time, not in every episode: ``agent.kwargs`` the factory does not take (a typo would be lost
    silently) and parameters it requires that nobody gives."""
    reserved = sorted({"model", "toolkit"} & set(kwargs))
    if reserved:
        raise ConfigError(
            f"agent.kwargs: {', '.join(reserved)} is given by training itself (the policy, the tools)"
        )
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return  # nothing to check against; build_agent passes everything
    takes = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        unknown = sorted(set(kwargs) - takes)
        if unknown:
            raise ConfigError(
                f"agent.kwargs: {', '.join(unknown)} not taken by {spec} (it takes: {', '.join(sorted(takes))})"
            )
    given = {"model", "toolkit", *kwargs}
    required = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and p.name not in given
    ]
    if required:
        raise ConfigError(
            f"agent.factory: {spec} requires {', '.join(required)}, which training does not give (it gives model, "
            "toolkit and agent.kwargs); set them in agent.kwargs or give them defaults"
        )


# ---------------------------------------------------------------------- the port onto the real trainer


class TorchTrainer:
    """The scheduler's TrainerPort over :class:`~agentscope.rl.trainer.Trainer` or the ``verl_fsdp`` backend's
    trainer (torch runs in worker threads)."""

    def __init__(self, trainer: Trainer | VerlFSDPTrainer, threads: int | None) -> None:
        self.trainer = trainer
        self.threads = threads

    def _threads(self) -> None:
        set_torch_threads(self.threads)

    async def train(self, batch: list[Trajectory], *, step: int) -> dict[str, float]:
        def run() -> dict[str, float]:
            self._threads()
            return self.trainer.step(batch, step=step)

        return await anyio.to_thread.run_sync(run)

    async def weights(self) -> Any:
        return await anyio.to_thread.run_sync(self.trainer.weights_for_rollout)


def build_trainer(config: RLConfig, model: Any, tokenizer: Any, model_dir: Path) -> Trainer | VerlFSDPTrainer:
    """The trainer of ``trainer.backend`` over ``model`` (loaded from ``model_dir``): the torch backend's
    :class:`~agentscope.rl.trainer.Trainer`, or verl's FSDP actor worker (``verl_fsdp``: it loads its own copy
    from ``model_dir`` and copies the trained weights into ``model`` after each update). Synchronous: call it from
    a worker thread."""
    if config.trainer.backend == "verl_fsdp":
        from agentscope.rl.trainer import VerlFSDPTrainer

        return VerlFSDPTrainer(
            model,
            tokenizer,
            config.trainer,
            model_dir=model_dir,
            group_size=config.data.group_size,
            batch_groups=config.data.batch_groups,
            seed=config.seed,
            threads=config.threads,
        )
    from agentscope.rl.trainer import Trainer

    return Trainer(model, tokenizer, config.trainer)  # a reference copy when kl_coef > 0


# ---------------------------------------------------------------------- the torch side, in worker threads


def import_heavy() -> None:
    """Import the torch side (in a worker thread: importing torch, transformers and verl reads many files)."""
    for name in (
        "transformers",
        "agentscope.rl.trainer._trainer",
        "agentscope.rl.trainer._checkpoint",
        "agentscope.rl.rollout._engine",
    ):
        importlib.import_module(name)


def set_torch_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads for this process (None: torch's default)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


async def load_policy_tokenizer(model_dir: Path, threads: int | None) -> Any:
    """The tokenizer of the policy in ``model_dir``."""

    def load() -> Any:
        from agentscope.rl.policy import load_tokenizer

        set_torch_threads(threads)
        return load_tokenizer(model_dir)

    return await anyio.to_thread.run_sync(load)


async def load_policy_model(model_dir: Path, threads: int | None) -> tuple[Any, Any]:
    """The policy (for the trainer) and its tokenizer."""
    tokenizer = await load_policy_tokenizer(model_dir, threads)

    def load() -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_dir)

    return await anyio.to_thread.run_sync(load), tokenizer


# ---------------------------------------------------------------------- the rollout service and the environments


def build_rollout_service(
    config: RLConfig,
    model_dir: Path,
    tokenizer: Any,
    version: int,
    *,
    index: int = 0,
    weights: WeightPublisher | None = None,
) -> RolloutService:
    """The rollout service over the policy in ``model_dir``, serving policy ``version`` with the engine of
    ``rollout.engine`` (:func:`build_rollout_engine`); ``index`` numbers the servers of a run (each samples from its
    own seed; server 0 from ``seed``; each talks to its own vLLM or SGLang server); ``weights`` is where the
    versions of a run are published (an engine behind HTTP reloads them from there; None: never updated)."""
    from agentscope.rl.rollout import RolloutService, SamplingParams

    engine = build_rollout_engine(config, model_dir, tokenizer, version, index=index, weights=weights)
    params = SamplingParams(
        max_tokens=config.rollout.max_tokens,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
    )
    return RolloutService(engine, tokenizer, default_params=params)


def build_rollout_engine(
    config: RLConfig,
    model_dir: Path,
    tokenizer: Any,
    version: int,
    *,
    index: int = 0,
    weights: WeightPublisher | None = None,
) -> RolloutEngine:
    """The engine of rollout server ``index`` (``rollout.engine``): the embedded TorchEngine; a
    :class:`~agentscope.rl.rollout.VLLMEngine` for the server at ``rollout.engine_url[index]``, or for a
    :class:`~agentscope.rl.rollout.VLLMServer` on ``model_dir`` that the engine launches at start and stops at
    stop; or an :class:`~agentscope.rl.rollout.SGLangEngine` for the server at ``rollout.engine_url[index]``. A
    server at ``engine_url`` loads ``model_dir``'s weights when the engine starts (it may have been started on
    another checkpoint, or the run resumes)."""
    rollout = config.rollout
    if rollout.engine == "sglang":
        from agentscope.rl.rollout import SGLangEngine

        return SGLangEngine(
            rollout.engine_url[index],
            weights=weights,
            version=version,
            timeout_s=rollout.engine_timeout_s,
            max_batch=rollout.max_batch,
            initial_weights=model_dir.absolute(),
        )
    if rollout.engine == "vllm":
        from agentscope.rl.rollout import VLLMEngine, VLLMServer

        if rollout.engine_url:
            return VLLMEngine(
                rollout.engine_url[index],
                model=rollout.engine_model,
                weights=weights,
                version=version,
                timeout_s=rollout.engine_timeout_s,
                max_batch=rollout.max_batch,
                initial_weights=model_dir.absolute(),
            )
        args = list(rollout.engine_args)
        if "--max-num-seqs" not in args:
            args += ["--max-num-seqs", str(rollout.max_batch)]
        if "--max-model-len" not in args:
            args += ["--max-model-len", str(rollout.max_seq_len)]
        server = VLLMServer(
            model_dir,
            python=rollout.engine_python or sys.executable,
            args=args,
            env=rollout.engine_env,
            log_path=weights.root.parent / "logs" / f"vllm-{index}.log" if weights is not None else None,
            startup_timeout_s=rollout.engine_timeout_s,
        )
        return VLLMEngine(
            server.base_url,
            model=server.served_model_name,
            weights=weights,
            version=version,
            timeout_s=rollout.engine_timeout_s,
            max_batch=rollout.max_batch,
            server=server,
        )
    from agentscope.rl._device import resolve_device, resolve_dtype
    from agentscope.rl.rollout import TorchEngine

    device = resolve_device(rollout.device, "rollout.device")
    return TorchEngine(
        model_dir,
        tokenizer=tokenizer,
        max_batch=rollout.max_batch,
        max_seq_len=rollout.max_seq_len,
        device=str(device),
        dtype=resolve_dtype(rollout.dtype, device),
        version=version,
        num_threads=rollout.threads,
        seed=config.seed + _SERVER_SEED_STRIDE * index,
    )


_SERVER_SEED_STRIDE = 1_000_003
"""Seed offset between servers: two engines with one seed would give the same draws to their n-th requests (a
group's members on different servers could sample the same completion)."""


def build_rollout(
    config: RLConfig, model_dir: Path, tokenizer: Any, version: int, root: Path | None = None
) -> tuple[RolloutServer, list[RolloutServer]]:
    """The ``rollout.servers`` rollout servers of a run, and what the agents talk to: the one server, or a
    :class:`~agentscope.rl.rollout.RolloutRouter` over several. With ``rollout.backend: process`` each server is a
    :class:`~agentscope.rl._rollout_process.ProcessRolloutServer` (entering it starts the process), which needs
    the run directory ``root`` (its ``config.yaml``; weights go to ``root/weights``, server logs to
    ``root/logs``)."""
    from agentscope.rl.rollout import RolloutRouter

    servers: list[RolloutServer]
    if config.rollout.backend == "ray":
        from agentscope.rl._files import WEIGHTS_DIR
        from agentscope.rl._rollout_ray import RayRolloutServer
        from agentscope.rl.rollout import WeightPublisher

        if root is None:
            raise UsageError("rollout.backend: ray needs the run directory")
        publisher = WeightPublisher(root / WEIGHTS_DIR)
        servers = [
            RayRolloutServer(
                config, model_dir, index=i, version=version, publisher=publisher, tokenizer=tokenizer
            )
            for i in range(config.rollout.servers)
        ]
    elif config.rollout.backend == "process":
        from agentscope.rl._files import CONFIG_FILE, WEIGHTS_DIR
        from agentscope.rl._rollout_process import ProcessRolloutServer
        from agentscope.rl.rollout import WeightPublisher

        if root is None:
            raise UsageError("rollout.backend: process needs the run directory")
        publisher = WeightPublisher(root / WEIGHTS_DIR)
        servers = [
            ProcessRolloutServer(
                root / CONFIG_FILE,
                model_dir,
                index=i,
                version=version,
                publisher=publisher,
                tokenizer=tokenizer,
                log_path=root / "logs" / f"rollout-server-{i}.log",
            )
            for i in range(config.rollout.servers)
        ]
    else:
        publisher: WeightPublisher | None = None
        if config.rollout.engine != "torch":  # the engines behind HTTP reload the versions from files
            from agentscope.rl._files import WEIGHTS_DIR
            from agentscope.rl.rollout import WeightPublisher

            if root is None:
                raise UsageError(f"rollout.engine: {config.rollout.engine} needs the run directory")
            publisher = WeightPublisher(root / WEIGHTS_DIR)
        servers = [
            build_rollout_service(config, model_dir, tokenizer, version, index=i, weights=publisher)
            for i in range(config.rollout.servers)
        ]
    return (servers[0] if len(servers) == 1 else RolloutRouter(servers)), servers


def build_env_cluster(
    config: RLConfig,
    service: RolloutServer,
    env_factory: EnvFactory,
    agent_factory: AgentFactory,
) -> EnvCluster:
    """The environment cluster of ``config``, its agents talking to ``service`` (one, or a router)."""
    from agentscope.rl.rollout import RolloutChatModel

    return EnvCluster(
        env_factory,
        agent_factory,
        service,
        slots=config.env.slots,
        step_timeout_s=config.env.step_timeout_s,
        episode_timeout_s=config.env.episode_timeout_s,
        max_turns=config.env.max_turns,
        model_factory=lambda sid: RolloutChatModel(service, sid),
    )
