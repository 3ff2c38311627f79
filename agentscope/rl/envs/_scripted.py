"""ScriptedRollout: a rollout service that plays a Python policy (experts, baselines, tests without torch)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import anyio

from agentscope.message import Msg, new_id
from agentscope.models import (
    ChatModel,
    ChatResponse,
    ModelSettings,
    ResponseFormat,
    ScriptItem,
    ToolChoice,
    ToolSchema,
    to_response,
)
from agentscope.rl._types import Turn

__all__ = ["ScriptedPolicy", "ScriptedRollout"]

ScriptedPolicy: TypeAlias = Callable[[list[Msg]], "ScriptItem | Awaitable[ScriptItem]"]
"""Plays the policy: the conversation so far in, what the model answers out (see :data:`agentscope.models.ScriptItem`)."""


class ScriptedRollout:
    """Behaves like :class:`~agentscope.rl.rollout.RolloutService` for the environment cluster: sessions record
    one :class:`~agentscope.rl.Turn` per chat call, with made-up token ids that extend each other turn by turn
    (token-in/token-out), log-probs of ``-0.5`` and the current :attr:`version`.

    >>> rollout = ScriptedRollout(lambda messages: "42")
    >>> cluster = EnvCluster(ArithEnv, react_agent_factory, rollout, slots=4, model_factory=rollout.model)

    Args:
        policy: Answers each model call (sync or async).
        latency_s: Seconds every call takes (on the event loop's clock).
        completion_tokens: Made-up completion length per turn.
    """

    def __init__(self, policy: ScriptedPolicy, *, latency_s: float = 0.0, completion_tokens: int = 3) -> None:
        self.policy = policy
        self.latency_s = latency_s
        self.completion_tokens = completion_tokens
        self.version = 0
        """Policy version stamped on new turns (set it, or let :meth:`update_weights` do)."""
        self.closed: list[str] = []
        """Ids of the sessions closed, in order."""
        self.updates: list[int] = []
        """Versions received by :meth:`update_weights`."""
        self._sessions: dict[str, list[Turn]] = {}

    def open_session(self, session_id: str | None = None) -> str:
        """Start recording an episode."""
        sid = session_id or new_id()
        self._sessions.setdefault(sid, [])
        return sid

    def close_session(self, session_id: str) -> list[Turn]:
        """Stop recording; the episode's turns."""
        self.closed.append(session_id)
        return self._sessions.pop(session_id)

    @property
    def sessions(self) -> list[str]:
        """Open session ids."""
        return list(self._sessions)

    async def chat(self, session_id: str, messages: Sequence[Msg]) -> ChatResponse:
        """One model call of a session."""
        head = self.version
        if self.latency_s:
            await anyio.sleep(self.latency_s)
        answer = self.policy(list(messages))
        if inspect.isawaitable(answer):
            answer = await answer
        response = to_response(answer)
        turns = self._sessions[session_id]
        observation = [len(messages[-1].text) % 97 + 3] if messages else [3]
        prompt = (turns[-1].prompt_ids + turns[-1].completion_ids if turns else [1, 2]) + observation
        completion = [(len(response.text) + i) % 89 + 3 for i in range(self.completion_tokens)]
        turns.append(
            Turn(
                prompt_ids=prompt,
                completion_ids=completion,
                logprobs=[-0.5] * len(completion),
                version_head=head,
                version_tail=self.version,
                finish_reason=response.finish_reason,
            )
        )
        return response.model_copy(
            update={
                "prompt_token_ids": prompt,
                "completion_token_ids": completion,
                "logprobs": [-0.5] * len(completion),
                "policy_version": self.version,
                "metadata": {"version_head": head},
            }
        )

    async def update_weights(self, state_dict: object, version: int) -> None:
        """Take new weights: later turns carry ``version``."""
        self.updates.append(version)
        self.version = version

    def model(self, session_id: str) -> ChatModel:
        """The agent's model for one session (pass ``model_factory=rollout.model`` to the cluster)."""
        return _SessionModel(self, session_id)


class _SessionModel(ChatModel):
    def __init__(self, rollout: ScriptedRollout, session_id: str) -> None:
        self.rollout = rollout
        self.session_id = session_id
        self.model_name = "scripted-rollout"

    async def generate(
        self,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: ToolChoice | None = None,
        response_format: ResponseFormat | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        return await self.rollout.chat(self.session_id, messages)
