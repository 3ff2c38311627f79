"""Attribute expansion, in the tracer's writer thread or its writer process: a GenAI span's fields become its name
and attributes.

In the writer process the fields hold what ``_wire`` rebuilds: light objects with the attributes read here (content
blocks as dicts), not the app's pydantic models. An expander reads only those attributes, and never tells a model
apart by ``isinstance`` beyond what ``_wire`` mirrors (``type(result) is ToolResultBlock``: the writer's results
carry ``content``); ``tests/tracing/test_writer_process.py`` checks that both writers store the same rows.

The wrappers of ``_genai`` leave a finished :class:`AgentSpan`, :class:`ModelSpan` or :class:`ToolSpan` with an
empty name and the objects of the call in its fields. Its expander (:data:`EXPANDERS`) names it (``chat gpt-4o``, ``execute_tool
add``, ``invoke_agent helper``) and writes its GenAI attributes, each straight to JSON through the encoder's
:class:`Fragments` (cached; long values become blob references), in this order: the request's attributes, the
attributes set on the span itself (errors, ``time_to_first_chunk``; they win over the request's), the response's
(they win over both), then the messages, tool definitions, results and token ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, cast

from agentscope.message import Msg, ToolResultBlock
from agentscope.tracing._genai import AgentSpan, ModelSpan, ToolSpan

if TYPE_CHECKING:
    from agentscope.tracing._spans import Span

__all__ = ["CONTENT_ATTRIBUTES", "EXPANDERS", "PROVIDERS", "Expanded", "Fragments", "drop_content"]

PROVIDERS = {"OpenAIChatModel": "openai", "AnthropicChatModel": "anthropic"}
"""``gen_ai.provider.name`` of our model classes (others are named by their class)."""

CONTENT_ATTRIBUTES = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "agentscope.prompt_token_ids",
        "agentscope.completion_token_ids",
        "agentscope.logprobs",
    }
)
"""Attributes that hold what was said (messages, tool arguments and results, token ids): left out of every span
when a tracer runs with ``capture_content=False``, as OpenTelemetry's GenAI conventions allow."""

_SETTING_ATTRIBUTES = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
}


class Fragments(Protocol):
    """What the encoder offers expansion: JSON text for names and values, cached; long values become blob
    references."""

    def key(self, key: str) -> str:
        """An attribute name and its colon: ``"gen_ai.tool.name":``."""
        ...

    def value(self, value: object) -> str:
        """Any JSON-compatible value."""
        ...

    def json(self, value: object) -> str:
        """Content blocks or any JSON value (pydantic models included)."""
        ...

    def messages(self, messages: Sequence[Msg]) -> str:
        """A list of messages (a conversation resent with every call costs only its new messages)."""
        ...

    def tools(self, tools: Sequence[Any]) -> str:
        """Tool definitions (stored once per distinct list)."""
        ...

    def blob(self, value: object) -> str:
        """A value always stored by reference (token ids, log-probs)."""
        ...


Expanded: TypeAlias = tuple[list[str], int | None, int | None, str | None]
"""A GenAI span's attributes (``"name":value`` JSON fragments, in order), input and output tokens, agent name."""


def drop_content(span: Span) -> None:
    """Remove the :data:`CONTENT_ATTRIBUTES` from a span of the generic API."""
    attributes = span.attributes
    for key in CONTENT_ATTRIBUTES.intersection(attributes):
        del attributes[key]
    payloads = span.payloads
    if payloads:
        for key in CONTENT_ATTRIBUTES.intersection(payloads):
            del payloads[key]


def _with_own(
    parts: list[str], request: int, response: int, own: Mapping[str, object], out: Fragments, capture: bool
) -> list[str]:
    """``parts`` (request attributes up to index ``request``, response attributes up to ``response``, then the
    payloads) with the attributes set on the span itself placed between request and response: a name written
    twice keeps one place, the first, and the later value (request < own < response)."""
    merged = {_name(part): part for part in parts[:request]}
    for key, value in own.items():
        if capture or key not in CONTENT_ATTRIBUTES:
            merged[key] = out.key(key) + out.value(value)
    for part in parts[request:response]:
        merged[_name(part)] = part
    return [*merged.values(), *parts[response:]]


def _name(part: str) -> str:
    """The attribute name of a ``"name":value`` fragment (our names need no JSON escapes)."""
    return part[1 : part.index('":')]


def _expand_agent(span: AgentSpan, out: Fragments, capture: bool) -> Expanded:
    agent = span.agent
    name: str = agent.name
    span.name = f"invoke_agent {name}"
    value = out.value
    parts = [
        '"gen_ai.operation.name":"invoke_agent"',
        '"gen_ai.agent.name":' + value(name),
        '"gen_ai.agent.id":' + value(agent.id),
    ]
    if agent.description:
        parts.append('"gen_ai.agent.description":' + value(agent.description))
    reply = span.reply
    if reply is not None and reply.metadata.get("interrupted"):
        parts.append('"agentscope.interrupted":true')
    request = len(parts)
    if capture:
        msg = span.msg
        if msg is not None:
            sent = (msg,) if type(msg) is Msg or isinstance(msg, Msg) else msg
            parts.append('"gen_ai.input.messages":' + out.messages(sent))
        if reply is not None:
            parts.append('"gen_ai.output.messages":' + out.messages((reply,)))
    own = span.attributes
    if not own:
        return parts, None, None, name
    agent_name = own.get("gen_ai.agent.name", name)
    parts = _with_own(parts, request, request, own, out, capture)
    return parts, *_own_tokens(own), agent_name if type(agent_name) is str else None


def _expand_model(span: ModelSpan, out: Fragments, capture: bool) -> Expanded:
    model = span.model
    model_name: str = model.model_name
    model_class = type(model).__name__
    span.name = f"chat {model_name}"
    value = out.value
    parts = [
        '"gen_ai.operation.name":"chat"',
        '"gen_ai.provider.name":' + value(PROVIDERS.get(model_class, model_class)),
        '"gen_ai.request.model":' + value(model_name),
    ]
    if span.tool_choice is not None:
        parts.append('"agentscope.request.tool_choice":' + value(span.tool_choice))
    if span.settings:
        for key, setting in span.settings.items():
            if key in _SETTING_ATTRIBUTES:
                parts.append(out.key(_SETTING_ATTRIBUTES[key]) + value(setting))
    if span.streaming:
        parts.append('"agentscope.request.stream":true')
    request = len(parts)
    response = span.response
    input_tokens = output_tokens = None
    if response is not None:
        if response.model:
            parts.append('"gen_ai.response.model":' + value(response.model))
        if response.id:
            parts.append('"gen_ai.response.id":' + value(response.id))
        if response.finish_reason:
            parts.append('"gen_ai.response.finish_reasons":[' + value(response.finish_reason) + "]")
        usage = response.usage
        if usage is not None:
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
            parts.append(f'"gen_ai.usage.input_tokens":{input_tokens}')
            parts.append(f'"gen_ai.usage.output_tokens":{output_tokens}')
        if response.policy_version is not None:
            parts.append(f'"agentscope.policy_version":{int(response.policy_version)}')
    responded = len(parts)
    if capture:
        parts.append('"gen_ai.input.messages":' + out.messages(span.messages))
    if span.tools:
        parts.append('"gen_ai.tool.definitions":' + out.tools(span.tools))
    if response is not None and capture:
        parts.append('"gen_ai.output.messages":' + out.json(response.content))
        if response.prompt_token_ids is not None:
            parts.append('"agentscope.prompt_token_ids":' + out.blob(response.prompt_token_ids))
        if response.completion_token_ids is not None:
            parts.append('"agentscope.completion_token_ids":' + out.blob(response.completion_token_ids))
        if response.logprobs is not None:
            parts.append('"agentscope.logprobs":' + out.blob(response.logprobs))
    own = span.attributes
    if not own:
        return parts, input_tokens, output_tokens, None
    if input_tokens is None:
        input_tokens, output_tokens = _own_tokens(own)
    return _with_own(parts, request, responded, own, out, capture), input_tokens, output_tokens, None


def _expand_tool(span: ToolSpan, out: Fragments, capture: bool) -> Expanded:
    tool_use, result = span.tool_use, span.result
    span.name = f"execute_tool {tool_use.name}"
    value = out.value
    parts = [
        '"gen_ai.operation.name":"execute_tool"',
        '"gen_ai.tool.name":' + value(tool_use.name),
        '"gen_ai.tool.call.id":' + value(tool_use.id),
        '"gen_ai.tool.type":"function"',
    ]
    if tool_use.raw_input is not None and capture:
        parts.append('"gen_ai.tool.call.arguments":' + value(tool_use.raw_input))
    output: object = None
    if result is not None:
        # (type(), not isinstance: a pydantic class's isinstance check runs Python code)
        # (no typing.cast: a call at run time; in the writer process, results are light objects with ``content``)
        called: Any = result
        output = called.output if type(called) is ToolResultBlock else called.content
        if result.is_error:
            parts.append('"error.type":"tool_error"')
            span.status = "error"
            span.status_message = _preview(output) if capture else "the tool returned an error"
    request = len(parts)
    if capture:
        if tool_use.raw_input is None:
            parts.append('"gen_ai.tool.call.arguments":' + out.json(tool_use.input))
        if result is not None:
            parts.append('"gen_ai.tool.call.result":' + out.json(output))
    own = span.attributes
    if not own:
        return parts, None, None, None
    return _with_own(parts, request, request, own, out, capture), *_own_tokens(own), None


def _own_tokens(attributes: Mapping[str, object]) -> tuple[int | None, int | None]:
    return _int(attributes.get("gen_ai.usage.input_tokens")), _int(
        attributes.get("gen_ai.usage.output_tokens")
    )


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _preview(output: object) -> str:
    if isinstance(output, str):
        return output[:500]
    texts = [  # blocks, or in the writer process the dicts they arrived as
        cast("dict[str, Any]", block).get("text", "") if type(block) is dict else getattr(block, "text", "")
        for block in cast("list[object]", output)
    ]
    return "".join(texts)[:500]


EXPANDERS: dict[type[Span], Callable[[Any, Fragments, bool], Expanded]] = {
    AgentSpan: _expand_agent,
    ModelSpan: _expand_model,
    ToolSpan: _expand_tool,
}
"""The expander of each GenAI span class: names the span and writes its attributes. Without ``capture_content``
(the third argument) the :data:`CONTENT_ATTRIBUTES` are not written (nor turned into blobs), and a failed tool
call's status message does not quote the tool's output."""
