"""The shared vocabulary of models, tools and codecs: what goes into a model call and what comes out of one.

These types sit on the ground floor, next to :mod:`agentscope.message`, because every layer above speaks them:
the wire codecs (:mod:`agentscope.formatters`) build :class:`ChatResponse` and :class:`ToolSchema`, the model
clients (:mod:`agentscope.models`) take and return them, the toolkit (:mod:`agentscope.tools`) describes its
tools with :class:`ToolSchema` and returns :class:`ToolResponse`, and the events (:mod:`agentscope.events`)
carry both. This module imports nothing of ours but :mod:`agentscope.message`; ``agentscope.models`` and
``agentscope.tools`` re-export each name, so ``from agentscope.models import ChatResponse`` keeps working.

:class:`ApprovalDecision` is a human's decision on a tool call waiting for approval (a ReActAgent takes a list of
them; ``agentscope serve`` parses them from the request's ``agentscope.approvals``).

The hook vocabulary lives here too: :data:`HookType` (where an agent runs hooks), :class:`HookPayloads` (what
each hook type's hooks receive and may return in its place), :class:`ReplyArguments` (the ``pre_reply`` payload)
and the generic :data:`Hook` callable. ``agentscope.agents`` re-exports them, and ``AgentBase.register_hook`` is
typed with them, so a type checker rejects a hook whose signature does not fit its hook type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal, NotRequired, Self, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from typing_extensions import TypedDict  # `extra_items` (PEP 728) for ReplyArguments

from agentscope.message import ContentBlock, ImageBlock, Msg, TextBlock, ToolResultBlock, ToolUseBlock

__all__ = [
    "ApprovalDecision",
    "ChatResponse",
    "ChatUsage",
    "Hook",
    "HookPayloads",
    "HookType",
    "ModelSettings",
    "ReplyArguments",
    "ResponseFormat",
    "ToolChoice",
    "ToolResponse",
    "ToolSchema",
]

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | str
"""``auto`` (the model decides), ``none``, ``required`` (some tool), or the name of the one tool to call."""

ResponseFormat: TypeAlias = type[BaseModel] | dict[str, Any]
"""A pydantic model class, or a JSON schema, that the reply must match."""


class ModelSettings(TypedDict, total=False):
    """Sampling and transport settings; each client maps them to its provider's names."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: list[str]
    seed: int
    timeout_s: float
    parallel_tool_calls: bool
    extra_body: dict[str, Any]
    """Merged verbatim into the request body, for provider-specific options."""


class ToolSchema(BaseModel):
    """A tool as the model sees it: provider-neutral; formatters translate it."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Tool name the model calls."""
    description: str = ""
    """What the tool does, written for the model."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema of the arguments object."""


class ChatUsage(BaseModel):
    """Token accounting for one model call."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ChatResponse(BaseModel):
    """One complete model answer.

    The token fields are filled only by backends that return them (vLLM-style servers and AgentScope's rollout
    service); they are passed through untouched, because RL training depends on exactly these ids.
    """

    content: list[ContentBlock] = Field(default_factory=list[ContentBlock])
    """Text, thinking and tool-use blocks, in the order the model produced them."""
    usage: ChatUsage | None = None
    """Token counts, when the provider reports them."""
    finish_reason: str | None = None
    """Why generation stopped: ``stop``, ``length``, ``tool_calls``, ..."""
    id: str | None = None
    """Provider's response id."""
    model: str | None = None
    """Model that answered, as the provider names it."""
    prompt_token_ids: list[int] | None = None
    """Token ids of the prompt as the backend tokenized it."""
    completion_token_ids: list[int] | None = None
    """Token ids the policy generated."""
    logprobs: list[float] | None = None
    """Log-probability of each generated token, aligned with ``completion_token_ids``."""
    policy_version: int | None = None
    """Version of the policy weights that generated the completion (rollout service)."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Backend-specific extras."""

    @property
    def text(self) -> str:
        """All text blocks joined."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        """The tool calls requested, in order."""
        return [b for b in self.content if isinstance(b, ToolUseBlock)]

    def to_msg(self, name: str | None = None) -> Msg:
        """This response as an assistant message."""
        return Msg(role="assistant", name=name, content=list(self.content))


class ToolResponse(BaseModel):
    """A tool's output: content the model sees, plus optional structured data for programs.

    A tool may return a ``ToolResponse`` directly, or anything the toolkit converts to one: a string (text),
    an :class:`ImageBlock`, a pydantic model, or JSON-compatible data (shown to the model as JSON and kept in
    ``structured``). A streaming tool (a generator or async generator) yields several; each is one piece of
    the output.
    """

    model_config = ConfigDict(extra="forbid")

    content: list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = Field(
        default_factory=list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]
    )
    """Text and images shown to the model."""
    structured: JsonValue = None
    """Machine-readable result, when the tool produced one."""
    is_error: bool = False
    """True when the output describes a failure."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Extra data for hooks and traces; never shown to the model."""

    @classmethod
    def text(cls, text: str, *, is_error: bool = False) -> ToolResponse:
        """A response holding one text block."""
        return cls(content=[TextBlock(text=text)], is_error=is_error)

    @property
    def text_content(self) -> str:
        """All text blocks joined."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


class ApprovalDecision(BaseModel):
    """A human's decision on one tool call that waits for approval (see ``ReActAgent.reply(decisions=...)``).

    - ``approve``: run the call as the model wrote it.
    - ``edit``: run it with ``arguments`` instead, checked against the tool's schema first (arguments that do not
      fit are refused before anything runs). The model sees the result prefixed with a note giving the arguments
      the human chose, since its own call in the conversation still shows the original ones.
    - ``reject``: never run it; the model sees an error result, "A human refused this call: <reason>".

    ``reason`` is optional; for ``approve`` and ``edit`` the model sees it in the note before the result.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: str = Field(min_length=1)
    """Id of the waiting call, as listed in the paused reply's ``metadata["approval_required"]``."""
    action: Literal["approve", "edit", "reject"]
    """What to do with the call."""
    arguments: dict[str, JsonValue] | None = None
    """The arguments to run the call with: required for ``edit``, not allowed otherwise."""
    reason: str | None = None
    """Why, in the human's words; the model sees it."""

    @model_validator(mode="after")
    def _arguments_only_for_edit(self) -> Self:
        if self.action == "edit" and self.arguments is None:
            raise ValueError(
                f"action 'edit' of call {self.call_id!r} needs the new 'arguments' (a JSON object)"
            )
        if self.action != "edit" and self.arguments is not None:
            raise ValueError(
                f"'arguments' are only for action 'edit'; call {self.call_id!r} has action {self.action!r}"
            )
        return self


# ---------------------------------------------------------------------------------------------------- hooks

HookType: TypeAlias = Literal[
    "pre_reply", "post_reply", "pre_reasoning", "post_reasoning", "pre_acting", "post_acting", "pre_observe"
]
"""Points in an agent's work where hooks run (the keys of :class:`HookPayloads`)."""


class ReplyArguments(TypedDict, extra_items=Any):
    """The ``pre_reply`` payload: the keyword arguments the reply will be called with.

    ``msg`` is always there (None to continue without a new message); the other keys are present only when the
    caller passed them. The optional keys are those :class:`~agentscope.agents.ReActAgent` reads; an agent
    of your own may take any other keyword (typed ``Any`` here). A hook may change the dict in place or return
    a new one.
    """

    msg: Msg | Sequence[Msg] | None
    """The message (or messages) to reply to."""
    structured_model: NotRequired[type[BaseModel] | None]
    """ReActAgent: the pydantic model the answer must fill."""
    approve: NotRequired[Sequence[str]]
    """ReActAgent: ids of the tool calls waiting for approval that the human approves."""
    deny: NotRequired[Sequence[str]]
    """ReActAgent: ids of the tool calls waiting for approval that the human denies."""
    decisions: NotRequired[Sequence[ApprovalDecision]]
    """ReActAgent: the human's decision (approve, edit, reject) on each tool call waiting for approval."""


class HookPayloads(TypedDict):
    """Hook type -> the payload its hooks receive, and may return in its place.

    A table for readers and type checkers, never instantiated: ``typing.get_type_hints(HookPayloads)`` reads it
    at run time, and ``AgentBase.register_hook`` has one overload per row. The payload is the object the agent
    goes on with, not a copy: a hook that returns None keeps it (changes made in place included), one that returns
    a value replaces it for the next hook and for the agent.
    """

    pre_reply: ReplyArguments
    """Before the reply starts: the reply's keyword arguments, ``msg`` included."""
    post_reply: Msg
    """After the reply: the reply message, before it is returned and broadcast."""
    pre_reasoning: list[Msg]
    """Before each model call: the messages about to be sent (system prompt first, when there is one)."""
    post_reasoning: ChatResponse
    """After each model call: the model's response, before the agent acts on it."""
    pre_acting: ToolUseBlock
    """Before each tool call: the call about to run."""
    post_acting: ToolResultBlock
    """After each tool call: its result, before it goes into memory."""
    pre_observe: Msg
    """Before an observed message (a MsgHub broadcast) goes into memory: that message."""


_AgentT = TypeVar("_AgentT")
_PayloadT = TypeVar("_PayloadT")

Hook: TypeAlias = Callable[[_AgentT, _PayloadT], _PayloadT | Awaitable[_PayloadT | None] | None]
"""A hook: ``(agent, payload) -> payload | None``, a plain function or a coroutine function.

``Hook[ReActAgent, ToolUseBlock]`` is a ``pre_acting`` hook of a ReActAgent (see :class:`HookPayloads` for each
hook type's payload). Returning None keeps the payload; returning a value replaces it.
"""
