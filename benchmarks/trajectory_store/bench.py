"""Trajectories appended per second to the RL trajectory store: SQLite vs PostgreSQL, 1 and 4 writer processes.

    .venv/bin/python benchmarks/trajectory_store/bench.py --postgres-url postgresql://USER@127.0.0.1:PORT/DB \
        --per-writer 300 --rounds 3

Each writer is a process of its own with a store of its own (as writers on several nodes would be), appending
``--per-writer`` trajectories one ``add()`` at a time (one transaction each, as ``DataManager.put`` stores them):
4 tool turns whose prompts grow by 64 tokens and which generate 32 tokens each, distinct token arrays per
trajectory (no blob is shared). The writers wait for a start file, so imports and connecting are not timed; the
rate is all trajectories / (last writer's end - first writer's start). Rounds interleave the four variants
(SQLite/PostgreSQL x 1/4 writers), each on a fresh file or namespace; the report gives the median and range.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (a commit does not wait for the disk); compare it with a
PostgreSQL server run with ``synchronous_commit=off`` (likewise), as this benchmark's recorded run was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import loadavg, machine

WRITER = """
import json, os, sys, time
import anyio
from agentscope.rl import Trajectory, Turn
from agentscope.rl.data import PostgresTrajectoryStore, TrajectoryStore

kind, where, namespace, k, n, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]

def make(i):
    context, turns = list(range(k * 1000, k * 1000 + 200)), []
    for j in range(4):
        prompt = [*context, *range(i, i + 64)] if j else context
        completion = [(i * 7 + j * 32 + m) % 50000 for m in range(32)]
        turns.append(Turn(prompt_ids=prompt, completion_ids=completion, logprobs=[-0.5] * 32, version_head=0, version_tail=0))
        context = prompt + completion
    return Trajectory(task_id=f"t{i % 10}", group_id=f"g{k}-{i // 4}", turns=turns, reward=float(i % 2), success=bool(i % 2))

async def main():
    store = TrajectoryStore(where) if kind == "sqlite" else PostgresTrajectoryStore(where, namespace=namespace)
    trajs = [make(i) for i in range(n)]
    async with store:
        while not os.path.exists(go):
            await anyio.sleep(0.005)
        start = time.time()
        for t in trajs:
            await store.add(t)
        end = time.time()
    print(json.dumps([start, end]))

anyio.run(main)
"""


def one_run(kind: str, writers: int, per_writer: int, url: str, tmp: Path) -> float:
    where = str(tmp / f"{uuid.uuid4().hex}.db") if kind == "sqlite" else url
    namespace = f"bench_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":  # made once before the writers race for it, as the runner does
        subprocess.run([sys.executable, "-c", _CREATE, where], check=True)
    go = tmp / f"go-{uuid.uuid4().hex}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, kind, where, namespace, str(k), str(per_writer), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(writers)
    ]
    time.sleep(8.0)  # imports and connecting, untimed
    go.touch()
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"a writer failed ({p.returncode})")
        spans.append(json.loads(out))
    return writers * per_writer / (max(e for _, e in spans) - min(s for s, _ in spans))


_CREATE = """
import sys, anyio
from agentscope.rl.data import TrajectoryStore
async def main():
    async with TrajectoryStore(sys.argv[1]) as s:
        await s.count()
anyio.run(main)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--per-writer", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = [("sqlite", 1), ("postgres", 1), ("sqlite", 4), ("postgres", 4)]
    rates: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind, writers in variants:
                loads.append(os.getloadavg()[0])
                rate = one_run(kind, writers, args.per_writer, args.postgres_url, Path(tmp))
                rates[(kind, writers)].append(rate)
                print(f"round {r + 1}: {kind} x{writers}: {rate:.0f} trajectories/s", file=sys.stderr)
    print(json.dumps({"machine": machine(), "load_1m": loads, "end_load": loadavg()}))
    print("| store | writers | trajectories/s median (min-max) |\n|---|---:|---:|")
    for kind, writers in variants:
        got = rates[(kind, writers)]
        print(f"| {kind} | {writers} | {statistics.median(got):,.0f} ({min(got):,.0f}-{max(got):,.0f}) |")


if __name__ == "__main__":
    main()
