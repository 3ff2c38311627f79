"""Token-level view of the chat format: the one place where conversations become token ids.

The rollout service and the warm start both encode through :class:`ChatTokenizer`, so the policy is trained on
exactly the token layout it is later prompted with: every message is encoded on its own (special tokens split the
text anyway), and an assistant message is encoded as the generation prompt, then its body, then ``<|im_end|>``
and ``\\n`` (the body tokenized on its own, as the policy generates it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from agentscope.message import Msg
from agentscope.models import ToolSchema
from agentscope.rl.policy._chat_format import END_OF_TEXT, IM_END, ChatFormat

__all__ = ["ChatTokenizer", "TokenizerLike", "load_tokenizer"]


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The tokenizer saved in ``path``, exactly as saved (blocking: reads files).

    A tiny policy's tokenizer (its ``tokenizer_config.json`` names an ``agentscope_tools_style``) loads as the
    ``tokenizer.json`` it was trained as: ``AutoTokenizer`` would make a ``Qwen2Tokenizer`` of it, which replaces
    the saved pre-tokenizer with Qwen2's own (one token per digit, where the tiny policy's groups digits by two).
    Any other tokenizer loads with ``AutoTokenizer``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(path) / "tokenizer_config.json"
    ours = False
    if config_file.is_file():
        try:
            ours = "agentscope_tools_style" in json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError:
            ours = False
    loader: Any = PreTrainedTokenizerFast if ours else AutoTokenizer
    return loader.from_pretrained(path)


class TokenizerLike(Protocol):
    """The parts of a Hugging Face tokenizer the rollout side uses."""

    def encode(self, text: str, /, *, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: list[int], /, *, skip_special_tokens: bool = ...) -> str: ...

    def convert_tokens_to_ids(self, tokens: str, /) -> int | None: ...


class ChatTokenizer:
    """A tokenizer and a :class:`ChatFormat` together: messages to ids, generated ids back to text.

    Args:
        tokenizer: A Hugging Face tokenizer with ``<|im_start|>`` and ``<|im_end|>`` tokens.
        chat_format: How messages are rendered.
    """

    def __init__(self, tokenizer: TokenizerLike, chat_format: ChatFormat | None = None) -> None:
        self.tokenizer = tokenizer
        """The wrapped tokenizer."""
        self.chat_format = chat_format or ChatFormat.for_tokenizer(tokenizer)
        """How messages are rendered."""
        im_end = tokenizer.convert_tokens_to_ids(IM_END)
        if im_end is None:
            raise ValueError(f"the tokenizer has no {IM_END} token, which ChatML needs")
        self.im_end_id: int = im_end
        """Id of ``<|im_end|>``, which ends every turn."""
        eot = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
        self.stop_token_ids: list[int] = [im_end] + ([eot] if eot is not None and eot != im_end else [])
        """Tokens that end a generation: ``<|im_end|>`` and ``<|endoftext|>``."""
        self.generation_prompt_ids: list[int] = self.encode(self.chat_format.generation_prompt())
        """``<|im_start|>assistant\\n``."""
        self.newline_ids: list[int] = self.encode("\n")
        """What follows ``<|im_end|>``."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens recognised, nothing added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_system(self, prompt: str | None, tools: Sequence[ToolSchema] | None) -> list[int]:
        """The system block with the tool signatures."""
        return self.encode(self.chat_format.render_system(prompt, tools))

    def encode_message(self, msg: Msg) -> list[int]:
        """One message's block; an assistant message as the policy would have generated it."""
        if msg.role == "assistant":
            return self.generation_prompt_ids + self.assistant_completion_ids(msg) + self.newline_ids
        return self.encode(self.chat_format.render_message(msg))

    def assistant_completion_ids(self, msg: Msg) -> list[int]:
        """The ids the policy generates for ``msg``: its body, then ``<|im_end|>``."""
        return [*self.encode(self.chat_format.assistant_body(msg)), self.im_end_id]

    def closing_ids(self, completion_ids: Sequence[int]) -> list[int]:
        """What completes a generated turn in the context: ``\\n`` after ``<|im_end|>``, else both."""
        if completion_ids and completion_ids[-1] == self.im_end_id:
            return list(self.newline_ids)
        return [self.im_end_id, *self.newline_ids]

    def encode_conversation(
        self, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None = None
    ) -> tuple[list[int], list[int]]:
        """A whole transcript as ids and a loss mask (1 on what the policy generates: assistant bodies and
        their ``<|im_end|>``; 0 on everything else)."""
        system, rest = self.chat_format.system_prompt_of(messages)
        ids = self.encode_system(system, tools)
        mask = [0] * len(ids)
        for msg in rest:
            if msg.role == "assistant":
                generated = self.assistant_completion_ids(msg)
                ids += self.generation_prompt_ids + generated + self.newline_ids
                mask += (
                    [0] * len(self.generation_prompt_ids) + [1] * len(generated) + [0] * len(self.newline_ids)
                )
            else:
                block = self.encode_message(msg)
                ids += block
                mask += [0] * len(block)
        return ids, mask

    def decode_completion(self, completion_ids: Sequence[int]) -> str:
        """Generated ids as text, the closing stop token and other special tokens left out."""
        ids = list(completion_ids)
        if ids and ids[-1] in self.stop_token_ids:
            ids.pop()
        return self.tokenizer.decode(ids, skip_special_tokens=True)
