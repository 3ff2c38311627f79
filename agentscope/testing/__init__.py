"""Test doubles and helpers for code built on AgentScope.

- :class:`ScriptedModel` answers from a script (a list of steps or a responder) and checks it was used up.
- :class:`FunctionModel` lets a Python function play the model, streaming included.
- :func:`tool_call` and :func:`text_response` build script steps; :func:`to_response` turns any step into the
  :class:`~agentscope.models.ChatResponse` a model returns.

- :class:`OpenAICompatServer` and :class:`AnthropicCompatServer` are real HTTP servers on 127.0.0.1 that play a
  provider from a responder function, for testing anything that talks to a model over HTTP.

Both models record every :class:`ModelRequest` they receive and never touch the network, so they work while
``agentscope.models.ALLOW_MODEL_REQUESTS`` is False.
"""

from agentscope.testing._compat_servers import (
    AnthropicCompatServer,
    ErrorReply,
    OpenAICompatServer,
    RecordedRequest,
    Reply,
    Responder,
    SSEReply,
)
from agentscope.testing._request import ModelRequest, ScriptItem, text_response, to_response, tool_call
from agentscope.testing._scripted import FunctionModel, ModelFunction, ScriptedModel, StreamFunction

__all__ = [
    "AnthropicCompatServer",
    "ErrorReply",
    "FunctionModel",
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
    "text_response",
    "to_response",
    "tool_call",
]
