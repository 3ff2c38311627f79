"""Many writers on one store, in processes of their own: 4 append trajectories while 2 consumers claim them.

On both backends (SQLite through its file lock, PostgreSQL through row locks and ``SKIP LOCKED``): every
trajectory is stored exactly once, every trainable one is claimed by exactly one consumer, and token blobs that
several writers store at once are kept once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from agentscope.rl.data import PostgresTrajectoryStore, TrajectoryStore
from agentscope.rl.data._open import AnyTrajectoryStore

NewStore = Callable[[], AnyTrajectoryStore]

WRITERS, CONSUMERS, PER_WRITER = 4, 2, 40

COMMON = """
import json, os, sys, time
import anyio
from agentscope.rl import Trajectory, Turn
from agentscope.rl.data import PostgresTrajectoryStore, TrajectoryStore

kind, where, namespace, role, k = sys.argv[1:6]

def open_store():
    if kind == "sqlite":
        return TrajectoryStore(where)
    return PostgresTrajectoryStore(where, namespace=namespace)

def make(i):
    # Token arrays repeat across writers (i % 3): several processes store the same blob at once.
    turn = Turn(prompt_ids=[1, 2, i % 3], completion_ids=[7, 8], logprobs=[-0.5, -0.25], version_head=0, version_tail=0)
    status = "failed_agent" if i % 4 == 3 else "ok"
    return Trajectory(trajectory_id=f"w{k}-{i}", task_id=f"t{i % 5}", group_id=f"g{k}-{i // 4}", turns=[turn],
                      reward=float(i % 2), success=bool(i % 2), status=status)

async def write(store):
    n = int(os.environ["PER_WRITER"])
    for start in range(0, n, 5):
        batch = [make(i) for i in range(start, min(start + 5, n))]
        if start % 10:
            await store.add_many(batch)
        else:
            for t in batch:
                await store.add(t)

async def consume(store):
    claimed, step = [], 0
    done = os.environ["DONE_FILE"]
    open(f"{done}.ready-{k}", "w").close()
    while True:
        step += 1
        got = await store.claim(3, step=step)
        claimed += [t.trajectory_id for t in got]
        if not got:
            if os.path.exists(done) and not await store.claim(3, step=step):
                break
            await anyio.sleep(0.01)
    print(json.dumps(claimed))

async def main():
    async with open_store() as store:
        await (write(store) if role == "writer" else consume(store))

anyio.run(main)
"""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_writer_processes_store_each_trajectory_once_and_consumers_claim_each_once(
    new_store: NewStore, tmp_path: Path
) -> None:
    store = new_store()
    if isinstance(store, PostgresTrajectoryStore):
        kind, where, namespace = "postgres", store.url, store.namespace
    else:
        assert isinstance(store, TrajectoryStore)
        kind, where, namespace = "sqlite", str(store.path), "-"
    done = tmp_path / "writers-done"
    env = {"PER_WRITER": str(PER_WRITER), "DONE_FILE": str(done), "PATH": "/usr/bin:/bin"}
    async with store:
        await store.count()  # create the tables first: the processes race on their data, not on the schema

        async def run(role: str, k: int, out: list[str]) -> None:
            done_process = await anyio.run_process(
                [sys.executable, "-c", COMMON, kind, where, namespace, role, str(k)], env=env, check=False
            )
            assert done_process.returncode == 0, done_process.stderr.decode()
            out.append(done_process.stdout.decode())

        outputs: list[str] = []
        async with anyio.create_task_group() as consumers:
            for k in range(CONSUMERS):
                consumers.start_soon(run, "consumer", k, outputs)
            with anyio.fail_after(120):  # writers start once every consumer is claiming
                while not all(done.with_name(f"{done.name}.ready-{k}").exists() for k in range(CONSUMERS)):  # noqa: ASYNC110 - another process makes these files
                    await anyio.sleep(0.05)
            async with anyio.create_task_group() as writers:
                for k in range(WRITERS):
                    writers.start_soon(run, "writer", k, [])
            done.touch()

        claimed = [i for out in outputs for i in json.loads(out)]
        ids = [f"w{k}-{i}" for k in range(WRITERS) for i in range(PER_WRITER)]
        trainable = {f"w{k}-{i}" for k in range(WRITERS) for i in range(PER_WRITER) if i % 4 != 3}
        assert await store.count() == len(ids)
        assert [t.trajectory_id for t in await store.get_many(ids)] == ids
        assert len(claimed) == len(set(claimed)), "a trajectory was claimed twice"
        assert set(claimed) == trainable
        assert all(json.loads(out) for out in outputs), (
            "a consumer got nothing: the test did not run them at once"
        )
        assert await store.count(trained=True) == len(trainable)
        assert await store.count(status="failed_agent", trained=False) == len(ids) - len(trainable)
        assert await store.pending() == []
