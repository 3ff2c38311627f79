"""RolloutChatModel: the ChatModel an agent is given during training (an in-process rollout-service client)."""

from __future__ import annotations

from collections.abc import Sequence

from agentscope.message import Msg
from agentscope.models import ChatModel, ChatResponse, ModelSettings, ResponseFormat, ToolChoice, ToolSchema
from agentscope.rl.rollout._router import RolloutServer

__all__ = ["RolloutChatModel"]


class RolloutChatModel(ChatModel):
    """A :class:`~agentscope.models.ChatModel` backed by a session of a rollout server (a
    :class:`RolloutService`, a :class:`RemoteRolloutServer`, or a :class:`RolloutRouter` over several).

    Every call is recorded as a turn of ``session_id`` (token ids, log-probs, policy versions). The agent cannot
    tell it from any other chat model.

    Args:
        service: The rollout service, or a router over several.
        session_id: The episode's session (``service.open_session()``); None generates without recording.
        settings: Defaults for every call; per-call settings override them key by key.

    ``tool_choice`` and ``response_format`` are not enforced: the policy is sampled freely (constraining it would
    change the distribution the log-probs describe), and the tools stay in the prompt even for
    ``tool_choice="none"`` so the conversation keeps extending the same token ids.
    """

    def __init__(
        self,
        service: RolloutServer,
        session_id: str | None,
        *,
        settings: ModelSettings | None = None,
    ) -> None:
        self.service = service
        """The rollout service."""
        self.session_id = session_id
        """The session every call is recorded in."""
        self.settings: ModelSettings = ModelSettings(settings or {})
        """Per-model default settings."""
        self.model_name = service.model_name

    def __repr__(self) -> str:
        return f"RolloutChatModel(session_id={self.session_id!r})"

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema]) -> int:
        """The prompt's length in the policy's own token ids, so a context budget (``ReActAgent(context=...)``)
        counts exactly what the policy will read."""
        return self.service.count_tokens(messages, tools)

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Generate the policy's next message through the rollout service."""
        merged = ModelSettings(self.settings)
        merged.update(settings or {})
        return await self.service.chat(self.session_id, messages, tools=tools, settings=merged)
