"""AgentScopeReactLoop: an AgentScope agent as a verl agent loop (``agent_name: agentscope_react``).

One ``run`` is one episode: build the agent from its agent spec with a :class:`~agentscope.rl.rollout.RolloutChatModel`
whose rollout service generates through verl's server manager (:class:`VerlServerEngine`), reply to the row's
``raw_prompt``, and turn the recorded turns into verl's token stream with :meth:`Trajectory.flatten`: the first
prompt, then the generated tokens (mask 1, with their rollout log-probs) and, between turns, the tool results and
chat-format tokens (mask 0), exactly the ids the model read and wrote (never re-tokenized).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from uuid import uuid4

import anyio
import verl.experimental.agent_loop.agent_loop as verl_agent_loop
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from agentscope._errors import unwrap_group
from agentscope._loading import LoadError, load_object
from agentscope.agents import AgentBase, AgentFactory, build_agent, load_agent_factory, takes_argument
from agentscope.exceptions import ModelError, UsageError
from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.rl._types import FlatSample, Trajectory, TrajectoryStatus, Turn
from agentscope.rl.policy import ChatFormat, ChatTokenizer
from agentscope.rl.rollout import RolloutChatModel, RolloutService, SamplingParams
from agentscope.rl.verl_loop._engine import ResponseBudgetSpent, VerlServerEngine

__all__ = ["AGENT_NAME", "AGENT_SPEC_FIELD", "AgentScopeReactLoop"]

logger = logging.getLogger("agentscope.rl.verl_loop")

AGENT_NAME = "agentscope_react"
"""The name the loop is registered under (a dataset row's ``agent_name``, or ``rollout.agent.default_agent_loop``)."""

AGENT_SPEC_FIELD = "agentscope_agent"
"""The key of a row's ``extra_info`` that names its agent spec (overriding the loop config's ``agent``)."""


_loaded: dict[tuple[str, str], object] = {}
"""Agent factories and reward functions loaded so far, by (kind, spec)."""
_load_lock = threading.Lock()
"""verl starts many episodes at once: one load at a time, so that no episode sees a file half executed by another
(``load_object`` puts a file's module in ``sys.modules`` before running it)."""


async def _load(kind: str, spec: str) -> object:
    """The agent factory (``kind="agent"``) or reward function (``"reward"``) that ``spec`` names, loaded once per
    process in a worker thread (loading runs the user's file)."""
    key = (kind, spec)
    if key in _loaded:
        return _loaded[key]

    def load() -> object:
        with _load_lock:
            if key not in _loaded:
                _loaded[key] = load_agent_factory(spec) if kind == "agent" else _load_reward(spec)
            return _loaded[key]

    return await anyio.to_thread.run_sync(load)


def _load_reward(spec: str) -> object:
    try:
        fn = load_object(spec)
    except LoadError as exc:
        raise UsageError(f"reward spec {spec!r}: {exc}") from None
    if not callable(fn):
        raise UsageError(f"reward spec {spec!r} names a {type(fn).__name__}, not a function")
    return fn


class _TurnLimit(Exception):
    """Internal: ``rollout.multi_turn.max_assistant_turns`` model calls were made."""


_registry = cast(dict[str, object], vars(verl_agent_loop)["_agent_loop_registry"])
"""verl's agent loop registry (module-private in verl; ``register`` and ``AgentLoopWorker`` write it)."""
_configured = _registry.get(AGENT_NAME)
"""An entry a config file put in verl's registry before this module was imported: in main_ppo, an
``AgentLoopWorker`` loads ``agent_loop_config_path`` first, and its ``hydra.utils.instantiate`` imports this module
then. ``@register`` would replace the entry (and its ``agent:``) with a bare ``_target_``; it is put back below."""


@register(AGENT_NAME)
class AgentScopeReactLoop(AgentLoopBase):
    """Runs an AgentScope agent (any agent factory; a :class:`~agentscope.agents.ReActAgent` typically) as a verl
    agent loop.

    verl builds one instance per sample with ``hydra.utils.instantiate``: the keys of this loop's entry in
    ``rollout.agent.agent_loop_config_path`` other than ``name`` and ``_target_`` arrive as the keyword arguments
    below; the rest is verl's (``AgentLoopBase``).

    Args:
        agent: The agent spec (``path/to/file.py[:NAME]`` or ``module:NAME``, see docs/agent-spec.md). A row's
            ``extra_info.agentscope_agent`` overrides it; one of the two is required.
        agent_kwargs: More keyword arguments for the factory (each one must be a parameter it declares).
        reward: Optionally, a reward function spec (``module:NAME`` or ``file.py:NAME``) with verl's
            ``compute_score`` signature: called as ``fn(data_source=, solution_str=, ground_truth=, extra_info=)``
            with the text of the agent's final reply and the row's ``reward_model.ground_truth``; it returns a
            number or a dict with ``score`` (the rest becomes ``reward_extra_info``), sync or async. Without it
            the loop leaves ``reward_score`` unset and verl's reward manager scores the decoded response.
        tools: verl's tools (``rollout.multi_turn.tool_config_path``), not used: the agent brings its own toolkit.

    The factory is called with the keyword arguments it declares out of: ``model`` (the policy: a
    :class:`~agentscope.rl.rollout.RolloutChatModel` generating through verl's servers), ``sys_prompt`` (the
    text of the row's leading system message, when it has one), ``extra_info`` (the row's ``extra_info`` dict)
    and ``agent_kwargs``. The agent receives the row's ``raw_prompt`` messages after the leading system message.
    """

    def __init__(
        self,
        *args: Any,
        agent: str | None = None,
        agent_kwargs: Mapping[str, Any] | None = None,
        reward: str | None = None,
        tools: object = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.agent_spec = agent
        """The loop config's agent spec."""
        self.agent_kwargs: dict[str, Any] = _plain(agent_kwargs) if agent_kwargs is not None else {}
        """More factory arguments."""
        self.reward_spec = reward
        """The reward function spec, if any."""
        rollout: Any = self.rollout_config
        self.response_length: int = int(rollout.response_length)
        """``rollout.response_length``: most tokens after the first prompt."""
        turns = rollout.multi_turn.get("max_assistant_turns") if "multi_turn" in rollout else None
        self.max_assistant_turns: int | None = int(turns) if turns else None
        """``rollout.multi_turn.max_assistant_turns``: most model calls per episode (None: the agent's own limit)."""
        self.chat_format = ChatFormat.for_tokenizer(self.tokenizer)
        """How messages are rendered (ChatML, the Qwen2.5 tool-call layout)."""
        self.chat_tokenizer = ChatTokenizer(cast(Any, self.tokenizer), self.chat_format)
        """Messages to ids (raises ValueError for a tokenizer without ``<|im_end|>``)."""
        name = rollout.get("name")
        self.server_name: str | None = str(name) if name else None
        """``rollout.name`` (``vllm``, ``sglang``...), to name the servers in errors."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """Play one episode of the row ``kwargs`` (verl's dataset fields: ``raw_prompt``, ``extra_info``,
        ``reward_model``, ``data_source``...) and return its token stream.

        Raises:
            UsageError: no agent spec, or a bad one (the message says which).
            ModelError: verl's server failed, or answered without the log-probs verl asked for (an infrastructure
                failure fails the batch, as in verl's own loops).
        """
        extra_info = _plain(kwargs.get("extra_info") or {})
        system, messages = _row_messages(kwargs["raw_prompt"])
        engine = VerlServerEngine(
            cast(Any, self.server_manager),
            request_id=uuid4().hex,
            sampling_params=sampling_params,
            response_length=self.response_length,
            server_name=self.server_name,
        )
        service = RolloutService(
            engine,
            cast(Any, self.tokenizer),
            self.chat_format,
            default_params=SamplingParams(max_tokens=10**9),
        )
        session = service.open_session()
        agent = await self._build_agent(RolloutChatModel(service, session), system, extra_info)
        tool_s = self._instrument(agent)

        status: TrajectoryStatus = "ok"
        reply: Msg | None = None
        try:
            reply = await agent(messages)
            if reply.metadata.get("max_iters_reached"):
                status = "truncated"
        except Exception as exc:
            inner = unwrap_group(exc)
            if isinstance(inner, ResponseBudgetSpent | _TurnLimit):
                status = "truncated"
            elif isinstance(inner, ModelError):
                raise
            else:
                status = "failed_agent"
                logger.warning("the agent raised; its tokens are masked out", exc_info=inner)
        finally:
            turns = service.close_session(session)

        sample, pieces = self._sample(turns, system, messages)
        if status == "failed_agent":
            sample.response_mask = [0] * len(sample.response_mask)
        reward_score, reward_info = await self._reward(status, reply, turns, kwargs, extra_info)
        extra_fields: dict[str, Any] = {
            **engine.extra_fields,
            "turn_scores": [],
            "tool_rewards": [],
            "agentscope_status": status,
            "agentscope_samples": pieces,
        }
        if reward_info is not None:
            extra_fields["reward_extra_info"] = reward_info
        n = self.response_length
        # None or a list for every row of a batch alike (verl keeps rollout_log_probs only when its first row has
        # them): decided by what verl asked for alone; a server that answered without them raised a ModelError
        with_logprobs = bool(sampling_params.get("logprobs"))
        return AgentLoopOutput(
            prompt_ids=self._cap_text_prompt_length(sample.prompt_ids),
            response_ids=sample.response_ids[:n],
            response_mask=sample.response_mask[:n],
            response_logprobs=sample.response_logprobs[:n] if with_logprobs else None,
            reward_score=reward_score,
            num_turns=max(1, 2 * len(turns)),
            metrics=cast(
                Any,
                {
                    "generate_sequences": engine.generate_s,
                    "tool_calls": tool_s[0],
                    "num_preempted": engine.num_preempted if engine.num_preempted is not None else -1,
                },
            ),
            extra_fields=extra_fields,
        )

    # ------------------------------------------------------------------ the agent

    async def _build_agent(
        self, model: RolloutChatModel, system: str | None, extra_info: dict[str, Any]
    ) -> AgentBase:
        spec = extra_info.get(AGENT_SPEC_FIELD) or self.agent_spec
        if not isinstance(spec, str) or not spec:
            raise UsageError(
                f"the {AGENT_NAME} agent loop needs an agent spec: `agent: path/to/file.py[:NAME]` (or "
                f"`module:NAME`) in its entry of rollout.agent.agent_loop_config_path, or the row's "
                f"extra_info.{AGENT_SPEC_FIELD}"
            )
        factory = cast(AgentFactory, await _load("agent", spec))
        unknown = [key for key in self.agent_kwargs if not takes_argument(factory, key)]
        if unknown:
            raise UsageError(
                f"agent spec {spec!r}: the factory takes no {', '.join(map(repr, unknown))} (agent_kwargs)"
            )
        available: dict[str, object] = {"model": model, "extra_info": extra_info, **self.agent_kwargs}
        if system is not None:
            available["sys_prompt"] = system
        return await build_agent(factory, **available)

    def _instrument(self, agent: AgentBase) -> list[float]:
        """Hooks that enforce ``max_assistant_turns`` and time the tool calls; returns the timer (seconds, in a
        one-element list the hooks update)."""
        calls = [0]
        tool_s = [0.0]
        started: dict[str, float] = {}
        limit = self.max_assistant_turns

        def pre_reasoning(_agent: AgentBase, _messages: list[Msg]) -> None:
            if limit is not None and calls[0] >= limit:
                raise _TurnLimit(f"{limit} model calls (rollout.multi_turn.max_assistant_turns)")
            calls[0] += 1

        def pre_acting(_agent: AgentBase, call: ToolUseBlock) -> None:
            started[call.id] = time.perf_counter()

        def post_acting(_agent: AgentBase, result: ToolResultBlock) -> None:
            begun = started.pop(result.id, None)
            if begun is not None:
                tool_s[0] += time.perf_counter() - begun

        agent.register_hook("pre_reasoning", "verl_loop", pre_reasoning)
        agent.register_hook("pre_acting", "verl_loop", pre_acting)
        agent.register_hook("post_acting", "verl_loop", post_acting)
        return tool_s

    # ------------------------------------------------------------------ the token stream

    def _sample(self, turns: list[Turn], system: str | None, messages: list[Msg]) -> tuple[FlatSample, int]:
        """The episode as one verl sample, and how many samples :meth:`Trajectory.flatten` made of it.

        An agent that rewrote its history (context compaction) makes several; verl takes one sequence per row, so
        the last is kept (it holds the final answer the reward is about). No turn at all (the agent failed before
        its first model call): the row's prompt, rendered, and an empty response."""
        if not turns:
            ids = self.chat_tokenizer.encode_system(system, None)
            for msg in messages:
                ids += self.chat_tokenizer.encode_message(msg)
            ids += self.chat_tokenizer.generation_prompt_ids
            return FlatSample(prompt_ids=ids, response_ids=[], response_mask=[], response_logprobs=[]), 0
        samples = Trajectory(task_id="verl", group_id="verl", turns=turns).flatten()
        if len(samples) > 1:
            logger.info("the episode's history was rewritten: %d samples, the last one kept", len(samples))
        return samples[-1], len(samples)

    # ------------------------------------------------------------------ the reward

    async def _reward(
        self,
        status: TrajectoryStatus,
        reply: Msg | None,
        turns: list[Turn],
        row: dict[str, Any],
        extra_info: dict[str, Any],
    ) -> tuple[float | None, dict[str, Any] | None]:
        if self.reward_spec is None:
            return None, None
        fn = cast(Callable[..., Any], await _load("reward", self.reward_spec))
        if status == "failed_agent":
            return 0.0, None
        reward_model = _plain(row.get("reward_model") or {})
        result: Any = fn(
            data_source=row.get("data_source"),
            solution_str=reply.text if reply is not None else _last_text(self.chat_tokenizer, turns),
            ground_truth=reward_model.get("ground_truth"),
            extra_info=extra_info,
        )
        if hasattr(result, "__await__"):
            result = await result
        if isinstance(result, Mapping):
            info = dict(cast(Mapping[str, Any], result))
            return float(info.pop("score")), info
        return float(result), None


def _last_text(chat_tokenizer: ChatTokenizer, turns: Sequence[Turn]) -> str:
    """The last completion's text (the answer judged when the agent was stopped before replying)."""
    return chat_tokenizer.decode_completion(turns[-1].completion_ids) if turns else ""


def _row_messages(raw_prompt: Any) -> tuple[str | None, list[Msg]]:
    """The row's leading system prompt (None when it has none) and its other messages as :class:`Msg`."""
    messages: list[Msg] = []
    for item in list(raw_prompt):
        message = _plain(item)
        role = str(message.get("role", "user"))
        content: Any = message.get("content", "")
        if not isinstance(content, str):  # OpenAI content parts: the text ones
            parts = [_plain(p) for p in content]
            content = "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
        if role not in ("system", "user", "assistant"):
            raise ValueError(
                f"raw_prompt: a {role!r} message; the {AGENT_NAME} loop takes system, user, assistant"
            )
        messages.append(Msg(role=cast(Any, role), content=content))
    if messages and messages[0].role == "system":
        return messages[0].text, messages[1:]
    return None, messages


def _plain(value: Any) -> Any:
    """OmegaConf containers (from Hydra) and numpy object arrays (from a verl batch) as plain dicts and lists."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in cast(Mapping[Any, Any], value).items()}
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in cast(Sequence[Any], value)]
    return value


if _configured is not None:
    _registry[AGENT_NAME] = _configured
