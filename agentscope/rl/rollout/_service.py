"""RolloutService: chat in, token ids out, with per-episode sessions that never re-tokenize history.

A session holds the token ids of its conversation so far. Each chat call compares the incoming messages with what
the session has already seen (rendered by the :class:`~agentscope.rl.policy.ChatFormat`; the assistant message
the policy generated last turn is recognised by its parsed content) and, when they extend it, encodes only the new
messages and appends them to the ids: turn t+1's prompt is turn t's prompt + completion (+ the ``\\n`` that closes
the turn) + the new messages + the generation prompt. When the history diverged (an agent rewrote its memory, the
tools changed), the prompt is encoded from scratch, and :meth:`Trajectory.flatten` starts a new sample there.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from agentscope.exceptions import SessionError
from agentscope.message import ContentBlock, Msg, ToolUseBlock, new_id
from agentscope.models import ChatResponse, ChatUsage, ModelSettings, ToolSchema
from agentscope.rl._types import Turn
from agentscope.rl.policy import ChatFormat, ChatTokenizer, TokenizerLike
from agentscope.rl.rollout._types import Generation, RolloutEngine, SamplingParams

if TYPE_CHECKING:
    import torch

__all__ = ["RolloutService", "count_prompt_tokens"]


def count_prompt_tokens(
    chat_tokenizer: ChatTokenizer, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None = None
) -> int:
    """How many token ids the prompt of a call with ``messages`` and ``tools`` has, the generation prompt
    included."""
    system, rest = chat_tokenizer.chat_format.system_prompt_of(messages)
    return (
        len(chat_tokenizer.encode_system(system, tools))
        + sum(len(chat_tokenizer.encode_message(m)) for m in rest)
        + len(chat_tokenizer.generation_prompt_ids)
    )


@dataclass(eq=False)
class _Session:
    id: str
    turns: list[Turn] = field(default_factory=list[Turn])
    keys: list[str] = field(default_factory=list[str])
    """What each consumed message rendered to (the system block first; the generated reply last)."""
    context: list[int] = field(default_factory=list[int])
    """Prompt + completion + closing ids of the last turn."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reused_turns: int = 0


@dataclass(frozen=True, slots=True)
class _Prompt:
    ids: list[int]
    keys: list[str]
    incremental: bool
    new_tokens: int


class RolloutService:
    """Serves the current policy to agents as chat, and records every turn's tokens per session.

    Args:
        engine: Generates completions (a :class:`~agentscope.rl.rollout.TorchEngine`, or any
            :class:`~agentscope.rl.rollout.RolloutEngine`).
        tokenizer: The policy's Hugging Face tokenizer.
        chat_format: How messages are rendered and completions parsed.
        default_params: Sampling defaults; per-call :class:`ModelSettings` (``temperature``, ``top_p``,
            ``max_tokens``, ``stop``, ``seed``) override them. Empty ``stop_token_ids`` means ``<|im_end|>`` and
            ``<|endoftext|>``.
        model_name: The name reported in responses.

    Start and stop the engine yourself, or use the service as an async context manager (which does both).
    """

    def __init__(
        self,
        engine: RolloutEngine,
        tokenizer: TokenizerLike,
        chat_format: ChatFormat | None = None,
        *,
        default_params: SamplingParams | None = None,
        model_name: str = "policy",
    ) -> None:
        self.engine = engine
        """The engine that generates."""
        self.chat_format = chat_format or ChatFormat.for_tokenizer(tokenizer)
        """Rendering and parsing."""
        self.chat_tokenizer = ChatTokenizer(tokenizer, self.chat_format)
        """Messages to ids and back."""
        params = dataclasses.replace(default_params) if default_params is not None else SamplingParams()
        if not params.stop_token_ids:
            params.stop_token_ids = list(self.chat_tokenizer.stop_token_ids)
        self.default_params = params
        """Sampling defaults."""
        self.model_name = model_name
        """Reported as ``model`` in responses."""
        self._sessions: dict[str, _Session] = {}
        self._counters = {
            "turns": 0,
            "incremental": 0,
            "rerendered": 0,
            "prompt_tokens": 0,
            "new_prompt_tokens": 0,
        }

    async def __aenter__(self) -> RolloutService:
        await self.engine.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.engine.stop()

    # ------------------------------------------------------------------ sessions

    def open_session(self, session_id: str | None = None) -> str:
        """Start recording a conversation; returns its id (a new one when None). Opening an open id is a no-op."""
        sid = session_id or new_id()
        if sid not in self._sessions:
            self._sessions[sid] = _Session(sid)
        return sid

    def close_session(self, session_id: str) -> list[Turn]:
        """Stop recording and return the session's turns in order.

        Raises:
            SessionError: no such session.
        """
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionError(f"no rollout session {session_id!r}")
        return session.turns

    def session_turns(self, session_id: str) -> list[Turn]:
        """The turns recorded so far (the session stays open)."""
        return list(self._session(session_id).turns)

    @property
    def sessions(self) -> list[str]:
        """Ids of the open sessions."""
        return list(self._sessions)

    @property
    def available(self) -> bool:
        """Always True: an in-process server is up while the process is."""
        return True

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionError(f"no rollout session {session_id!r}; open it with open_session()")
        return session

    # ------------------------------------------------------------------ chat

    async def chat(
        self,
        session_id: str | None,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Generate the policy's next message and record the turn in the session.

        ``session_id=None`` generates without recording (an evaluation call). The response carries the content
        parsed by the chat format (``finish_reason`` ``tool_calls`` when it calls tools), ``prompt_token_ids``,
        ``completion_token_ids``, ``logprobs``, ``policy_version`` (the version of the last token) and
        ``metadata`` ``{"version_head", "session_id", "incremental"}``.

        Raises:
            SessionError: the session is not open.
            ContextLengthExceeded: the prompt leaves no room to generate within the engine's context.
            ModelError: the engine failed.
        """
        if session_id is None:
            session = _Session("")
            return await self._chat(session, messages, tools, settings)
        session = self._session(session_id)
        async with session.lock:  # one turn at a time per session: each builds on the previous one
            return await self._chat(session, messages, tools, settings)

    async def _chat(
        self,
        session: _Session,
        messages: Sequence[Msg],
        tools: Sequence[ToolSchema] | None,
        settings: ModelSettings | None,
    ) -> ChatResponse:
        prompt = await anyio.to_thread.run_sync(self._build_prompt, session, messages, tools)
        params = self._params(settings)
        generation = await self.engine.generate(prompt.ids, params)
        text, content = await anyio.to_thread.run_sync(self._parse, generation, params)
        finish = generation.finish_reason
        reason = (
            "tool_calls" if finish == "stop" and any(isinstance(b, ToolUseBlock) for b in content) else finish
        )
        turn = Turn(
            prompt_ids=prompt.ids,
            completion_ids=generation.completion_ids,
            logprobs=generation.logprobs,
            version_head=generation.version_head,
            version_tail=generation.version_tail,
            finish_reason=reason,
        )
        if session.id:
            session.turns.append(turn)
            reply_key = self.chat_format.render_assistant(Msg(role="assistant", content=content))
            session.keys = [*prompt.keys, reply_key]
            session.context = (
                prompt.ids
                + generation.completion_ids
                + self.chat_tokenizer.closing_ids(generation.completion_ids)
            )
        self._counters["turns"] += 1
        self._counters["incremental" if prompt.incremental else "rerendered"] += 1
        self._counters["prompt_tokens"] += len(prompt.ids)
        self._counters["new_prompt_tokens"] += prompt.new_tokens
        return ChatResponse(
            content=content,
            usage=ChatUsage(input_tokens=len(prompt.ids), output_tokens=len(generation.completion_ids)),
            finish_reason=reason,
            id=f"chatcmpl-{new_id()[:24]}",
            model=self.model_name,
            prompt_token_ids=prompt.ids,
            completion_token_ids=generation.completion_ids,
            logprobs=generation.logprobs,
            policy_version=generation.version_tail,
            metadata={
                "version_head": generation.version_head,
                "session_id": session.id or None,
                "incremental": prompt.incremental,
                "text": text,
            },
        )

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None = None) -> int:
        """How many token ids the prompt of a call with ``messages`` and ``tools`` has, the generation prompt
        included: what a context budget counts against (``agentscope.context``)."""
        return count_prompt_tokens(self.chat_tokenizer, messages, tools)

    def _build_prompt(
        self, session: _Session, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None
    ) -> _Prompt:
        fmt, tok = self.chat_format, self.chat_tokenizer
        system, rest = fmt.system_prompt_of(messages)
        keys = [fmt.render_system(system, tools), *(fmt.render_message(m) for m in rest)]
        seen = len(session.keys)
        if seen and session.context and len(keys) >= seen and keys[:seen] == session.keys:
            ids = list(session.context)
            for msg in rest[seen - 1 :]:
                ids += tok.encode_message(msg)
            ids += tok.generation_prompt_ids
            return _Prompt(ids, keys, incremental=True, new_tokens=len(ids) - len(session.context))
        ids = tok.encode_system(system, tools)
        for msg in rest:
            ids += tok.encode_message(msg)
        ids += tok.generation_prompt_ids
        return _Prompt(ids, keys, incremental=False, new_tokens=len(ids))

    def _parse(self, generation: Generation, params: SamplingParams) -> tuple[str, list[ContentBlock]]:
        text = self.chat_tokenizer.decode_completion(generation.completion_ids)
        if params.stop and generation.finish_reason == "stop":
            cuts = [i for i in (text.find(s) for s in params.stop if s) if i >= 0]
            if cuts:
                text = text[: min(cuts)]
        return text, self.chat_format.parse_completion(text)

    def _params(self, settings: ModelSettings | None) -> SamplingParams:
        params = dataclasses.replace(self.default_params)
        params.stop_token_ids = list(params.stop_token_ids)
        if not settings:
            return params
        if "temperature" in settings:
            params.temperature = float(settings["temperature"])
        if "top_p" in settings:
            params.top_p = float(settings["top_p"])
        if "max_tokens" in settings:
            params.max_tokens = int(settings["max_tokens"])
        if "stop" in settings:
            params.stop = list(settings["stop"])
        if "seed" in settings:
            params.seed = int(settings["seed"])
        return params

    # ------------------------------------------------------------------ weights and stats

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Publish new weights to the engine (applied between decode steps; running requests continue)."""
        await self.engine.update_weights(state_dict, version)

    @property
    def version(self) -> int:
        """Version of the weights now serving."""
        return self.engine.version

    def stats(self) -> dict[str, float]:
        """The engine's stats plus ``rollout/sessions``, ``rollout/turns``, ``rollout/incremental_fraction``
        (turns whose prompt extended the session's ids) and ``rollout/prompt_tokens_reused_fraction``, and the
        counters behind the fractions (``rollout/incremental_turns``, ``rollout/prompt_tokens``,
        ``rollout/new_prompt_tokens``)."""
        c = self._counters
        stats: dict[str, Any] = dict(self.engine.stats())
        stats["rollout/sessions"] = float(len(self._sessions))
        stats["rollout/turns"] = float(c["turns"])
        stats["rollout/incremental_turns"] = float(c["incremental"])
        stats["rollout/prompt_tokens"] = float(c["prompt_tokens"])
        stats["rollout/new_prompt_tokens"] = float(c["new_prompt_tokens"])
        stats["rollout/incremental_fraction"] = c["incremental"] / c["turns"] if c["turns"] else 0.0
        stats["rollout/prompt_tokens_reused_fraction"] = (
            1.0 - c["new_prompt_tokens"] / c["prompt_tokens"] if c["prompt_tokens"] else 0.0
        )
        return stats
