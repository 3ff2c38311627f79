"""A run's parts built from an :class:`~agentscope.rl.RLConfig`, shared by ``rl train``, ``rl sft`` and ``rl eval``.

The user's code named in the config (``env.factory`` or the task set's environment, ``agent.factory``), the rollout
service over the policy, the environment cluster whose agents talk to it, and the scheduler's port onto the real
trainer; with the torch side loaded in worker threads (importing torch and transformers, the tokenizer, the model),
so that the event loop never waits on file reads.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread

from agentscope._loading import LoadError, load_object
from agentscope.exceptions import ConfigError
from agentscope.rl._config import RLConfig
from agentscope.rl._types import Trajectory
from agentscope.rl.envs import AgentFactory, EnvCluster, EnvFactory
from agentscope.rl.tasks import get_task_set, parse_task_spec

if TYPE_CHECKING:
    from agentscope.rl.rollout import RolloutService
    from agentscope.rl.trainer import Trainer

__all__ = [
    "TorchTrainer",
    "build_agent_factory",
    "build_env_cluster",
    "build_env_factory",
    "build_rollout_service",
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
    """The agent factory ``agent.factory``, with ``agent.kwargs`` bound."""
    target = import_object(config.agent.factory, "agent.factory")
    if not callable(target):
        raise ConfigError(f"agent.factory: {config.agent.factory} is not callable")
    return cast(AgentFactory, functools.partial(target, **config.agent.kwargs))


# ---------------------------------------------------------------------- the port onto the real trainer


class TorchTrainer:
    """The scheduler's TrainerPort over :class:`~agentscope.rl.trainer.Trainer` (torch runs in worker threads)."""

    def __init__(self, trainer: Trainer, threads: int | None) -> None:
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


def build_rollout_service(config: RLConfig, model_dir: Path, tokenizer: Any, version: int) -> RolloutService:
    """The rollout service over the policy in ``model_dir`` (its engine loads the weights), serving policy
    ``version``."""
    from agentscope.rl.rollout import RolloutService, SamplingParams, TorchEngine

    engine = TorchEngine(
        model_dir,
        tokenizer=tokenizer,
        max_batch=config.rollout.max_batch,
        max_seq_len=config.rollout.max_seq_len,
        version=version,
        num_threads=config.rollout.threads,
        seed=config.seed,
    )
    params = SamplingParams(
        max_tokens=config.rollout.max_tokens,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
    )
    return RolloutService(engine, tokenizer, default_params=params)


def build_env_cluster(
    config: RLConfig, service: RolloutService, env_factory: EnvFactory, agent_factory: AgentFactory
) -> EnvCluster:
    """The environment cluster of ``config``, its agents talking to ``service``."""
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
