"""The rollout service: the current policy served as chat, every turn recorded as token ids and log-probs.

- :class:`RolloutEngine` is the engine seam (token ids in, :class:`Generation` out, weights replaceable while it
  runs); :class:`TorchEngine` is the embedded one: in-process PyTorch with a KV cache and continuous batching.
- :class:`RolloutService` adds chat and token-in/token-out sessions: turn t+1's prompt ids begin with exactly turn
  t's prompt + completion ids; :meth:`RolloutService.close_session` returns the episode's turns.
- :class:`RolloutRouter` puts several services behind one front: sessions stay on the server that holds their
  tokens, new ones go to the least loaded server with the newest weights.
- :class:`WeightPublisher` writes each policy version once (safetensors); :class:`RemoteRolloutServer` keeps a
  rollout server in another process in sync through its ``POST /weights`` route.
- :class:`VLLMEngine` is a vLLM server behind the engine seam (its HTTP API: token ids, log-probs of the sampling
  distribution, weight reloads in development mode); :class:`VLLMServer` starts one in a subprocess.
- :class:`SGLangEngine` is an SGLang server behind the same seam (its native ``/generate`` with token ids and
  log-probs, weight reloads from disk).
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
from agentscope.rl.rollout._remote import RemoteRolloutServer
from agentscope.rl.rollout._router import RolloutRouter, RolloutServer
from agentscope.rl.rollout._service import RolloutService
from agentscope.rl.rollout._types import FinishReason, Generation, RolloutEngine, SamplingParams
from agentscope.rl.rollout._weights import WeightPublisher, load_weights, weights_from_bytes

if _typing.TYPE_CHECKING:
    from agentscope.rl.rollout._engine import TorchEngine
    from agentscope.rl.rollout._sglang import SGLangEngine
    from agentscope.rl.rollout._vllm import VLLMEngine
    from agentscope.rl.rollout._vllm_server import VLLMServer

__all__ = [
    "FinishReason",
    "Generation",
    "RemoteRolloutServer",
    "RolloutChatModel",
    "RolloutEngine",
    "RolloutHTTPServer",
    "RolloutRouter",
    "RolloutServer",
    "RolloutService",
    "SGLangEngine",
    "SamplingParams",
    "TorchEngine",
    "VLLMEngine",
    "VLLMServer",
    "WeightPublisher",
    "create_rollout_app",
    "load_weights",
    "messages_from_openai",
    "weights_from_bytes",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "SGLangEngine": "_sglang",
        "TorchEngine": "_engine",
        "VLLMEngine": "_vllm",
        "VLLMServer": "_vllm_server",
    },
    extras={"_engine": "rl"},
)
