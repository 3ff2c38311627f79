"""The token blob of a stored trajectory: every turn's prompt ids, completion ids and log-probs in one compact blob.

Each turn's prompt is stored as the length of the prefix it shares with the previous turn's prompt + completion
(token-in/token-out makes that the whole previous context) plus the new tokens only, ids as int32 and log-probs as
float64 (so they round-trip exactly), little-endian, zlib-compressed::

    header    b"ASTB", number of turns                                   struct <4sI
    shapes    per turn: shared prefix length, new prompt ids, completion ids   struct <III each
    ids       per turn: its new prompt ids, then its completion ids            int32
    logprobs  per turn: its completion log-probs                              float64
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Any, Final

from agentscope.rl._types import Turn

__all__ = ["CODEC", "decode_turns", "encode_turns"]

CODEC: Final = "turns-v1+zlib"
"""The codec name stored next to each blob."""
_MAGIC: Final = b"ASTB"
_HEADER: Final = struct.Struct("<4sI")
_TURN: Final = struct.Struct("<III")


def _native(values: array[Any]) -> array[Any]:
    """Blobs are little-endian; swap on a big-endian machine (in place, returns the same array)."""
    if sys.byteorder == "big":
        values.byteswap()
    return values


def encode_turns(turns: Sequence[Turn]) -> bytes:
    """The token arrays of ``turns`` as one compressed blob (see the module docstring for the layout)."""
    header = [_HEADER.pack(_MAGIC, len(turns))]
    ids: array[int] = array("i")
    logprobs: array[float] = array("d")
    context: list[int] = []
    for turn in turns:
        if len(turn.logprobs) != len(turn.completion_ids):
            raise ValueError(
                f"a turn has {len(turn.completion_ids)} completion ids but {len(turn.logprobs)} log-probs"
            )
        shared = 0
        limit = min(len(context), len(turn.prompt_ids))
        while shared < limit and context[shared] == turn.prompt_ids[shared]:
            shared += 1
        tail = turn.prompt_ids[shared:]
        header.append(_TURN.pack(shared, len(tail), len(turn.completion_ids)))
        ids.extend(tail)
        ids.extend(turn.completion_ids)
        logprobs.extend(turn.logprobs)
        context = turn.prompt_ids + turn.completion_ids
    raw = b"".join(header) + _native(ids).tobytes() + _native(logprobs).tobytes()
    return zlib.compress(raw, 1)


def decode_turns(data: bytes) -> list[tuple[list[int], list[int], list[float]]]:
    """``(prompt_ids, completion_ids, logprobs)`` per turn, from a blob made by :func:`encode_turns`."""
    raw = zlib.decompress(data)
    magic, n_turns = _HEADER.unpack_from(raw, 0)
    if magic != _MAGIC:
        raise ValueError("not a trajectory token blob")
    offset = _HEADER.size
    shapes: list[tuple[int, int, int]] = []
    for _ in range(n_turns):
        shapes.append(_TURN.unpack_from(raw, offset))
        offset += _TURN.size
    n_ids = sum(tail + completion for _, tail, completion in shapes)
    ids: array[int] = array("i")
    ids.frombytes(raw[offset : offset + 4 * n_ids])
    offset += 4 * n_ids
    logprobs: array[float] = array("d")
    logprobs.frombytes(raw[offset:])
    all_ids, all_logprobs = _native(ids).tolist(), _native(logprobs).tolist()
    turns: list[tuple[list[int], list[int], list[float]]] = []
    context: list[int] = []
    i = j = 0
    for shared, tail, completion in shapes:
        prompt = context[:shared] + all_ids[i : i + tail]
        i += tail
        completion_ids = all_ids[i : i + completion]
        i += completion
        turns.append((prompt, completion_ids, all_logprobs[j : j + completion]))
        j += completion
        context = prompt + completion_ids
    return turns
