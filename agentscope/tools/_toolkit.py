"""The :class:`Toolkit`: Python callables registered as tools, described to the model and run safely.

What a tool call can end in (the toolkit never raises for a tool's own problems)::

    unknown tool, inactive group   -> error result naming the tool and listing the available ones
    arguments not JSON             -> error result "arguments were not valid JSON: ...; you sent: ..."
    arguments unusable JSON        -> error result saying why: nested too deeply, invalid Unicode, NaN...
    arguments fail validation      -> error result naming each bad parameter (tool not called)
    approval policy denies it      -> error result "denied by policy: <reason>" (tool not called)
    approval policy asks           -> ApprovalRequired, as below (unless inside approved_calls())
    tool raises ModelRetry(msg)    -> error result, exactly msg
    tool raises another Exception  -> error result "<ExcType>: <message>" (traceback logged at debug level)
    tool exceeds its timeout       -> error result "Tool 'x' timed out after Xs"
    tool raises ApprovalRequired   -> propagates to the caller (the agent pauses for a human)
    the caller is cancelled        -> cancellation propagates (never swallowed)
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, overload

import anyio
from pydantic import BaseModel, ConfigDict, create_model

from agentscope._errors import unwrap_group
from agentscope.exceptions import ApprovalRequired, ModelRetry, UsageError
from agentscope.formatters import json_value_problem, load_tool_arguments
from agentscope.message import ToolResultBlock, ToolUseBlock
from agentscope.tools._convert import (
    error_response,
    merge_responses,
    shorten,
    to_response,
    to_result_block,
)
from agentscope.tools._invoke import ToolTimeout, invoke, stream_pieces
from agentscope.tools._policy import ApprovalPolicy, enforce_policy
from agentscope.tools._schema import (
    CallKind,
    FunctionSpec,
    build_function_spec,
    default_tool_name,
)
from agentscope.tools._tool_info import ToolGroup, ToolInfo
from agentscope.tracing import switch, tool_execute, tool_stream
from agentscope.types import ToolResponse, ToolSchema

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agentscope.tools._mcp_client import MCPClient

__all__ = ["BASIC_GROUP", "ToolGroup", "ToolInfo", "Toolkit"]

logger = logging.getLogger("agentscope.tools")

F = TypeVar("F", bound=Callable[..., Any])

BASIC_GROUP: Final = "basic"
"""The group tools join when none is named; it exists in every toolkit and starts active."""

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RAW_LIMIT = 200
_ANY_ARGUMENTS: type[BaseModel] = create_model("any_arguments", __config__=ConfigDict(extra="allow"))
"""Arguments model of tools whose schema is checked elsewhere (MCP tools: by their server): any JSON object."""


class Toolkit:
    """Python callables registered as tools: JSON schemas for the model, validated and guarded calls.

    Register plain functions, ``async`` functions, generators and async generators (streaming tools), bound
    methods and callable objects. The schema comes from the signature (types via pydantic) and the docstring
    (description and per-parameter text; Google, NumPy and Sphinx styles). Schemas, validators and the
    parameter mapping are built once at registration, so a call costs one validation.

    Tools belong to groups; only tools in active groups are offered (:meth:`schemas`) and callable. Group
    ``"basic"`` always exists and starts active.

    Sync callables run in a worker thread (``anyio.to_thread.run_sync``, context variables copied) so they never
    block the event loop. A sync tool that times out, or whose caller is cancelled, is abandoned: Python cannot
    stop a thread, so it runs on in the background and its result is discarded. Async tools are cancelled. A sync
    function that only computes and returns in microseconds can be registered with ``inline=True`` to run on the
    event loop and skip the thread hand-off (about half the cost of a tool call).

    The toolkit is safe to use from many concurrent tasks.
    """

    def __init__(
        self, default_timeout_s: float | None = None, *, approval_policy: ApprovalPolicy | None = None
    ) -> None:
        """Create an empty toolkit.

        Args:
            default_timeout_s: Timeout for tools registered without their own ``timeout_s``; ``None``: none.
            approval_policy: Rules that allow, ask a human about, or deny each call (docs/approvals.md).
        """
        _check_timeout(default_timeout_s)
        self.default_timeout_s: float | None = default_timeout_s
        """Timeout for tools registered without their own; ``None`` means none."""
        self.approval_policy: ApprovalPolicy | None = approval_policy
        """Consulted for every call whose arguments fit the tool, before it runs; ``None``: every call runs."""
        self._tools: dict[str, ToolInfo] = {}
        self._groups: dict[str, ToolGroup] = {BASIC_GROUP: ToolGroup(BASIC_GROUP, "Basic tools", active=True)}
        self._schemas: list[ToolSchema] | None = None

    # ------------------------------------------------------------------ registry

    def register(
        self,
        func: F,
        *,
        name: str | None = None,
        description: str | None = None,
        group: str = BASIC_GROUP,
        timeout_s: float | None = None,
        preset_kwargs: Mapping[str, Any] | None = None,
        inline: bool = False,
    ) -> F:
        """Register ``func`` as a tool and return it unchanged.

        Args:
            func: A function, coroutine function, (async) generator function, bound method or callable object.
            name: Name the model calls it by (letters, digits, ``_`` and ``-``, at most 64); default: its
                ``__name__``.
            description: What the model is told it does; default: the docstring's summary and body.
            group: The group it joins; the group must exist (see :meth:`create_group`).
            timeout_s: Seconds a call may take before it is reported as timed out; default: the toolkit's.
            preset_kwargs: Arguments passed on every call; they are left out of the schema, so the model
                neither sees nor sets them.
            inline: Run a sync function (or sync generator) on the event loop instead of a worker thread. Only
                for code that never blocks and returns in microseconds (pure computation): while it runs, every
                other agent in the process waits, and no timeout can interrupt it (so it takes none).

        Raises:
            UsageError: the name is taken or invalid, the group does not exist, the callable cannot be
                described, or ``inline`` is asked of an async callable or together with ``timeout_s``.
        """
        tool_name = name if name is not None else default_tool_name(func)
        if not _NAME_RE.fullmatch(tool_name):
            raise UsageError(
                f"invalid tool name {tool_name!r}: use 1-64 letters, digits, '_' or '-' (pass name=...)"
            )
        if tool_name in self._tools:
            raise UsageError(f"a tool named {tool_name!r} is already registered; remove it first")
        if group not in self._groups:
            raise UsageError(f"tool group {group!r} does not exist; create it with create_group({group!r})")
        _check_timeout(timeout_s)
        preset = MappingProxyType(dict(preset_kwargs or {}))
        spec = build_function_spec(func, name=tool_name, preset=preset)
        if inline and spec.kind in (CallKind.ASYNC, CallKind.ASYNC_GEN):
            raise UsageError(
                f"tool {tool_name!r} is async: it runs on the event loop already; drop inline=True"
            )
        if inline and timeout_s is not None:
            raise UsageError(
                f"tool {tool_name!r}: an inline tool cannot be interrupted, so it takes no timeout_s; "
                "drop one of them"
            )
        tool_description = description if description is not None else spec.description
        self._tools[tool_name] = ToolInfo(
            name=tool_name,
            description=tool_description,
            group=group,
            func=func,
            schema=ToolSchema(name=tool_name, description=tool_description, parameters=spec.parameters),
            timeout_s=timeout_s,
            preset_kwargs=preset,
            streaming=spec.kind in (CallKind.ASYNC_GEN, CallKind.SYNC_GEN),
            inline=inline,
            _spec=spec,
        )
        self._schemas = None
        return func

    async def register_mcp(
        self,
        client: MCPClient,
        *,
        prefix: str | None = None,
        include: Sequence[str] | Callable[[str], bool] | None = None,
        exclude: Sequence[str] | Callable[[str], bool] | None = None,
        group: str = BASIC_GROUP,
        timeout_s: float | None = None,
        progress: bool = True,
    ) -> list[str]:
        """Register the tools of a connected MCP server; return their names in this toolkit.

        Each tool keeps the server's JSON schema and description; the server validates the arguments. Calls go
        through ``client`` (see :meth:`MCPClient.call_tool` for what the model sees when the server fails), so
        the client must stay open while the tools are used. All or nothing: when a name is taken, nothing is
        registered.

        Args:
            client: A connected :class:`~agentscope.tools.MCPClient`.
            prefix: Prepended to every tool name (``"fs_"``), to keep several servers apart. Characters a model
                cannot use in a tool name become ``_``.
            include: Only these tools (their names on the server, or a predicate on them).
            exclude: Not these tools (their names on the server, or a predicate on them).
            group: The group they join; it must exist.
            timeout_s: Limit for each call in this toolkit; default: the toolkit's (the client has its own).
            progress: Register them as streaming tools whose progress notifications become pieces of output
                (``ToolResultDelta`` events of a streaming agent); ``False``: plain async tools.

        Raises:
            UsageError: a name is taken, the group does not exist, or the client is not connected.
            MCPConnectionError: the server cannot be reached.
        """
        if group not in self._groups:
            raise UsageError(f"tool group {group!r} does not exist; create it with create_group({group!r})")
        _check_timeout(timeout_s)
        entries = await client.tool_entries(
            prefix=prefix, include=include, exclude=exclude, progress=progress
        )
        names = [e.name for e in entries]
        clashing = sorted({n for n in names if names.count(n) > 1})
        if clashing:
            raise UsageError(
                f"the tools of MCP server {client.name!r} map to the same tool names {clashing} (characters a "
                "model cannot use become '_'); exclude=... one of each"
            )
        taken = [e.name for e in entries if e.name in self._tools]
        if taken:
            raise UsageError(
                f"cannot register the tools of MCP server {client.name!r}: {taken} already registered; "
                "pass prefix=... or exclude=..."
            )
        kind = CallKind.ASYNC_GEN if progress else CallKind.ASYNC
        for entry in entries:
            spec = FunctionSpec(
                description=entry.description,
                parameters=entry.parameters,
                model=_ANY_ARGUMENTS,
                positional=(),
                keywords=(),
                accepts_extra=True,
                kind=kind,
                param_names=tuple(cast("dict[str, Any]", entry.parameters.get("properties") or {})),
            )
            self._tools[entry.name] = ToolInfo(
                name=entry.name,
                description=entry.description,
                group=group,
                func=entry.func,
                schema=ToolSchema(
                    name=entry.name, description=entry.description, parameters=entry.parameters
                ),
                timeout_s=timeout_s,
                preset_kwargs=MappingProxyType({}),
                streaming=progress,
                inline=False,
                _spec=spec,
            )
        self._schemas = None
        return [e.name for e in entries]

    @overload
    def tool(self, func: F, /) -> F: ...

    @overload
    def tool(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        group: str = BASIC_GROUP,
        timeout_s: float | None = None,
        preset_kwargs: Mapping[str, Any] | None = None,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        func: F | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        group: str = BASIC_GROUP,
        timeout_s: float | None = None,
        preset_kwargs: Mapping[str, Any] | None = None,
    ) -> F | Callable[[F], F]:
        """Decorator form of :meth:`register`: ``@toolkit.tool`` or ``@toolkit.tool(name=..., group=...)``."""
        if func is not None:
            return self.register(func)

        def decorate(f: F) -> F:
            return self.register(
                f,
                name=name,
                description=description,
                group=group,
                timeout_s=timeout_s,
                preset_kwargs=preset_kwargs,
            )

        return decorate

    def remove(self, name: str) -> None:
        """Unregister a tool.

        Raises:
            UsageError: no tool has that name.
        """
        if self._tools.pop(name, None) is None:
            raise UsageError(f"no tool named {name!r} is registered")
        self._schemas = None

    def get(self, name: str) -> ToolInfo | None:
        """The registered tool called ``name`` (active or not), or ``None``."""
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        """Names of all registered tools, active or not, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"Toolkit(tools={self.names!r}, active_groups={self.active_groups!r})"

    # ------------------------------------------------------------------ groups

    def create_group(
        self, name: str, description: str = "", *, active: bool = False, instructions: str | None = None
    ) -> ToolGroup:
        """Create a tool group (inactive unless ``active=True``) and return it.

        Args:
            name: Group name, used by :meth:`register` and :meth:`set_group_active`.
            description: What the group is for.
            active: Whether its tools are offered right away.
            instructions: How to use its tools; :meth:`group_instructions` includes it while the group is
                active.

        Raises:
            UsageError: a group with that name exists.
        """
        if name in self._groups:
            raise UsageError(f"tool group {name!r} already exists")
        group = ToolGroup(name, description, active=active, instructions=instructions)
        self._groups[name] = group
        self._schemas = None
        return group

    def set_group_active(self, name: str, active: bool) -> None:
        """Switch a group on or off.

        Raises:
            UsageError: no group has that name.
        """
        group = self._groups.get(name)
        if group is None:
            raise UsageError(f"tool group {name!r} does not exist; groups: {', '.join(self._groups)}")
        if group.active != active:
            group.active = active
            self._schemas = None

    @property
    def groups(self) -> list[ToolGroup]:
        """All groups, in creation order (``basic`` first)."""
        return list(self._groups.values())

    @property
    def active_groups(self) -> list[str]:
        """Names of the active groups, in creation order."""
        return [g.name for g in self._groups.values() if g.active]

    def group_instructions(self) -> str:
        """Instructions of the active groups that have some, as one Markdown text for the system prompt.

        Returns ``""`` when no active group has instructions.
        """
        parts: list[str] = []
        for group in self._groups.values():
            if group.active and group.instructions:
                title = f"## Tool group: {group.name}"
                if group.description:
                    title += f" ({group.description})"
                parts.append(f"{title}\n{group.instructions.strip()}")
        return "\n\n".join(parts)

    # ------------------------------------------------------------------ schemas

    def schemas(self) -> list[ToolSchema]:
        """The tools of the active groups as the model sees them, in registration order.

        The list is cached until a tool is registered or removed or a group changes state.
        """
        if self._schemas is None:
            groups = self._groups
            self._schemas = [t.schema for t in self._tools.values() if groups[t.group].active]
        return list(self._schemas)

    # ------------------------------------------------------------------ calls

    def _available(self) -> str:
        names = [s.name for s in self.schemas()]
        return f"Available tools: {', '.join(names)}." if names else "No tools are available."

    def _prepare(self, call: ToolUseBlock) -> tuple[ToolInfo, list[Any], dict[str, Any]] | ToolResponse:
        """Look the tool up and validate the arguments; an error response when the tool must not be called."""
        tool = self._tools.get(call.name)
        if tool is None:
            return error_response(f"Unknown tool '{call.name}'. {self._available()}")
        if not self._groups[tool.group].active:
            return error_response(
                f"Tool '{call.name}' is not available: its group '{tool.group}' is not active. "
                + self._available()
            )
        arguments: Any = call.input
        if call.raw_input is not None:  # the model's arguments could not be parsed: say why
            loaded = load_tool_arguments(call.raw_input)
            if isinstance(loaded, str):
                return error_response(f"{loaded}; you sent: {shorten(call.raw_input, _RAW_LIMIT)}")
            arguments = loaded  # an empty argument string means "no arguments"
        else:
            problem = json_value_problem(arguments)
            if problem is not None:
                return error_response(problem)
        bound = tool.bind(arguments)
        if isinstance(bound, ToolResponse):
            return bound
        if self.approval_policy is not None:  # may raise ApprovalRequired
            denied = enforce_policy(self.approval_policy, tool.name, arguments)
            if denied is not None:
                return denied
        return tool, *bound

    def _timeout_of(self, tool: ToolInfo) -> float | None:
        if tool.inline:
            return None  # nothing could interrupt it
        return tool.timeout_s if tool.timeout_s is not None else self.default_timeout_s

    def _failure(self, tool: ToolInfo, exc: Exception, output_so_far: list[ToolResponse]) -> ToolResponse:
        """The error response for an exception raised while running a tool; re-raises what must propagate.

        For a streaming tool that already produced output, the model sees that output followed by the error
        (except for ``ModelRetry``, whose message is always sent alone).
        """
        inner = unwrap_group(exc)
        if isinstance(inner, ApprovalRequired):
            raise inner
        if isinstance(inner, ModelRetry):
            return error_response(inner.message)
        if isinstance(inner, ToolTimeout):
            message = f"Tool '{tool.name}' timed out after {inner.args[0]:g}s"
        else:
            logger.debug("tool %r raised", tool.name, exc_info=inner)
            text = str(inner)
            message = f"{type(inner).__name__}: {text}" if text else type(inner).__name__
        if not output_so_far:
            return error_response(message)
        output = merge_responses(output_so_far)
        if output.text_content and not output.text_content.endswith("\n"):
            message = "\n" + message
        merged = merge_responses([output, ToolResponse.text(message)])
        return merged.model_copy(update={"is_error": True})

    async def _run(self, tool: ToolInfo, args: list[Any], kwargs: dict[str, Any]) -> ToolResponse:
        """Run a non-streaming tool to completion, within its timeout."""
        timeout = self._timeout_of(tool)
        try:
            if timeout is None:
                result = await invoke(tool, args, kwargs)
            else:
                result: object = None
                with anyio.move_on_after(timeout) as scope:
                    result = await invoke(tool, args, kwargs)
                if scope.cancelled_caught:
                    raise ToolTimeout(timeout)
        except Exception as exc:
            return self._failure(tool, exc, [])
        return to_response(result)

    async def execute(self, call: ToolUseBlock) -> ToolResponse:
        """Run one tool call; return the whole :class:`ToolResponse` (``structured`` and ``metadata`` too).

        Behaves like :meth:`call` (which returns this response as a :class:`ToolResultBlock`); the pieces of a
        streaming tool are merged.

        Raises:
            ApprovalRequired: the tool asked for a human's approval.
        """
        if switch.ON:  # an ``execute_tool`` span around the call
            return await tool_execute(call, self._execute)
        return await self._execute(call)

    async def _execute(self, call: ToolUseBlock) -> ToolResponse:
        prepared = self._prepare(call)
        if isinstance(prepared, ToolResponse):
            return prepared
        tool, args, kwargs = prepared
        if not tool.streaming:
            return await self._run(tool, args, kwargs)
        pieces: list[ToolResponse] = []
        gen = stream_pieces(partial(tool.func, *args, **kwargs), self._timeout_of(tool), inline=tool.inline)
        try:
            async for piece in gen:
                pieces.append(piece)
        except Exception as exc:
            return self._failure(tool, exc, pieces)
        finally:
            await gen.aclose()
        return merge_responses(pieces)

    async def call(self, call: ToolUseBlock) -> ToolResultBlock:
        """Run one tool call and return the result the model sees.

        Never raises for the tool's problems (unknown tool, bad arguments, exceptions, timeouts): those come
        back as a result with ``is_error=True``. A streaming tool's pieces are merged into one result.

        Raises:
            ApprovalRequired: the tool asked for a human's approval.
        """
        return to_result_block(call.id, call.name, await self.execute(call))

    def stream(self, call: ToolUseBlock) -> AsyncIterator[ToolResponse | ToolResultBlock]:
        """Run one tool call: yield each piece of a streaming tool's output as it comes, then the result.

        Yields zero or more :class:`ToolResponse` pieces (only streaming tools produce them), then exactly one
        :class:`ToolResultBlock` merging them, the same as :meth:`call` returns. Errors are reported as in
        :meth:`call`. A streaming tool's timeout counts only the time spent inside the tool, not the time the
        consumer takes between pieces.

        Raises:
            ApprovalRequired: the tool asked for a human's approval.
        """
        if switch.ON:  # an ``execute_tool`` span around the call
            return tool_stream(call, self._stream(call), ToolResultBlock)
        return self._stream(call)

    async def _stream(self, call: ToolUseBlock) -> AsyncIterator[ToolResponse | ToolResultBlock]:
        prepared = self._prepare(call)
        if isinstance(prepared, ToolResponse):
            yield to_result_block(call.id, call.name, prepared)
            return
        tool, args, kwargs = prepared
        if not tool.streaming:
            yield to_result_block(call.id, call.name, await self._run(tool, args, kwargs))
            return
        pieces: list[ToolResponse] = []
        gen = stream_pieces(partial(tool.func, *args, **kwargs), self._timeout_of(tool), inline=tool.inline)
        final: ToolResponse | None = None
        try:
            while final is None:
                try:
                    piece = await gen.__anext__()
                except StopAsyncIteration:
                    final = merge_responses(pieces)
                except Exception as exc:
                    final = self._failure(tool, exc, pieces)
                else:
                    pieces.append(piece)
                    yield piece
        finally:
            await gen.aclose()
        yield to_result_block(call.id, call.name, final)


def _check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and not timeout_s > 0:
        raise UsageError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
