"""Token counting: a model's own tokenizer when one is known, an estimate otherwise.

A :class:`TokenCounter` counts a request the way it goes out: messages formatted for the wire, tool schemas
included. Counters:

- :class:`EstimateTokenCounter`: characters / 4 of the request formatted as OpenAI Chat Completions JSON
  (:func:`~agentscope.formatters.format_openai_messages` and
  :func:`~agentscope.formatters.format_openai_tools`). No dependency, no I/O; within ~25 % of real BPE
  tokenizers on English text and JSON, higher on code, lower on CJK text (fewer characters per token).
- :class:`HFTokenCounter`: a Hugging Face tokenizer (an object, or a name or path loaded from local files only:
  nothing is downloaded). The messages go through the tokenizer's chat template when it has one (tools
  included), else the formatted request's JSON is encoded.
- :class:`ModelTokenCounter`: a model that counts for itself (a ``count_tokens(messages, tools)`` method, e.g. a
  client of a rollout service that holds the policy's tokenizer).

:func:`token_counter_for` picks one for a model.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import anyio.to_thread

from agentscope.formatters import format_openai_messages, format_openai_tools
from agentscope.message import Msg
from agentscope.types import ToolSchema

__all__ = [
    "CHARS_PER_TOKEN",
    "EstimateTokenCounter",
    "HFTokenCounter",
    "ModelTokenCounter",
    "TokenCounter",
    "TokenCountingModel",
    "load_local_tokenizer",
    "token_counter_for",
]

logger = logging.getLogger("agentscope.context")

CHARS_PER_TOKEN = 4.0
"""Characters per token of the estimate (OpenAI's rule of thumb for English text)."""

_MESSAGE_OVERHEAD = 4
"""Tokens a chat format adds per message (role markers, separators), in the estimate."""


class TokenCounter(ABC):
    """Counts the tokens of a request: messages and tool schemas, as the model will see them."""

    name: str = "counter"
    """What counts (recorded on the ``compact_context`` span): ``estimate``, ``hf:<tokenizer>``, ``model``."""

    @abstractmethod
    async def count(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] = ()) -> int:
        """Tokens of the whole request."""

    async def count_each(self, messages: Sequence[Msg]) -> list[int]:
        """Tokens of each message on its own (their sum is close to, not exactly, :meth:`count` of all)."""
        return [await self.count([m]) for m in messages]


class EstimateTokenCounter(TokenCounter):
    """``ceil(characters / chars_per_token)`` of the request as OpenAI JSON, plus a few tokens per message.

    Pure and fast: no tokenizer, no I/O (formatting a message takes microseconds).
    """

    name = "estimate"

    def __init__(self, chars_per_token: float = CHARS_PER_TOKEN) -> None:
        if chars_per_token <= 0:
            raise ValueError(f"chars_per_token must be positive, got {chars_per_token}")
        self.chars_per_token = chars_per_token
        """Characters per token."""

    def count_message(self, msg: Msg) -> int:
        """Tokens of one message."""
        formatted = format_openai_messages([msg])
        chars = len(json.dumps(formatted, ensure_ascii=False)) if formatted else 0
        return math.ceil(chars / self.chars_per_token) + _MESSAGE_OVERHEAD

    def count_tools(self, tools: Sequence[ToolSchema]) -> int:
        """Tokens of the tool schemas."""
        if not tools:
            return 0
        return math.ceil(
            len(json.dumps(format_openai_tools(tools), ensure_ascii=False)) / self.chars_per_token
        )

    async def count(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] = ()) -> int:
        return sum(self.count_message(m) for m in messages) + self.count_tools(tools)

    async def count_each(self, messages: Sequence[Msg]) -> list[int]:
        return [self.count_message(m) for m in messages]


@runtime_checkable
class TokenCountingModel(Protocol):
    """A model that counts the tokens of a request itself (sync or async)."""

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema]) -> int | Awaitable[int]:
        """Tokens of the request as this model would see it."""
        ...


class ModelTokenCounter(TokenCounter):
    """Counts with the model's own ``count_tokens(messages, tools)``."""

    name = "model"

    def __init__(self, model: TokenCountingModel) -> None:
        self.model = model
        """The model that counts."""

    async def count(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] = ()) -> int:
        result = self.model.count_tokens(list(messages), list(tools))
        if inspect.isawaitable(result):
            result = await result
        return int(result)


class HFTokenCounter(TokenCounter):
    """Counts with a Hugging Face tokenizer: an object, or a name or local path loaded on first use.

    A name or path is loaded with ``tokenizers`` (a folder or ``tokenizer.json``) or ``transformers``'
    ``AutoTokenizer`` with ``local_files_only=True``: from disk or the local Hugging Face cache, never
    downloaded. Tokenizing runs in a worker thread (long conversations take milliseconds).

    With a chat template (``apply_chat_template``), the request is rendered as the model sees it, tools
    included; otherwise (or when the template refuses the conversation) the OpenAI JSON of the request is
    encoded.

    Raises:
        ValueError: (on first use) the tokenizer cannot be found locally; the message says where it looked.
    """

    def __init__(self, tokenizer: str | os.PathLike[str] | Any) -> None:
        if isinstance(tokenizer, str | os.PathLike):
            path = cast("str | os.PathLike[str]", tokenizer)
            self.source: str | None = os.fspath(path)
            self._tokenizer: Any = None
        else:
            if not callable(getattr(tokenizer, "encode", None)):
                raise TypeError(f"a tokenizer needs an encode() method; got {type(tokenizer).__name__}")
            self.source = None
            self._tokenizer = tokenizer
        self.name = f"hf:{self.source or type(cast(object, tokenizer)).__name__}"
        self._lock = anyio.Lock()

    async def tokenizer(self) -> Any:
        """The tokenizer, loaded (in a worker thread) on first use."""
        if self._tokenizer is None:
            async with self._lock:
                if self._tokenizer is None:
                    assert self.source is not None
                    self._tokenizer = await anyio.to_thread.run_sync(load_local_tokenizer, self.source)
        return self._tokenizer

    async def count(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] = ()) -> int:
        tokenizer = await self.tokenizer()
        return await anyio.to_thread.run_sync(_count_with, tokenizer, list(messages), list(tools))

    async def count_each(self, messages: Sequence[Msg]) -> list[int]:
        tokenizer = await self.tokenizer()

        def each() -> list[int]:
            return [_count_with(tokenizer, [m], []) for m in messages]

        return await anyio.to_thread.run_sync(each)


def _ids_length(ids: Any) -> int:
    found: Any = ids
    if isinstance(found, Mapping):  # a BatchEncoding from apply_chat_template
        found = cast("Mapping[str, Any]", found)["input_ids"]
    found = getattr(found, "ids", found)  # tokenizers.Encoding
    return len(found)


def _count_with(tokenizer: Any, messages: list[Msg], tools: list[ToolSchema]) -> int:
    formatted = format_openai_messages(messages)
    tool_specs = format_openai_tools(tools) if tools else None
    template = getattr(tokenizer, "apply_chat_template", None)
    if callable(template) and getattr(tokenizer, "chat_template", None):
        try:
            ids = template(formatted, tools=tool_specs, tokenize=True, add_generation_prompt=False)
            return _ids_length(ids)
        except Exception as exc:  # a template that refuses this conversation: count the JSON instead
            logger.debug("the chat template failed (%s); counting the request JSON", exc)
    text = json.dumps(formatted, ensure_ascii=False)
    if tool_specs:
        text += json.dumps(tool_specs, ensure_ascii=False)
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:  # tokenizers.Tokenizer.encode takes no add_special_tokens keyword
        ids = tokenizer.encode(text)
    return _ids_length(ids)


@functools.lru_cache(maxsize=8)
def load_local_tokenizer(source: str) -> Any:
    """The tokenizer at ``source`` (a folder, a ``tokenizer.json`` or a Hugging Face name in the local cache).

    Blocking (reads files): call it from a worker thread. Never downloads. Cached by ``source``.

    Raises:
        ValueError: nothing usable is there.
    """
    from pathlib import Path

    path = Path(source)
    file = path / "tokenizer.json" if path.is_dir() else path
    if path.is_dir() and (path / "tokenizer_config.json").is_file():
        transformers = _optional("transformers")
        if transformers is not None:
            return transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    if file.is_file() and file.suffix == ".json":
        tokenizers = _optional("tokenizers")
        if tokenizers is None:
            raise ValueError(f"reading the tokenizer {source!r} needs `tokenizers`: pip install tokenizers")
        return tokenizers.Tokenizer.from_file(str(file))
    transformers = _optional("transformers")
    if transformers is None:
        raise ValueError(
            f"no tokenizer file at {source!r}; loading a tokenizer by name needs `transformers` "
            "(pip install transformers) and the tokenizer in the local Hugging Face cache"
        )
    try:
        return transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"tokenizer {source!r} is neither a local folder or tokenizer.json nor in the local Hugging Face "
            f"cache (nothing is downloaded): {exc}"
        ) from exc


def _optional(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def token_counter_for(model: object, tokenizer: str | os.PathLike[str] | Any | None = None) -> TokenCounter:
    """The counter for ``model``: ``tokenizer`` when given (``"auto"``: the model's name, if it is a local
    tokenizer), else the model's own ``count_tokens``, else :class:`EstimateTokenCounter`."""
    if tokenizer is not None and tokenizer != "auto":
        return tokenizer if isinstance(tokenizer, TokenCounter) else HFTokenCounter(tokenizer)
    if isinstance(model, TokenCountingModel):
        return ModelTokenCounter(model)
    if tokenizer == "auto":
        return _AutoCounter(str(getattr(model, "model_name", "") or ""))
    return EstimateTokenCounter()


class _AutoCounter(TokenCounter):
    """The model's tokenizer by its name when it is found locally, else the estimate (decided on first use)."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._chosen: TokenCounter | None = None
        self.name = "auto"

    async def _choose(self) -> TokenCounter:
        if self._chosen is None:
            counter: TokenCounter = EstimateTokenCounter()
            if self.model_name:
                try:
                    loaded = await anyio.to_thread.run_sync(load_local_tokenizer, self.model_name)
                    counter = HFTokenCounter(loaded)
                    counter.name = f"hf:{self.model_name}"
                except ValueError as exc:
                    logger.info("no local tokenizer for %r, estimating tokens: %s", self.model_name, exc)
            self._chosen = counter
            self.name = counter.name
        return self._chosen

    async def count(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] = ()) -> int:
        return await (await self._choose()).count(messages, tools)

    async def count_each(self, messages: Sequence[Msg]) -> list[int]:
        return await (await self._choose()).count_each(messages)
