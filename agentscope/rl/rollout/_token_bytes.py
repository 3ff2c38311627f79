"""Each token id's bytes for a byte-level BPE tokenizer, so that the rollout engine matches stop strings on bytes
without decoding the whole completion at every token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentscope.rl.policy import TokenizerLike

__all__ = ["token_byte_table"]


def token_byte_table(tokenizer: TokenizerLike, vocab_size: int) -> list[bytes] | None:
    """Each token id's bytes, for byte-level BPE tokenizers (None for others: stop strings then decode)."""
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    added: dict[int, Any] = getattr(tokenizer, "added_tokens_decoder", None) or {}
    if convert is None:
        return None
    byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
    table: list[bytes] = []
    for token_id in range(vocab_size):
        if token_id in added:
            table.append(str(added[token_id]).encode())
            continue
        token = convert(token_id)
        if token is None:
            table.append(b"")
            continue
        try:
            table.append(bytes(byte_of[ch] for ch in token))
        except KeyError:
            return None
    return table


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character map used by byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}
