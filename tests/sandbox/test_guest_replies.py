"""The host reading the guest's replies: whatever comes back on the guest's stdout, the caller gets a result or a
clear :class:`SandboxError`, never another exception (``RecursionError``, ``KeyError``, ``binascii.Error``...).

The guest here is a double behind the sandbox's transport seam (a real guest never sends malformed replies, and
sandboxed code cannot forge one: it lacks the token). It answers the start-up and ``stat`` as the real one does,
and every other request with the reply under test.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox import Sandbox, SandboxSpec

Reply = Callable[[dict[str, Any], str], bytes]
"""Makes the raw reply line(s) to a request, given the request and the sandbox's token."""


class _Transport:
    def __init__(self, sandbox: ScriptedSandbox) -> None:
        self._sandbox = sandbox
        self._send, self._receive = anyio.create_memory_object_stream[bytes](math.inf)

    def push(self, data: bytes) -> None:
        chunk = self._sandbox.chunk_bytes
        for start in range(0, len(data), chunk):
            self._send.send_nowait(data[start : start + chunk])

    async def send(self, data: bytes) -> None:
        for line in data.splitlines():
            request = json.loads(line)
            token = self._sandbox.token
            if request["op"] == "stat":
                self.push(_line({"id": request["id"], "oom_kills": 0, "processes": 0, "k": token}))
            elif request["op"] != "cancel":
                self.push(self._sandbox.reply(request, token))

    async def receive(self) -> bytes:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return b""

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._send.close()
        self._receive.close()


class ScriptedSandbox(Sandbox):
    """A sandbox whose guest is a function from request to reply line."""

    backend = "scripted"

    def __init__(self, reply: Reply, hello: Reply | None = None, chunk_bytes: int = 65536) -> None:
        super().__init__(SandboxSpec())
        self.reply = reply
        self.hello = hello
        self.chunk_bytes = chunk_bytes
        """The guest's output arrives in pieces of this size (a pipe gives 64 KiB at most)."""
        self.stopped = False
        self._double: _Transport | None = None

    @property
    def token(self) -> str:
        return self._token

    async def _start(self) -> None:
        self._double = transport = _Transport(self)
        self._transport = transport
        hello = {"id": 0, "ready": True, "seccomp": 2, "seccomp_error": None}
        transport.push(self.hello(hello, self._token) if self.hello else _line({**hello, "k": self._token}))

    async def _stop(self) -> None:
        self.stopped = True
        if self._double is not None:
            self._double.close()


def _line(message: object) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD_EXEC: dict[str, object] = {
    "exit_code": 0,
    "signal": None,
    "stdout": _b64(b"out"),
    "stderr": "",
    "timed_out": False,
    "truncated": False,
    "duration": 0.01,
    "killed": [],
    "killed_count": 0,
}

DEEP = 100_000
BAD_VALUES: list[object] = [
    None,
    "",
    "x",
    "!!not base64!!",
    -1,
    1.5,
    True,
    10**30,
    math.nan,
    math.inf,
    [],
    {},
    [1, 2],
    {"a": 1},
    [[[[[["deep"]]]]]],
    "\udcff",
]


def _raw(template: str) -> Reply:
    return lambda request, token: template.replace("ID", str(request["id"])).replace("TOKEN", token).encode()


def _exec_reply(**changes: object) -> Reply:
    def reply(request: dict[str, Any], token: str) -> bytes:
        message: dict[str, object] = {**GOOD_EXEC, **changes, "id": request["id"], "k": token}
        for key in [key for key, value in changes.items() if value is _MISSING]:
            del message[key]
        return json.dumps(message, separators=(",", ":"), allow_nan=True).encode() + b"\n"

    return reply


_MISSING = object()


def _valid(field: str, value: object) -> bool:
    """Whether ``value`` is a well-formed value of the exec reply's ``field`` (the battery skips those)."""
    if field in ("timed_out", "truncated"):
        return isinstance(value, bool)
    if field == "signal":
        return value is None or (type(value) is int and 1 <= value <= 128)
    if field in ("exit_code", "killed_count"):
        return type(value) is int and 0 <= value <= (65535 if field == "exit_code" else 1 << 100)
    if field == "duration":
        return type(value) in (int, float) and math.isfinite(value) and value >= 0  # type: ignore[arg-type]
    if field == "killed":
        return value == []
    return value == ""  # stdout, stderr: the empty string is valid base64


def malformed_exec_replies() -> Iterator[tuple[str, Reply]]:
    """Generated malformed replies to ``exec``: every field missing or of every wrong kind, bad structure,
    bad JSON, deep nesting, bad encodings."""
    for field in ("exit_code", "stdout", "stderr", "timed_out"):
        yield f"{field} missing", _exec_reply(**{field: _MISSING})
    for field, value in itertools.product(GOOD_EXEC, BAD_VALUES):
        if _valid(field, value):
            continue
        yield f"{field}={value!r:.30}", _exec_reply(**{field: value})
    for depth in (2, 50, 900, 5000):
        nested = "[" * depth + "]" * depth
        yield f"stdout nested {depth} deep", _raw('{"id":ID,"stdout":' + nested + ',"k":"TOKEN"}\n')
    yield "nested 100000 deep", _raw('{"id":ID,"k":"TOKEN","x":' + "[" * DEEP + "]" * DEEP + "}\n")
    yield "open brackets only", _raw('{"id":ID,"k":"TOKEN","x":' + "[" * DEEP + "\n")
    yield "objects nested deep", _raw('{"id":ID,"k":"TOKEN","x":' + '{"a":' * DEEP + "1" + "}" * DEEP + "}\n")
    yield "not JSON", _raw('{"id":ID,"k":"TOKEN", this is not json\n')
    yield "trailing garbage", _raw('{"id":ID,"exit_code":0,"k":"TOKEN"} trailing\n')
    yield "a list", _raw('[{"id":ID,"k":"TOKEN"}]\n')
    yield "token of another field", _raw('{"id":ID,"x":{"k":"TOKEN"}}\n')
    yield "id missing", _raw('{"exit_code":0,"k":"TOKEN"}\n')
    for bad_id in ('"ID"', "true", "null", "1.5", "[ID]", "1" + "0" * 5000):
        yield f"id {bad_id[:10]}", _raw('{"id":' + bad_id + ',"k":"TOKEN"}\n')
    yield "a 5000-digit exit code", _raw('{"id":ID,"exit_code":' + "9" * 5000 + ',"k":"TOKEN"}\n')
    yield (
        "invalid UTF-8",
        lambda request, token: (
            b'{"id":%d,"k":"%s","stdout":"\xff\xfe"}\n'
            % (
                request["id"],
                token.encode(),
            )
        ),
    )
    yield "a NUL byte", _raw('{"id":ID,"k":"TOKEN","stdout":"a\x00b"}\n')
    yield "error not a string", _raw('{"id":ID,"error":["x"],"k":"TOKEN"}\n')
    yield "error huge", _raw('{"id":ID,"error":"' + "e" * 100_000 + '","k":"TOKEN"}\n')
    yield "killed too many", _exec_reply(killed=["x"] * 5000)
    yield "exit code out of range", _exec_reply(exit_code=1 << 20)
    yield "signal out of range", _exec_reply(signal=0)
    yield "negative duration", _exec_reply(duration=-1.0)


def test_the_battery_is_large() -> None:
    assert len(list(malformed_exec_replies())) >= 150


@pytest.mark.parametrize(
    ("name", "reply"), [pytest.param(name, reply, id=name) for name, reply in malformed_exec_replies()]
)
async def test_a_malformed_exec_reply_is_a_clear_error(name: str, reply: Reply) -> None:
    async with ScriptedSandbox(reply) as sb:
        await sb.start()
        with anyio.fail_after(10), pytest.raises(SandboxError, match="malformed reply") as caught:
            await sb.exec("true")
        message = str(caught.value)
        assert len(message) < 3000, message[:200]  # no dump of the huge value
        assert not sb.alive  # a guest that sent garbage is not trusted again
        assert sb.stopped
        with pytest.raises(SandboxError, match="dead"):
            await sb.exec("true")


async def test_a_well_formed_reply_still_works() -> None:
    async with ScriptedSandbox(_exec_reply(killed=["sleep 1"], killed_count=1)) as sb:
        await sb.start()
        r = await sb.exec("true")
        assert (r.exit_code, r.stdout, r.killed, r.killed_count) == (0, "out", ("sleep 1",), 1)


async def test_lines_without_the_token_are_dropped() -> None:
    # Forged by sandboxed code (it cannot know the token), however malformed: ignored, the real reply counts.
    def reply(request: dict[str, Any], token: str) -> bytes:
        forged = [
            b'{"id":%d,"exit_code":0,"stdout":"Zm9yZ2Vk","stderr":"","timed_out":false,"k":"bad"}'
            % request["id"],
            b"[" * DEEP,
            b"not json at all",
            b"\xff\xfe",
        ]
        return b"\n".join(forged) + b"\n" + _exec_reply()(request, token)

    async with ScriptedSandbox(reply) as sb:
        await sb.start()
        assert (await sb.exec("true")).stdout == "out"
        assert sb.alive


@pytest.mark.parametrize(
    ("op", "reply"),
    [
        ("read", '{"id":ID,"k":"TOKEN"}\n'),
        ("read", '{"id":ID,"data":"***","k":"TOKEN"}\n'),
        ("read", '{"id":ID,"data":["x"],"k":"TOKEN"}\n'),
        ("read", '{"id":ID,"error":"no","errno":"2","k":"TOKEN"}\n'),
        ("write", '{"id":ID,"error":5,"k":"TOKEN"}\n'),
        ("reset", '{"id":ID,"error":null,"k":"TOKEN"}\n'),
    ],
)
async def test_malformed_replies_to_other_calls(op: str, reply: str) -> None:
    async with ScriptedSandbox(_raw(reply)) as sb:
        await sb.start()
        calls = {
            "read": lambda: sb.read_file("f"),
            "write": lambda: sb.write_file("f", "x"),
            "reset": sb.reset,
        }
        with pytest.raises(SandboxError, match="malformed reply"):
            await calls[op]()
        assert not sb.alive


async def test_a_malformed_ping_reply_is_false() -> None:
    async with ScriptedSandbox(_raw('{"id":ID,"ok":"yes","k":"TOKEN"}\n')) as sb:
        await sb.start()
        assert await sb.ping() is False


@pytest.mark.parametrize(
    "hello",
    [
        '{"id":0,"k":"TOKEN","x":' + "[" * DEEP + "]" * DEEP + "}\n",
        '[{"k":"TOKEN"}]\n',
        '{"id":0,"k":"TOKEN"\n',
    ],
)
async def test_a_malformed_greeting_is_a_clear_error(hello: str) -> None:
    sb = ScriptedSandbox(_exec_reply(), hello=_raw(hello))
    with pytest.raises(SandboxError, match="malformed greeting"):
        await sb.start()
    assert sb.stopped


async def test_an_endless_line_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentscope.sandbox import _base

    monkeypatch.setattr(_base, "_MAX_LINE_BYTES", 1 << 20)
    async with ScriptedSandbox(lambda request, token: b"x" * (2 << 20)) as sb:
        await sb.start()
        with pytest.raises(
            SandboxError, match=r"malformed reply \(more than 1048576 bytes without a line end\)"
        ):
            await sb.exec("true")


async def test_a_long_reply_is_read_in_linear_time() -> None:
    # The reader searched the whole buffer for a line end at every chunk: 48 MiB in 16 KiB chunks took many
    # seconds of event-loop CPU (quadratic); read once, it is a fraction of a second.
    data = bytes(range(256)) * (48 << 12)
    encoded = _b64(data).encode()

    def reply(request: dict[str, Any], token: str) -> bytes:
        head = b'{"id":%d,"exit_code":0,"stdout":"' % request["id"]
        return head + encoded + b'","stderr":"","timed_out":false,"k":"%s"}\n' % token.encode()

    async with ScriptedSandbox(reply, chunk_bytes=16384) as sb:
        await sb.start()
        cpu = time.thread_time()  # the event loop's thread: robust to a busy machine, unlike wall time
        r = await sb.exec("true")
        cpu = time.thread_time() - cpu
    assert r.stdout_bytes == data
    assert cpu < 2.5, f"reading a 48 MiB reply took {cpu:.2f} s of event-loop CPU"


async def test_limits_fit_in_a_reply() -> None:
    from agentscope.sandbox import SandboxLimits
    from agentscope.sandbox._base import _MAX_LINE_BYTES
    from agentscope.sandbox._types import MAX_FILE_BYTES

    with pytest.raises(SandboxError, match="output_bytes"):
        SandboxLimits(output_bytes=1 << 30)  # two such streams made a reply the host refused as too long
    largest = SandboxLimits(output_bytes=256 << 20).output_bytes
    both_streams = 2 * 4 * ((largest + 2) // 3)  # base64
    assert both_streams + 1000 * 1200 + 4096 <= _MAX_LINE_BYTES  # and up to 1000 escaped killed command lines
    assert 4 * ((MAX_FILE_BYTES + 2) // 3) + 4096 <= _MAX_LINE_BYTES
    async with ScriptedSandbox(_exec_reply()) as sb:
        await sb.start()
        with pytest.raises(SandboxError, match="at most"):
            await sb.write_file("big", b"\0" * (MAX_FILE_BYTES + 1))
        assert sb.alive  # refused before anything was sent


def _mutations(count: int, seed: int = 0) -> Iterator[bytes]:
    """``count`` random corruptions of a good exec reply's fields (bytes flipped, cut, inserted, repeated), each
    keeping the ``id`` and token that make the host read the line (a line without them is dropped unread)."""
    rng = random.Random(seed)
    body = json.dumps(GOOD_EXEC, separators=(",", ":")).encode()[1:-1]  # the fields, without the braces
    junk = b'{}[]",:\\0123456789.-eE+tfn \x00\xff\xfe\x7f'
    for _ in range(count):
        data = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            kind = rng.randrange(4)
            if kind == 0 and data:
                data[min(at, len(data) - 1)] = rng.choice(junk)
            elif kind == 1:
                del data[at : at + rng.randint(1, 12)]
            elif kind == 2:
                data[at:at] = bytes(rng.choice(junk) for _ in range(rng.randint(1, 6)))
            else:
                data[at:at] = data[at : at + rng.randint(1, 40)] * rng.randint(2, 50)
        yield bytes(data).replace(b"\n", b" ")


async def test_a_thousand_random_corruptions_each_give_a_result_or_a_clear_error() -> None:
    """Whatever a corrupted reply holds, ``exec`` returns a result or raises :class:`SandboxError`: never another
    exception, never a hang."""
    outcomes = {"result": 0, "error": 0}
    lengths: list[int] = []
    for body in _mutations(1000):

        def reply(request: dict[str, Any], token: str, body: bytes = body) -> bytes:
            return b'{"id":%d,"k":"%s",%s}\n' % (request["id"], token.encode(), body)

        async with ScriptedSandbox(reply) as sb:
            await sb.start()
            with anyio.fail_after(5):
                try:
                    await sb.exec("true")
                except SandboxError as error:
                    lengths.append(len(str(error)))
                    outcomes["error"] += 1
                else:
                    outcomes["result"] += 1
    assert sum(outcomes.values()) == 1000, outcomes
    assert outcomes["error"] > 500, outcomes  # most corruptions are malformed
    assert outcomes["result"] > 0, (
        outcomes
    )  # and some leave a valid reply (a digit changed, a field repeated)
