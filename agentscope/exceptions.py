"""The exceptions AgentScope raises, and the ones tool authors raise to steer the agent.

Run failures (something outside your code went wrong; catch these)::

    AgentScopeError
    ├── ModelError                 a model call failed
    │   ├── ContextLengthExceeded  the conversation no longer fits the context window
    │   ├── ModelHTTPError         the provider answered with an error status (has ``status_code``, ``body``)
    │   ├── ModelTimeoutError      no answer within the timeout, retries exhausted
    │   ├── ModelConnectionError   could not reach the provider, retries exhausted
    │   └── ModelResponseError     the provider's answer could not be understood
    ├── ToolError                  a tool call failed (normally reported to the model, not raised)
    │   ├── ToolNotFoundError
    │   ├── ToolArgumentsError
    │   └── ToolTimeoutError
    ├── SandboxError               a sandbox could not be started or used
    ├── SessionError               a session or memory store could not be read or written
    └── ConfigError                a configuration is invalid (names the field)

Control flow for tool authors (raise these inside a tool)::

    ModelRetry          the model sees the message as a tool error and may try again
    ApprovalRequired    the agent stops and returns, waiting for a human to approve the call

Misuse errors (a bug in the calling code; do not catch these)::

    UsageError(RuntimeError)
    └── ModelRequestsBlockedError  a real model request was made while ``ALLOW_MODEL_REQUESTS`` is False
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AgentScopeError",
    "ApprovalRequired",
    "ConfigError",
    "ContextLengthExceeded",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelRequestsBlockedError",
    "ModelResponseError",
    "ModelRetry",
    "ModelTimeoutError",
    "SandboxError",
    "SessionError",
    "ToolArgumentsError",
    "ToolError",
    "ToolNotFoundError",
    "ToolTimeoutError",
    "UsageError",
]


class AgentScopeError(Exception):
    """Root of every run failure AgentScope raises."""


class ModelError(AgentScopeError):
    """A model call failed."""


class ContextLengthExceeded(ModelError):
    """The conversation no longer fits the model's context window: its prompt leaves no room to generate.

    Not a failure of the model's server: the episode (or the conversation) has simply run out of room, as it runs
    out of steps at ``max_iters``. The RL environment cluster ends such an episode as ``truncated`` and judges what
    the agent had done; OpenAI-compatible servers signal it with the error code :attr:`OPENAI_CODE`, Anthropic's
    API with an ``invalid_request_error`` that starts with one of :attr:`ANTHROPIC_MESSAGES`."""

    OPENAI_CODE: ClassVar[str] = "context_length_exceeded"
    """The ``error.code`` of OpenAI's (and compatible servers') HTTP 400 answer to a prompt that does not fit."""
    ANTHROPIC_MESSAGES: ClassVar[tuple[str, ...]] = (
        "prompt is too long",
        "input length and `max_tokens` exceed",
    )
    """How the message of Anthropic's HTTP 400 answer starts when the prompt does not fit (``prompt is too long:
    208310 tokens > 200000 maximum``), or leaves no room for ``max_tokens`` (``input length and `max_tokens` exceed
    context limit: 197000 + 8192 > 200000``)."""


class ModelHTTPError(ModelError):
    """The provider answered with an error status."""

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        """HTTP status the provider returned."""
        self.body = body
        """Response body (truncated), useful to see the provider's own error message."""


class ModelTimeoutError(ModelError):
    """The provider did not answer within the timeout, and retries are exhausted."""


class ModelConnectionError(ModelError):
    """The provider could not be reached, and retries are exhausted."""


class ModelResponseError(ModelError):
    """The provider's answer could not be understood."""


class ToolError(AgentScopeError):
    """A tool call failed. The agent reports these to the model as tool errors rather than raising them."""


class ToolNotFoundError(ToolError):
    """The model asked for a tool that is not registered or whose group is switched off."""


class ToolArgumentsError(ToolError):
    """The arguments did not parse or did not match the tool's schema."""


class ToolTimeoutError(ToolError):
    """The tool did not finish within its timeout."""


class SandboxError(AgentScopeError):
    """A sandbox could not be started or used."""


class SessionError(AgentScopeError):
    """A session or memory store could not be read or written."""


class ConfigError(AgentScopeError):
    """A configuration is invalid. The message names the offending field."""


class ModelRetry(Exception):
    """Raise inside a tool to send ``message`` back to the model as a tool error, so it can try again.

    The model sees exactly ``message`` as the tool's output, marked as an error. The run goes on.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApprovalRequired(Exception):
    """Raise inside a tool to stop the agent until a human approves the call.

    The model sees nothing yet: the agent ends its reply with ``metadata["approval_required"]`` naming the pending
    call; reply again with the decision to continue.
    """

    def __init__(self, reason: str = "this tool call needs human approval") -> None:
        super().__init__(reason)
        self.reason = reason


class UsageError(RuntimeError):
    """AgentScope was used in a way it does not support. This is a bug in the calling code."""


class ModelRequestsBlockedError(UsageError):
    """A model request was attempted while ``agentscope.models.ALLOW_MODEL_REQUESTS`` is False (as in tests)."""
