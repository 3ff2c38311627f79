"""Trajectory store conformance, on SQLite and PostgreSQL alike (the ``store`` fixture runs each test on both):
round trips (token arrays included), marks, counts, resume, claims, concurrent writers. Tests of the SQLite file
itself use ``sqlite_store``."""

from __future__ import annotations

import inspect
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agentscope.exceptions import SessionError
from agentscope.rl import Trajectory, Turn
from agentscope.rl.data import PostgresTrajectoryStore, Rollback, TrajectoryStore
from agentscope.rl.data._open import AnyTrajectoryStore
from agentscope.rl.data._token_blob import decode_turns, encode_turns

MakeTraj = Callable[..., Trajectory]
NewStore = Callable[[], AnyTrajectoryStore]


async def blob_count(store: AnyTrajectoryStore) -> int:
    """Token blobs stored (read behind the store's back)."""
    if isinstance(store, TrajectoryStore):
        await store.aclose()
        with sqlite3.connect(store.path) as conn:
            return conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
    import psycopg

    async with await psycopg.AsyncConnection.connect(store.url) as conn:
        cur = await conn.execute(f"SELECT COUNT(*) FROM {store.namespace}.blobs")  # pyright: ignore
        row = await cur.fetchone()
    assert row is not None
    return row[0]


def rewritten_history_trajectory() -> Trajectory:
    """Three turns; the third prompt does not extend the second (the agent rewrote its history); odd floats."""
    turns = [
        Turn(
            prompt_ids=[5, 6, 7],
            completion_ids=[8, 9],
            logprobs=[-0.1234567890123, -1e-12],
            version_head=3,
            version_tail=4,
            reward=0.25,
            finish_reason="tool_calls",
        ),
        Turn(
            prompt_ids=[5, 6, 7, 8, 9, 70_000, 2**31 - 1],
            completion_ids=[11],
            logprobs=[-7.5],
            version_head=4,
            version_tail=4,
            finish_reason="tool_calls",
            trainable=False,
        ),
        Turn(
            prompt_ids=[5, 6, 99],
            completion_ids=[],
            logprobs=[],
            version_head=5,
            version_tail=5,
            reward=-1.0,
            finish_reason="length",
        ),
    ]
    return Trajectory(
        task_id="task/α",
        group_id="g-1",
        turns=turns,
        reward=0.5,
        success=True,
        status="truncated",
        error=None,
        trace_id="trace-1",
        metrics={"env/steps": 3.0},
    )


def test_blob_codec_round_trips_and_shares_prefixes() -> None:
    traj = rewritten_history_trajectory()
    decoded = decode_turns(encode_turns(traj.turns))
    assert decoded == [(t.prompt_ids, t.completion_ids, t.logprobs) for t in traj.turns]

    # A long episode: every prompt repeats the whole history, the blob stores each token about once.
    context = list(range(200))
    turns: list[Turn] = []
    for i in range(20):
        completion = list(range(1000 + 50 * i, 1050 + 50 * i))
        turns.append(
            Turn(
                prompt_ids=context,
                completion_ids=completion,
                logprobs=[-0.5] * 50,
                version_head=0,
                version_tail=0,
            )
        )
        context = [*context, *completion, 7, 7, 7]
    naive = sum(len(t.prompt_ids) + len(t.completion_ids) for t in turns)
    assert naive > 15_000
    assert len(encode_turns(turns)) < 4 * 1400  # ~1,260 distinct tokens as int32, before compression


async def test_round_trip_including_token_arrays(store: AnyTrajectoryStore, make_traj: MakeTraj) -> None:
    traj = rewritten_history_trajectory()
    other = make_traj(reward=1.0)
    await store.add(traj)
    await store.add(other)
    assert await store.get(traj.trajectory_id) == traj
    assert await store.get_many([other.trajectory_id, traj.trajectory_id]) == [other, traj]
    # flatten() of the stored copy is the same verl sample (prompts, masks, log-probs, per-turn rewards).
    assert (await store.get(traj.trajectory_id)).flatten() == traj.flatten()


async def test_rows_hold_the_queryable_fields(sqlite_store: TrajectoryStore) -> None:
    store = sqlite_store
    traj = rewritten_history_trajectory()
    await store.add(traj)
    await store.aclose()
    with sqlite3.connect(store.path) as conn:
        row = conn.execute(
            "SELECT task_id, group_id, status, reward, success, min_version, max_version, policy_versions,"
            " num_turns, num_generated_tokens, trained_at_step, created_at, stored_at, updated_at, blob_id"
            " FROM trajectories"
        ).fetchone()
        blobs = conn.execute("SELECT COUNT(*), MAX(codec) FROM blobs").fetchone()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert row[:11] == ("task/α", "g-1", "truncated", 0.5, 1, 3, 5, json.dumps([3, 4, 5]), 3, 3, None)
    assert row[11] == traj.created_at
    assert row[12] <= row[13]
    assert blobs == (1, "turns-v1+zlib")
    assert version == 1
    assert journal == "wal"


async def test_missing_and_duplicate_ids(store: AnyTrajectoryStore, make_traj: MakeTraj) -> None:
    traj = make_traj()
    await store.add(traj)
    with pytest.raises(ValueError, match="stored already"):
        await store.add(traj)
    with pytest.raises(KeyError, match="nope"):
        await store.get("nope")
    assert await store.count() == 1


async def test_mark_unmark_and_counts(store: AnyTrajectoryStore, make_traj: MakeTraj) -> None:
    trajs = [make_traj(group_id=f"g{i}") for i in range(6)]
    await store.add_many(trajs)
    ids = [t.trajectory_id for t in trajs]
    assert await store.mark(ids[:2], trained_at_step=1) == 2
    assert await store.mark(ids[2:4], trained_at_step=2) == 2
    assert await store.mark([ids[4]], status="dropped_stale") == 1
    assert await store.mark([ids[5]]) == 0  # nothing to change
    assert await store.count() == 6
    assert await store.count(trained=True) == 4
    assert await store.count(trained=False) == 2
    assert await store.count(status="dropped_stale") == 1
    assert await store.count(status="ok", trained=False) == 1
    assert (await store.get(ids[4])).status == "dropped_stale"

    # Resume from the checkpoint of step 1: step 2 never happened.
    assert await store.unmark_trained_after(1) == 2
    steps = {t.trajectory_id: step async for t, step in store.iter_all()}
    assert [steps[i] for i in ids] == [1, 1, None, None, None, None]
    pending = await store.pending()
    assert [t.trajectory_id for t in pending] == [ids[2], ids[3], ids[5]]  # dropped_stale is final


async def test_iter_all_pages_in_insertion_order(store: AnyTrajectoryStore, make_traj: MakeTraj) -> None:
    trajs = [make_traj(group_id=f"g{i}", reward=float(i)) for i in range(7)]
    for t in trajs:
        await store.add(t)
    await store.mark([trajs[3].trajectory_id], trained_at_step=9)
    seen = [(t, step) async for t, step in store.iter_all(page=2)]
    assert [t for t, _ in seen] == trajs
    assert [step for _, step in seen] == [None, None, None, 9, None, None, None]


async def test_latest_success_skips_failures_replays_and_failed_episodes(
    store: AnyTrajectoryStore, make_traj: MakeTraj
) -> None:
    old = make_traj(task_id="a", reward=1.0)
    new = make_traj(task_id="a", reward=1.0)
    broken = make_traj(task_id="a", reward=1.0, status="failed_infra")
    await store.add_many([old, new, make_traj(task_id="a", reward=0.0), make_traj(task_id="b", reward=1.0)])
    await store.add(broken)
    await store.add(new.model_copy(update={"trajectory_id": "copy"}), replay_of=new.trajectory_id)
    found = await store.latest_success("a")
    assert found is not None
    assert found.trajectory_id == new.trajectory_id
    assert await store.latest_success("c") is None

    assert await blob_count(store) == 1  # same token arrays everywhere: stored once, referenced by every row


async def test_latest_success_within_versions_and_replays_counted(
    store: AnyTrajectoryStore, make_traj: MakeTraj
) -> None:
    v2, v5, v7 = (make_traj(task_id="a", reward=1.0, version=v) for v in (2, 5, 7))
    await store.add_many([v2, v5, v7])
    assert (await store.latest_success("a")) == v7
    assert (await store.latest_success("a", min_version=6)) == v7
    assert await store.latest_success("a", min_version=8) is None
    # Versions 6..7 were lost by a resume: the newest success left within the bound is version 5's.
    assert (await store.latest_success("a", min_version=3, exclude_versions=[(6, 7)])) == v5
    assert await store.latest_success("a", min_version=6, exclude_versions=[(6, 7)]) is None

    assert await store.count_replays("a") == 0
    await store.add(v5.model_copy(update={"trajectory_id": "c1"}), replay_of=v5.trajectory_id)
    await store.add(v5.model_copy(update={"trajectory_id": "c2"}), replay_of=v5.trajectory_id)
    await store.add(
        make_traj(task_id="b", reward=1.0).model_copy(update={"trajectory_id": "c3"}), replay_of="x"
    )
    assert await store.count_replays("a") == 2
    await store.mark(["c2"], status="dropped_stale")  # a copy that can no longer be trained frees its place
    assert await store.count_replays("a") == 1
    await store.mark(["c1"], trained_at_step=3)  # trained copies still count
    assert await store.count_replays("a") == 1
    assert (await store.latest_success("a")) == v7  # copies are never replayed themselves


async def test_rollback_undoes_what_happened_after_a_checkpoint(
    store: AnyTrajectoryStore, make_traj: MakeTraj
) -> None:
    early, late, trained, aborted, final = (make_traj(reward=float(i % 2), version=i) for i in range(5))
    await store.add_many([early, trained, aborted, final], after_step=0)
    await store.add(late.model_copy(update={"status": "truncated"}), after_step=2)
    await store.add(
        early.model_copy(update={"trajectory_id": "old-copy"}), replay_of=early.trajectory_id, after_step=1
    )
    await store.add(
        early.model_copy(update={"trajectory_id": "new-copy"}), replay_of=early.trajectory_id, after_step=2
    )
    await store.mark([early.trajectory_id, late.trajectory_id], status="dropped_stale", after_step=2)
    await store.mark([aborted.trajectory_id], status="aborted", after_step=1)
    await store.mark([final.trajectory_id], status="dropped_zero_variance")  # untagged: never undone
    await store.mark([trained.trajectory_id], trained_at_step=3)
    await store.mark(["old-copy"], trained_at_step=2)
    assert await store.max_version() == 4

    undone = await store.rollback(2)  # resume from the checkpoint of step 2
    assert (undone.untrained, undone.restored, undone.removed_replays) == (1, 2, 1)
    rows = {t.trajectory_id: (t.status, step) async for t, step in store.iter_all()}
    assert rows == {
        early.trajectory_id: ("ok", None),  # its status as stored
        late.trajectory_id: ("truncated", None),
        trained.trajectory_id: ("ok", None),
        aborted.trajectory_id: ("aborted", None),  # marked before step 2's cursor
        final.trajectory_id: ("dropped_zero_variance", None),
        "old-copy": ("ok", 2),
    }
    again = await store.rollback(2)  # idempotent: nothing left to undo
    assert (again.untrained, again.restored, again.removed_replays) == (0, 0, 0)


async def test_a_file_from_before_the_rollback_columns_gets_them(tmp_path: Path, make_traj: MakeTraj) -> None:
    path = tmp_path / "old.db"
    traj = make_traj(reward=1.0, version=3)
    async with TrajectoryStore(path) as store:
        await store.add(traj)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE trajectories DROP COLUMN stored_after")
        conn.execute("ALTER TABLE trajectories DROP COLUMN marked_after")
    async with TrajectoryStore(path) as store:
        assert await store.get(traj.trajectory_id) == traj
        await store.mark([traj.trajectory_id], status="dropped_stale", after_step=0)
        assert (await store.rollback(0)).restored == 1
        assert (await store.get(traj.trajectory_id)).status == "ok"
        assert await store.max_version() == 3
    async with TrajectoryStore(tmp_path / "empty.db") as store:
        assert await store.max_version() == -1


async def test_concurrent_writers_on_one_store(new_store: NewStore, make_traj: MakeTraj) -> None:
    stores = [new_store() for _ in range(3)]
    written: list[Trajectory] = []

    async def writer(s: AnyTrajectoryStore, k: int) -> None:
        for i in range(15):
            t = make_traj(group_id=f"w{k}-{i}", reward=float(i))
            written.append(t)
            await s.add(t)
            if i % 5 == 0:
                await s.mark([t.trajectory_id], trained_at_step=i)

    async with anyio.create_task_group() as tg:
        for k, s in enumerate(stores):
            tg.start_soon(writer, s, k)
    assert await stores[0].count() == 45
    assert await stores[1].count(trained=True) == 9
    got = await stores[2].get_many([t.trajectory_id for t in written])
    assert got == written
    for s in stores:
        await s.aclose()


async def test_reopen_and_schema_checks(tmp_path: Path, make_traj: MakeTraj) -> None:
    path = tmp_path / "sub" / "t.db"
    traj = make_traj()
    async with TrajectoryStore(path) as s:
        await s.add(traj)
    async with TrajectoryStore(path) as s:
        assert await s.get(traj.trajectory_id) == traj

    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SessionError, match="newer"):
        await TrajectoryStore(newer).count()

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE x (a)")
        conn.execute("PRAGMA user_version = 1")
    with pytest.raises(SessionError, match="some other program"):
        await TrajectoryStore(foreign).count()

    not_db = tmp_path / "junk.db"
    not_db.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(SessionError, match=r"junk\.db"):
        await TrajectoryStore(not_db).count()


async def test_in_memory_store(make_traj: MakeTraj) -> None:
    async with TrajectoryStore(":memory:") as s:
        traj = make_traj()
        await s.add(traj)
        assert await s.get(traj.trajectory_id) == traj
    assert not Path(":memory:").exists()  # noqa: ASYNC240 - a test assertion, not library code


async def test_claim_hands_out_pending_trajectories_once(
    store: AnyTrajectoryStore, make_traj: MakeTraj
) -> None:
    trajs = [make_traj(group_id=f"g{i}", reward=float(i)) for i in range(5)]
    failed = make_traj(status="failed_agent")
    await store.add_many([*trajs[:3], failed, *trajs[3:]])
    await store.mark([trajs[1].trajectory_id], status="dropped_stale")
    await store.mark([trajs[2].trajectory_id], trained_at_step=0)
    assert await store.claim(0, step=1) == []
    first = await store.claim(2, step=1)
    assert first == [trajs[0], trajs[3]]  # oldest first, as stored; dropped, trained and failed ones never
    assert await store.claim(5, step=2) == [trajs[4]]
    assert await store.claim(5, step=3) == []
    steps = {t.trajectory_id: step async for t, step in store.iter_all()}
    assert [steps[t.trajectory_id] for t in trajs] == [1, None, 0, 1, 2]
    assert await store.pending() == []
    assert await store.rollback(1) == Rollback(untrained=1, restored=0, removed_replays=0)
    assert await store.claim(5, step=2) == [trajs[4]]  # resumed from step 1: step 2 is claimed again


async def test_both_backends_have_the_same_methods() -> None:
    def methods(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if callable(member) and (not name.startswith("_") or name in ("__aenter__", "__aexit__"))
        }

    assert methods(PostgresTrajectoryStore) == methods(TrajectoryStore)


async def test_exists_creates_nothing(new_store: NewStore, make_traj: MakeTraj) -> None:
    store = new_store()
    assert not await store.exists()
    assert not await store.exists()
    async with store:
        await store.add(make_traj())
    assert await new_store().exists()
