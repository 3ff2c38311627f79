"""The rollout service: the current policy served as chat, every turn recorded as token ids and log-probs.

- :class:`RolloutEngine` is the engine seam (token ids in, :class:`Generation` out, weights replaceable while it
  runs); :class:`TorchEngine` is the embedded one: in-process PyTorch with a KV cache and continuous batching.
- :class:`RolloutService` adds chat and token-in/token-out sessions: turn t+1's prompt ids begin with exactly turn
  t's prompt + completion ids; :meth:`RolloutService.close_session` returns the episode's turns.
- :class:`RolloutChatModel` is the :class:`~agentscope.models.ChatModel` an agent gets in training;
  :func:`create_rollout_app` and :class:`RolloutHTTPServer` serve the same over OpenAI-compatible HTTP.

``import agentscope.rl.rollout`` stays light: :class:`TorchEngine` loads torch on first access, the HTTP app
loads fastapi when it is created.
"""

from __future__ import annotations

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.rl.rollout._http import RolloutHTTPServer, create_rollout_app, messages_from_openai
from agentscope.rl.rollout._model import RolloutChatModel
from agentscope.rl.rollout._service import RolloutService
from agentscope.rl.rollout._types import FinishReason, Generation, RolloutEngine, SamplingParams

if _typing.TYPE_CHECKING:
    from agentscope.rl.rollout._engine import TorchEngine

__all__ = [
    "FinishReason",
    "Generation",
    "RolloutChatModel",
    "RolloutEngine",
    "RolloutHTTPServer",
    "RolloutService",
    "SamplingParams",
    "TorchEngine",
    "create_rollout_app",
    "messages_from_openai",
]

__getattr__ = _lazy_exports(__name__, {"TorchEngine": "_engine"}, extras={"_engine": "rl"})
