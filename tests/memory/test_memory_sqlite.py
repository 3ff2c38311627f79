"""What SQLiteMemory does beyond the conformance suite: persistence, sharing a file, errors, the loop."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from agentscope.exceptions import SessionError
from agentscope.memory import SQLiteMemory
from agentscope.message import Msg


def user(text: str) -> Msg:
    return Msg(role="user", content=text)


def inspect_db(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file directly with the sqlite3 module (test-side, synchronous)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_messages_persist_across_instances_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    msgs = [user("first"), Msg(role="assistant", content="second", metadata={"k": [1, 2]})]
    async with SQLiteMemory(path, session_id="s") as mem:
        await mem.add(msgs)

    async with SQLiteMemory(path, session_id="s") as again:
        assert await again.get() == msgs
        await again.add(user("third"))

    reopened = SQLiteMemory(str(path), session_id="s")  # lazily opened, str path
    try:
        assert [m.text for m in await reopened.get()] == ["first", "second", "third"]
        await reopened.aclose()
        # A closed memory reopens when used again.
        assert await reopened.size() == 3
    finally:
        await reopened.aclose()


async def test_two_live_instances_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with SQLiteMemory(path, session_id="s") as a, SQLiteMemory(path, session_id="s") as b:
        await a.add(user("from a"))
        await b.add(user("from b"))
        assert [m.text for m in await a.get()] == ["from a", "from b"]
        assert await b.delete([(await a.get())[0].id]) == 1
        assert [m.text for m in await a.get()] == ["from b"]


async def test_concurrent_instances_on_one_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "memory.db"
    # Two instances share session "s", one uses "t"; all open the new file and write at the same time.
    mems = [SQLiteMemory(path, session_id=s) for s in ("s", "s", "t")]
    per_writer = 60
    sent: dict[int, list[Msg]] = {i: [] for i in range(len(mems) * 2)}

    async def writer(w: int) -> None:
        mem = mems[w % len(mems)]
        for i in range(per_writer):
            msg = Msg(role="user", content=f"{w}:{i}", metadata={"writer": w})
            sent[w].append(msg)
            await mem.add(msg)

    try:
        async with anyio.create_task_group() as tg:
            for w in sent:
                tg.start_soon(writer, w)
        shared = await mems[0].get()
        assert shared == await mems[1].get()
        assert len(shared) == 4 * per_writer
        for w in (0, 1, 3, 4):
            assert [m for m in shared if m.metadata["writer"] == w] == sent[w]
        other = await mems[2].get()
        assert len(other) == 2 * per_writer
        for w in (2, 5):
            assert [m for m in other if m.metadata["writer"] == w] == sent[w]
    finally:
        for mem in mems:
            await mem.aclose()


CHILD = """
import sys
import anyio
import anyio.lowlevel
from agentscope.memory import SQLiteMemory
from agentscope.message import Msg

async def main() -> None:
    async with SQLiteMemory(sys.argv[1], session_id="shared") as mem:
        for i in range(int(sys.argv[2])):
            await mem.add(Msg(role="user", content=f"child {i}"))

anyio.run(main)
"""


@pytest.mark.integration
async def test_another_process_writes_the_same_session_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    n = 150
    async with SQLiteMemory(path, session_id="shared") as mem:
        await mem.add(user("before"))  # the file exists before the child starts
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.run_process, [sys.executable, "-c", CHILD, str(path), str(n)])
            for i in range(n):
                await mem.add(user(f"parent {i}"))
                await anyio.lowlevel.checkpoint()
        texts = [m.text for m in await mem.get()]
    assert len(texts) == 2 * n + 1
    assert [t for t in texts if t.startswith("parent")] == [f"parent {i}" for i in range(n)]
    assert [t for t in texts if t.startswith("child")] == [f"child {i}" for i in range(n)]


async def test_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "memory.db"
    msg = Msg(role="user", content="héllo", metadata={"a": 1})
    before = time.time()
    async with SQLiteMemory(path, session_id="s") as mem:
        await mem.add(msg)
    assert path.is_file(), "the parent directories are created"
    assert inspect_db(path, "PRAGMA user_version") == [(1,)]
    assert inspect_db(path, "PRAGMA journal_mode") == [("wal",)]
    columns = [row[1] for row in inspect_db(path, "PRAGMA table_info(messages)")]
    assert columns == ["session_id", "seq", "id", "json", "created_at"]
    index_columns = [row[2] for row in inspect_db(path, "PRAGMA index_info(messages_session_seq)")]
    assert index_columns == ["session_id", "seq"]
    ((session_id, seq, msg_id, text, created_at),) = inspect_db(path, "SELECT * FROM messages")
    assert (session_id, msg_id, text) == ("s", msg.id, msg.model_dump_json())
    assert isinstance(seq, int)
    assert isinstance(created_at, float)
    assert before <= created_at <= time.time()


async def test_default_path_is_under_dot_agentscope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with SQLiteMemory() as mem:
        assert mem.session_id == "default"
        await mem.add(user("x"))
        assert mem.state_dict() == {
            "backend": "sqlite",
            "session_id": "default",
            "path": ".agentscope/memory.db",
        }
    assert (tmp_path / ".agentscope" / "memory.db").is_file()
    assert await SQLiteMemory.list_sessions() == ["default"]


async def test_list_sessions(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    missing = tmp_path / "missing.db"
    assert await SQLiteMemory.list_sessions(missing) == []
    assert not missing.exists(), "listing must not create the file"

    async with SQLiteMemory(path, session_id="zed") as zed, SQLiteMemory(path, session_id="amy") as amy:
        assert await SQLiteMemory.list_sessions(path) == []
        await zed.add(user("z"))
        await amy.add([user("a1"), user("a2")])
        await SQLiteMemory(path, session_id="empty").aclose()
        assert await SQLiteMemory.list_sessions(path) == ["amy", "zed"]
        assert await SQLiteMemory.list_sessions(str(path)) == ["amy", "zed"]
        await zed.clear()
        assert await amy.list_sessions(path) == ["amy"]


async def test_corrupt_file_raises_session_error(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not a database at all\n" * 200)
    mem = SQLiteMemory(path)
    with pytest.raises(SessionError, match="not an SQLite database") as info:
        await mem.add(user("x"))
    assert str(path) in str(info.value)
    with pytest.raises(SessionError, match="not an SQLite database"):
        await mem.get()
    with pytest.raises(SessionError, match="not an SQLite database"):
        async with SQLiteMemory(path):
            pass
    with pytest.raises(SessionError, match="not an SQLite database") as info:
        await SQLiteMemory.list_sessions(path)
    assert str(path) in str(info.value)
    await mem.aclose()
    assert path.read_bytes().startswith(b"this is not a database"), "the file is left alone"


async def test_file_from_a_newer_version_raises_session_error(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with SQLiteMemory(path) as mem:
        await mem.add(user("x"))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SessionError, match="newer") as info:
        await SQLiteMemory(path).get()
    assert str(path) in str(info.value)
    assert "upgrade agentscope" in str(info.value)
    with pytest.raises(SessionError, match="newer"):
        await SQLiteMemory.list_sessions(path)


async def test_database_of_another_program(tmp_path: Path) -> None:
    versioned = tmp_path / "other.db"
    conn = sqlite3.connect(versioned)
    conn.execute("CREATE TABLE things (x)")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(SessionError, match="other program"):
        await SQLiteMemory(versioned).size()

    # An unversioned SQLite file just gets our table beside its own.
    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE things (x)")
    conn.close()
    async with SQLiteMemory(plain) as mem:
        await mem.add(user("x"))
        assert await mem.size() == 1
    assert inspect_db(plain, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == [
        ("messages",),
        ("things",),
    ]


async def test_unusable_paths_raise_session_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a directory")
    under_a_file = blocker / "sub" / "memory.db"
    with pytest.raises(SessionError) as info:
        await SQLiteMemory(under_a_file).add(user("x"))
    assert str(under_a_file) in str(info.value)
    assert "writable" in str(info.value) or "write to" in str(info.value)

    a_directory = tmp_path / "a-dir"
    a_directory.mkdir()
    with pytest.raises(SessionError, match="could not open") as info:
        async with SQLiteMemory(a_directory):
            pass
    assert str(a_directory) in str(info.value)


async def test_load_state_dict_moves_to_another_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    async with SQLiteMemory(two, session_id="there") as other:
        await other.add(user("in two"))
        state = json.loads(json.dumps(other.state_dict()))
    assert state == {"backend": "sqlite", "session_id": "there", "path": str(two)}

    async with SQLiteMemory(one, session_id="here") as mem:
        await mem.add(user("in one"))
        mem.load_state_dict(state)
        assert mem.path == two
        assert mem.session_id == "there"
        assert [m.text for m in await mem.get()] == ["in two"]
        await mem.add(user("also in two"))
    assert await SQLiteMemory.list_sessions(one) == ["here"]
    assert await SQLiteMemory.list_sessions(two) == ["there"]
    with pytest.raises(SessionError, match="path"):
        SQLiteMemory(one).load_state_dict({"backend": "sqlite", "session_id": "x", "path": 3})


async def test_unreadable_row_raises_session_error(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    async with SQLiteMemory(path, session_id="s") as mem:
        await mem.add(user("fine"))
        conn = sqlite3.connect(path)
        conn.execute('UPDATE messages SET json = \'{"role": "robot"}\'')
        conn.commit()
        conn.close()
        with pytest.raises(SessionError, match="not a valid Msg"):
            await mem.get()


async def test_the_event_loop_keeps_running_during_a_large_write(tmp_path: Path) -> None:
    # The autouse BlockBuster fixture already fails any blocking call made on the loop by agentscope code;
    # here a ticker proves the loop runs while a large batch is written and read back.
    msgs = [Msg(role="assistant", content="x" * 200, metadata={"i": i}) for i in range(20_000)]
    ticks = 0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.sleep(0.001)

    async with SQLiteMemory(tmp_path / "memory.db") as mem, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.01)
        before = ticks
        await mem.add(msgs)
        during_write = ticks - before
        got = await mem.get()
        during_both = ticks - before
        done.set()
        assert len(got) == len(msgs)
        assert during_write >= 3, f"the ticker ticked {during_write} times while 20k messages were written"
        assert during_both >= 6, (
            f"the ticker ticked {during_both} times while 20k messages were written and read"
        )


async def test_cancelled_add_leaves_the_memory_usable(tmp_path: Path) -> None:
    async with SQLiteMemory(tmp_path / "memory.db") as mem:
        batch = [user(str(i)) for i in range(5000)]
        with anyio.move_on_after(0.001):
            await mem.add(batch)
        # The worker thread finished its transaction either way: all or nothing.
        assert await mem.size() in (0, len(batch))
        await mem.add(user("after"))
        assert (await mem.get(limit=1))[0].text == "after"


async def test_repr(tmp_path: Path) -> None:
    mem = SQLiteMemory(tmp_path / "m.db", session_id="s")
    assert repr(mem) == f"SQLiteMemory({str(tmp_path / 'm.db')!r}, session_id='s')"
