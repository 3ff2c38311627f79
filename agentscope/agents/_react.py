"""ReActAgent: reason (call the model), act (run the tools it asked for), repeat until it answers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError

from agentscope.agents._base import AgentBase
from agentscope.context import (
    READ_OFFLOADED,
    ContextConfig,
    ContextManager,
    ToolCallLedger,
    repair_tool_history,
)
from agentscope.events import TextDelta, ThinkingDelta, ToolCallEvent, ToolResultDelta, ToolResultEvent
from agentscope.exceptions import ApprovalRequired
from agentscope.formatters import json_value_problem
from agentscope.memory import InMemoryMemory, MemoryBase
from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ChatModel, ChatResponse, ModelSettings, ToolChoice, ToolSchema
from agentscope.tools import Toolkit, ToolResponse, approved_calls
from agentscope.tracing import first_chunk, model_call, switch
from agentscope.types import ApprovalDecision

__all__ = ["ReActAgent"]

FINISH_TOOL_NAME = "generate_response"

_INTERRUPTED_OUTPUT = "The call was interrupted before it finished; it may or may not have taken effect."
_NOT_RUN_OUTPUT = "Not run: no steps were left for more tool calls."
_PRIME_TAIL = 64
"""Messages of memory read to learn which tool calls still wait for a result (before the first write)."""
_MAX_ITERS_HINT = (
    "You have used all the reasoning steps available for this request. Do not call any more tools; "
    "answer now with what you have found so far."
)


class _FinishTool:
    """The tool through which the model hands in a structured answer (validated against ``model``)."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.output: BaseModel | None = None
        self.schema = ToolSchema(
            name=FINISH_TOOL_NAME,
            description=(
                "Give your final answer in the required structure. Call this once you have everything you need; "
                "the arguments are the answer."
            ),
            parameters=model.model_json_schema(),
        )

    def accept(self, call: ToolUseBlock) -> ToolResultBlock:
        if call.raw_input is not None:
            return ToolResultBlock(
                id=call.id,
                name=call.name,
                output=f"The arguments were not valid JSON; send a JSON object. You sent: {call.raw_input[:500]}",
                is_error=True,
            )
        try:
            self.output = self.model.model_validate(call.input)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
            )
            return ToolResultBlock(
                id=call.id,
                name=call.name,
                output=f"Invalid response, fix and call again: {problems}",
                is_error=True,
            )
        return ToolResultBlock(id=call.id, name=call.name, output="Response accepted.")


class ReActAgent(AgentBase):
    """An agent that alternates between calling its model and running the tools the model asks for.

    Each iteration sends the system prompt and the memory to the model with the toolkit's active tools. Tool calls
    in one response run concurrently (at most ``max_concurrent_tools`` at once) and their results go back to the
    model; a response without tool calls is the reply. After ``max_iters`` iterations the model is asked to answer
    without tools.

    ``await agent(msg, structured_model=Answer)`` makes the model hand in its answer through a
    ``generate_response`` tool validated against ``Answer``; invalid answers go back to the model as tool errors to
    be fixed. The validated data is in ``reply.metadata["structured_output"]``.

    A tool that raises :class:`~agentscope.exceptions.ApprovalRequired` (e.g. through
    :func:`~agentscope.tools.require_approval`) ends the reply with ``metadata["approval_required"]``, a list of
    ``{"id", "name", "input", "reason"}``: the waiting calls (the model sees nothing of them yet). Reply again with
    the human's decisions, ``decisions=[ApprovalDecision(call_id=..., action="approve" | "edit" | "reject",
    arguments=..., reason=...)]`` (or the short forms ``approve=[call_id, ...]`` and ``deny=[...]``), to run, run
    with edited arguments, or refuse each call and continue. A waiting call without a decision is refused, as are
    all of them when the reply is given a new message instead. The waiting calls are part of :meth:`state_dict`
    (plain JSON), so the decision can come to a fresh agent in another process.

    ``context=ContextConfig(max_tokens=...)`` (or a :class:`~agentscope.context.ContextManager`) keeps every
    request under a token budget by the configured compaction policies (see :mod:`agentscope.context`); memory
    keeps the full history. Whatever the budget, every message the agent stores goes through a
    :class:`~agentscope.context.ToolCallLedger` and every request through
    :func:`~agentscope.context.repair_tool_history`, so each tool call has exactly one result and JSON-object
    arguments, also after an interruption, a timeout, an error or malformed model output.
    """

    def __init__(
        self,
        name: str,
        sys_prompt: str = "",
        model: ChatModel | None = None,
        *,
        toolkit: Toolkit | None = None,
        memory: MemoryBase | None = None,
        max_iters: int = 10,
        max_concurrent_tools: int = 8,
        parallel_tool_calls: bool = True,
        model_settings: ModelSettings | None = None,
        context: ContextConfig | ContextManager | None = None,
        description: str = "",
    ) -> None:
        if model is None:
            raise TypeError(
                f"ReActAgent {name!r} needs a model, e.g. OpenAIChatModel(...) or ScriptedModel([...])"
            )
        if max_iters < 1:
            raise ValueError(f"max_iters must be at least 1, got {max_iters}")
        if max_concurrent_tools < 1:
            raise ValueError(f"max_concurrent_tools must be at least 1, got {max_concurrent_tools}")
        super().__init__(name, memory=memory, description=description)
        self.sys_prompt = sys_prompt
        """Instructions sent first in every model call."""
        self.model = model
        """The model that reasons."""
        self.toolkit = toolkit if toolkit is not None else Toolkit()
        """The tools the model may call."""
        self.max_iters = max_iters
        """Most reason-act iterations per reply."""
        self.parallel_tool_calls = parallel_tool_calls
        """Run the tool calls of one response concurrently."""
        self.model_settings = model_settings
        """Sampling settings for every model call."""
        self._tool_limiter = anyio.CapacityLimiter(max_concurrent_tools)
        self._pending_approval: dict[str, ToolUseBlock] = {}
        self._approval_reasons: dict[str, str] = {}
        self._resumed_notes: dict[str, str | None] = {}
        """Calls running after a human's decision -> the note the model sees before their result."""
        self._system_cache: Msg | None = None
        self.context = ContextManager(context) if isinstance(context, ContextConfig) else context
        """The context budget and compaction (None: requests are sent whole)."""
        self._ledger = ToolCallLedger()
        self._reply_ids: frozenset[str] = frozenset()
        """Ids of the messages that started the current reply (never compacted away)."""

    # ------------------------------------------------------------------ the loop

    async def reply(
        self,
        msg: Msg | Sequence[Msg] | None = None,
        *,
        structured_model: type[BaseModel] | None = None,
        approve: Sequence[str] = (),
        deny: Sequence[str] = (),
        decisions: Sequence[ApprovalDecision] = (),
        **kwargs: Any,
    ) -> Msg:
        """Reply to ``msg``; ``approve``, ``deny`` and ``decisions`` decide the calls waiting for approval.

        Raises:
            ValueError: decisions that cannot be applied (see :meth:`check_decisions`); nothing has changed then.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments for {type(self).__name__}.reply: {', '.join(kwargs)}")
        finish = _FinishTool(structured_model) if structured_model is not None else None
        given = [
            *(ApprovalDecision(call_id=i, action="approve") for i in approve),
            *(ApprovalDecision(call_id=i, action="reject") for i in deny),
            *decisions,
        ]
        # Pending calls are answered first: their results must directly follow the assistant's tool-use message.
        if given:
            self.check_decisions(given)
        if self._pending_approval:
            await self._resolve_approvals(given, finish)
        if msg is not None:
            self._reply_ids = frozenset(m.id for m in ([msg] if isinstance(msg, Msg) else msg))
            await self._remember(msg)

        tool_choice: ToolChoice | None = None
        for _ in range(self.max_iters):
            response = await self._reasoning(finish, tool_choice)
            assistant = response.to_msg(self.name)
            _attach_usage(assistant, response)
            calls = response.tool_calls
            del response  # the message holds what is kept; the rest need not live through the tool calls
            await self._remember(assistant)
            if not calls:
                if finish is None:
                    return assistant
                tool_choice = FINISH_TOOL_NAME  # text is not an answer here: insist on the structured tool
                continue
            tool_choice = None
            await self._acting(calls, finish)
            if self._pending_approval:
                return await self._approval_reply()
            if finish is not None and finish.output is not None:
                return _structured_reply(self.name, assistant, finish.output)
        return await self._max_iters_reply(finish)

    async def _reasoning(self, finish: _FinishTool | None, tool_choice: ToolChoice | None) -> ChatResponse:
        messages = await self._model_input()
        messages = await self._run_hooks("pre_reasoning", messages)
        tools = self.toolkit.schemas()
        if finish is not None:
            tools = [*tools, finish.schema]
        offload = self._offload_tool()
        if offload is not None:
            tools = [*tools, offload]
        response = await self._call_model(messages, tools, tool_choice)
        return await self._run_hooks("post_reasoning", response)

    async def _model_input(self) -> list[Msg]:
        history = await self.memory.get()
        system = self._system_msg()
        if system is not None:
            history.insert(0, system)
        return history

    def _system_msg(self) -> Msg | None:
        """The system message: the prompt plus the active tool groups' instructions (rebuilt only on change)."""
        prompt = self.sys_prompt
        instructions = self.toolkit.group_instructions()
        if instructions:
            prompt = f"{prompt}\n\n{instructions}" if prompt else instructions
        if not prompt:
            return None
        cached = self._system_cache
        if cached is None or cached.content != prompt:
            cached = self._system_cache = Msg(role="system", name=self.name, content=prompt)
        return cached

    async def _call_model(
        self, messages: list[Msg], tools: list[ToolSchema], tool_choice: ToolChoice | None
    ) -> ChatResponse:
        messages, _ = repair_tool_history(messages)
        if self.context is not None:
            messages = await self.context.fit(messages, tools, model=self.model, protect=self._reply_ids)
        if switch.ON:  # a ``chat {model}`` span around the call
            return await model_call(
                self.model,
                partial(self._generate, messages, tools, tool_choice),
                messages,
                tools,
                tool_choice,
                self.model_settings,
                self.streaming,
            )
        return await self._generate(messages, tools, tool_choice)

    async def _generate(
        self, messages: list[Msg], tools: list[ToolSchema], tool_choice: ToolChoice | None
    ) -> ChatResponse:
        if not self.streaming:
            return await self.model.generate(
                messages, tools=tools or None, tool_choice=tool_choice, settings=self.model_settings
            )
        response: ChatResponse | None = None
        first = True
        async for event in self.model.stream(
            messages, tools=tools or None, tool_choice=tool_choice, settings=self.model_settings
        ):
            if first:
                first = False
                if switch.ON:
                    first_chunk()
            if isinstance(event, ChatResponse):
                response = event
            elif isinstance(event, TextDelta | ThinkingDelta):
                event.agent = self.name
                await self.emit(event)
        if response is None:
            raise RuntimeError(f"{type(self.model).__name__}.stream ended without a final ChatResponse")
        return response

    # ------------------------------------------------------------------ acting

    async def _acting(self, calls: list[ToolUseBlock], finish: _FinishTool | None) -> None:
        """Run the calls and record every result in memory, even when interrupted half-way."""
        results: dict[str, ToolResultBlock] = {}
        try:
            if len(calls) == 1 or not self.parallel_tool_calls:
                for call in calls:
                    results[call.id] = await self._run_tool(call, finish)
            else:
                async with anyio.create_task_group() as tg:
                    for call in calls:
                        tg.start_soon(self._run_tool_into, call, finish, results)
        finally:
            if len(self._pending_approval) > 1:  # listed in the model's order, not in the order they asked
                order = {call.id: i for i, call in enumerate(calls)}
                waiting = sorted(self._pending_approval.values(), key=lambda c: order.get(c.id, -1))
                self._pending_approval = {c.id: c for c in waiting}
            # Calls waiting for approval get their result when the human decides; every other call gets one now.
            blocks = [
                results.get(call.id)
                or ToolResultBlock(id=call.id, name=call.name, output=_INTERRUPTED_OUTPUT, is_error=True)
                for call in calls
                if call.id not in self._pending_approval
            ]
            if blocks:
                await self._remember(Msg(role="tool", content=list(blocks)))

    async def _run_tool_into(
        self, call: ToolUseBlock, finish: _FinishTool | None, results: dict[str, ToolResultBlock]
    ) -> None:
        async with self._tool_limiter:
            results[call.id] = await self._run_tool(call, finish)

    async def _run_tool(self, call: ToolUseBlock, finish: _FinishTool | None) -> ToolResultBlock:
        resumed = call.id in self._resumed_notes  # its ToolCallEvent went out when it began to wait
        note = self._resumed_notes.get(call.id)
        call = await self._run_hooks("pre_acting", call)
        streaming = self.streaming
        if streaming and not resumed:
            await self.emit(ToolCallEvent(call=call, agent=self.name))
        if finish is not None and call.name == FINISH_TOOL_NAME:
            result = finish.accept(call)
        elif call.name == READ_OFFLOADED and self.context is not None and self._offload_tool() is not None:
            result = await self.context.read_offloaded(call, await self.memory.get())
        else:
            result = await self._execute(call, streaming)
            if call.id in self._pending_approval:  # no result yet: it comes with the human's decision
                return result
        if note is not None:
            result = _with_note(result, note)
        result = await self._run_hooks("post_acting", result)
        if streaming:
            await self.emit(ToolResultEvent(result=result, agent=self.name))
        return result

    async def _execute(self, call: ToolUseBlock, streaming: bool) -> ToolResultBlock:
        try:
            if not streaming:
                return await self.toolkit.call(call)
            final: ToolResultBlock | None = None
            async for item in self.toolkit.stream(call):
                if isinstance(item, ToolResponse):
                    await self.emit(ToolResultDelta(call_id=call.id, chunk=item, agent=self.name))
                else:
                    final = item
            assert final is not None, "Toolkit.stream must end with a ToolResultBlock"
            return final
        except ApprovalRequired as exc:
            self._pending_approval[call.id] = call
            self._approval_reasons[call.id] = exc.reason
            return ToolResultBlock(
                id=call.id, name=call.name, output=f"Waiting for human approval: {exc.reason}", is_error=True
            )

    # ------------------------------------------------------------------ approvals

    async def _approval_reply(self) -> Msg:
        """End the reply listing the calls that wait for a human. Not stored: the tool results must come next."""
        pending: list[Any] = [
            {"id": c.id, "name": c.name, "input": c.input, "reason": self._approval_reasons.get(c.id, "")}
            for c in self._pending_approval.values()
        ]
        waiting = "; ".join(
            f"{c.name} ({reason})" if (reason := self._approval_reasons.get(c.id)) else c.name
            for c in self._pending_approval.values()
        )
        return Msg(
            role="assistant",
            name=self.name,
            content=f"I need approval before running: {waiting}.",
            metadata={"approval_required": pending},
        )

    @property
    def pending_approvals(self) -> list[ToolUseBlock]:
        """The tool calls waiting for a human's decision (empty when the agent is not paused)."""
        return list(self._pending_approval.values())

    def check_decisions(self, decisions: Sequence[ApprovalDecision]) -> None:
        """Check that ``decisions`` can be applied to the calls waiting for approval, without applying them.

        Raises:
            ValueError: nothing waits for approval, a decision names a call that does not wait (or one named
                twice), or edited arguments do not fit the tool's schema; the message names each problem.
        """
        if not self._pending_approval:
            raise ValueError(f"agent {self.name!r} has no tool call waiting for approval")
        problems: list[str] = []
        seen: set[str] = set()
        for decision in decisions:
            call = self._pending_approval.get(decision.call_id)
            if call is None:
                problems.append(
                    f"no tool call {decision.call_id!r} waits for approval "
                    f"(waiting: {', '.join(repr(i) for i in self._pending_approval)})"
                )
            elif decision.call_id in seen:
                problems.append(f"call {decision.call_id!r} has more than one decision")
            elif decision.arguments is not None:
                problem = self._arguments_problem(call.name, decision.arguments)
                if problem is not None:
                    problems.append(
                        f"the edited arguments of call {decision.call_id!r} do not fit: {problem}"
                    )
            seen.add(decision.call_id)
        if problems:
            raise ValueError("; ".join(problems))

    def _arguments_problem(self, tool_name: str, arguments: dict[str, Any]) -> str | None:
        """Why ``arguments`` would be refused by the tool, checked as the toolkit checks every call; None if fine."""
        tool = self.toolkit.get(tool_name)
        if tool is None:
            return f"the agent has no tool {tool_name!r}"
        problem = json_value_problem(arguments)
        if problem is not None:
            return problem
        bound = tool.bind(arguments)
        return bound.text_content.replace("\n- ", "; ") if isinstance(bound, ToolResponse) else None

    async def _resolve_approvals(
        self, decisions: Sequence[ApprovalDecision], finish: _FinishTool | None
    ) -> None:
        """Apply the (checked) decisions; every pending call without one is refused."""
        by_id = {d.call_id: d for d in decisions}
        pending = self._pending_approval
        self._pending_approval = {}
        self._approval_reasons = {}
        refused: list[ToolResultBlock] = []
        to_run: list[ToolUseBlock] = []
        notes: dict[str, str | None] = {}
        for call_id, call in pending.items():
            decision = by_id.get(call_id)
            if decision is None or decision.action == "reject":
                why = f": {decision.reason}" if decision is not None and decision.reason else "."
                refused.append(
                    ToolResultBlock(
                        id=call.id, name=call.name, output=f"A human refused this call{why}", is_error=True
                    )
                )
                continue
            if decision.arguments is not None:
                call = call.model_copy(update={"input": decision.arguments})
                note = (
                    f"A human changed the arguments to {json.dumps(decision.arguments, ensure_ascii=False)}"
                )
                notes[call_id] = f"[{note}{f': {decision.reason}' if decision.reason else ''}]"
            else:
                notes[call_id] = (
                    f"[A human approved this call: {decision.reason}]" if decision.reason else None
                )
            to_run.append(call)
        if refused:
            await self._remember(Msg(role="tool", content=list(refused)))
            if self.streaming:
                for result in refused:
                    await self.emit(ToolResultEvent(result=result, agent=self.name))
        if to_run:
            self._resumed_notes = notes
            try:
                with approved_calls():
                    await self._acting(to_run, finish)
            finally:
                self._resumed_notes = {}

    # ------------------------------------------------------------------ running out of steps

    async def _max_iters_reply(self, finish: _FinishTool | None) -> Msg:
        messages = await self._model_input()
        messages.append(Msg(role="user", name="system", content=_MAX_ITERS_HINT))
        if finish is not None:
            response = await self._call_model(messages, [finish.schema], FINISH_TOOL_NAME)
            for call in response.tool_calls:
                if call.name == FINISH_TOOL_NAME and not finish.accept(call).is_error and finish.output:
                    assistant = response.to_msg(self.name)
                    await self._remember(assistant)
                    # Every call of the response gets its result: the accepted answer, and the others not run.
                    results = [
                        ToolResultBlock(id=c.id, name=c.name, output="Accepted.")
                        if c.id == call.id
                        else ToolResultBlock(id=c.id, name=c.name, output=_NOT_RUN_OUTPUT, is_error=True)
                        for c in response.tool_calls
                    ]
                    await self._remember(Msg(role="tool", content=list(results)))
                    return _structured_reply(self.name, assistant, finish.output, max_iters_reached=True)
        else:
            response = await self._call_model(messages, self.toolkit.schemas(), "none")
        reply = Msg(
            role="assistant",
            name=self.name,
            content=response.text or "I could not finish within the allowed number of steps.",
            metadata={"max_iters_reached": True},
        )
        await self._remember(reply)
        return reply

    # ------------------------------------------------------------------ memory and context

    async def _remember(self, msgs: Msg | Sequence[Msg]) -> None:
        """Store ``msgs`` repaired by the ledger: every tool call in memory gets exactly one result.

        Shielded: a cancellation arriving meanwhile takes effect after, so the ledger and memory agree. An
        :class:`InMemoryMemory` never suspends, so nothing can arrive in between: no shield (a tenth of a step).
        """
        with anyio.CancelScope(shield=True) if not _stores_in_place(self.memory) else nullcontext():
            await self._store(msgs)

    async def _store(self, msgs: Msg | Sequence[Msg]) -> None:
        if not self._ledger.primed:
            self._ledger.prime(await self.memory.get(limit=_PRIME_TAIL))
        stored = self._ledger.write(msgs, held=self._pending_approval)
        await self.memory.add(stored[0] if len(stored) == 1 else stored)

    def _offload_tool(self) -> ToolSchema | None:
        """The ``read_offloaded`` tool, offered while results may be offloaded (unless a tool has its name)."""
        if self.context is None or READ_OFFLOADED in self.toolkit:
            return None
        return self.context.offload_tool

    async def observe(self, msg: Msg | Sequence[Msg] | None) -> None:
        """Take in ``msg`` without replying, through the tool-call ledger like every message stored."""
        if msg is None:
            return
        for m in [msg] if isinstance(msg, Msg) else list(msg):
            await self._remember(await self._run_hooks("pre_observe", m))

    async def handle_interrupt(self, msg: Msg | Sequence[Msg] | None = None, **kwargs: Any) -> Msg:
        """Answer the calls an interruption left without a result (synthetic errors), then reply as usual."""
        await self._remember([])  # primes the ledger when nothing was written yet
        closing = self._ledger.close(held=self._pending_approval)
        if closing is not None:
            with anyio.CancelScope(shield=True):
                await self.memory.add(closing)
        return await super().handle_interrupt(msg, **kwargs)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["sys_prompt"] = self.sys_prompt
        state["pending_approval"] = [c.model_dump(mode="json") for c in self._pending_approval.values()]
        state["approval_reasons"] = dict(self._approval_reasons)
        if self.context is not None:
            state["context"] = self.context.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._ledger.reset()  # the memory may be another one now: learn its waiting calls again
        if self.context is not None:
            self.context.load_state_dict(state.get("context", {}))
        self.sys_prompt = state.get("sys_prompt", self.sys_prompt)
        pending = [ToolUseBlock.model_validate(c) for c in state.get("pending_approval", [])]
        self._pending_approval = {c.id: c for c in pending}
        reasons: dict[str, str] = state.get("approval_reasons", {})
        self._approval_reasons = {i: reasons[i] for i in self._pending_approval if i in reasons}


def _stores_in_place(memory: MemoryBase) -> bool:
    """True for a memory whose ``get`` and ``add`` are :class:`InMemoryMemory`'s, which never suspend."""
    kind = type(memory)
    return kind.add is InMemoryMemory.add and kind.get is InMemoryMemory.get


def _attach_usage(msg: Msg, response: ChatResponse) -> None:
    if response.usage is not None:
        msg.metadata["usage"] = {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
        }


def _with_note(result: ToolResultBlock, note: str) -> ToolResultBlock:
    """``result`` with ``note`` (a human's decision on the call) before its output."""
    if isinstance(result.output, str):
        output: str | list[Any] = f"{note}\n{result.output}"
    else:
        output = [TextBlock(text=note), *result.output]
    return result.model_copy(update={"output": output})


def _structured_reply(
    name: str, assistant: Msg, output: BaseModel, *, max_iters_reached: bool = False
) -> Msg:
    data = output.model_dump(mode="json")
    metadata: dict[str, Any] = {"structured_output": data}
    if max_iters_reached:
        metadata["max_iters_reached"] = True
    return Msg(role="assistant", name=name, content=assistant.text or json.dumps(data), metadata=metadata)
