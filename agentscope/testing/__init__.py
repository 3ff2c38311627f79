"""Test doubles and helpers for code built on AgentScope.

- :class:`ScriptedModel` answers from a script (a list of steps or a responder) and checks it was used up.
- :class:`FunctionModel` lets a Python function play the model, streaming included.
- :func:`tool_call` and :func:`text_response` build script steps; :func:`to_response` turns any step into the
  :class:`~agentscope.models.ChatResponse` a model returns (defined in :mod:`agentscope.models`, where the RL
  experts use them too; re-exported here).

- :class:`OpenAICompatServer` and :class:`AnthropicCompatServer` are real HTTP servers on 127.0.0.1 that play a
  provider from a responder function, for testing anything that talks to a model over HTTP.
- :class:`VirtualTimeEventLoop` and :func:`run_virtual` run real async code on a simulated clock (``sleep``
  returns at once, the clock jumps): schedules of hours, tested in milliseconds; :class:`LatencyModel` draws
  long-tailed delays to inject into simulated or slowed-down environments.
- :data:`TINY_RL_OVERRIDES` makes an RL config (``agentscope.rl.load_config(None, overrides)``) train in seconds on
  one CPU core: for tests of an agent factory or an environment under ``rl train``.

Both models record every :class:`ModelRequest` they receive and never touch the network, so they work while
``agentscope.models.ALLOW_MODEL_REQUESTS`` is False.
"""

from agentscope.models import ScriptItem, text_response, to_response, tool_call
from agentscope.testing._compat_servers import (
    AnthropicCompatServer,
    ErrorReply,
    OpenAICompatServer,
    RecordedRequest,
    Reply,
    Responder,
    SSEReply,
)
from agentscope.testing._latency import LatencyModel
from agentscope.testing._request import ModelRequest
from agentscope.testing._rl import TINY_RL_OVERRIDES
from agentscope.testing._scripted import FunctionModel, ModelFunction, ScriptedModel, StreamFunction
from agentscope.testing._virtual_time import VirtualTimeEventLoop, run_virtual

__all__ = [
    "TINY_RL_OVERRIDES",
    "AnthropicCompatServer",
    "ErrorReply",
    "FunctionModel",
    "LatencyModel",
    "ModelFunction",
    "ModelRequest",
    "OpenAICompatServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "SSEReply",
    "ScriptItem",
    "ScriptedModel",
    "StreamFunction",
    "VirtualTimeEventLoop",
    "run_virtual",
    "text_response",
    "to_response",
    "tool_call",
]
