"""The staleness study, as AReaL reports it: final success for ``schedule.max_staleness`` in {0, 1, 2, 4, 8}, with
and without truncated importance sampling (``trainer.tis_threshold``: 2.0 or null), async mode, one seed each.

Each cell is one ``run.py`` run (warm start from the cache, RL for ``--minutes``, every checkpoint evaluated on the
held-out split afterwards); ``--jobs 2`` runs two cells at once (each uses one core). Writes ``OUT/staleness.md``
and ``OUT/staleness.json``: per cell the trainer steps, the training rollouts' success in the first and last
window of versions, and the held-out success of the last checkpoint.

    .venv/bin/python benchmarks/rl_learning/staleness.py --config benchmarks/rl_learning/lookup.yaml \\
        --set tasks=lookup:n=32,seed=0,level=1-2,split=train --minutes 4 --jobs 2 --out benchmarks/rl_learning/_out/st
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _cell(args: argparse.Namespace, staleness: int, tis: bool) -> tuple[str, Path]:
    name = f"k{staleness}-tis{'on' if tis else 'off'}"
    out = args.out / name
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--config",
        str(args.config),
        "--seeds",
        str(args.seed),
        "--modes",
        "async",
        "--minutes",
        str(args.minutes),
        "--eval-every",
        str(args.eval_every),
        "--out",
        str(out),
        "--set",
        f"schedule.max_staleness={staleness}",
    ]
    for item in args.set:
        command += ["--set", item]
    if not tis:
        command += ["--set", "trainer.tis_threshold=null"]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "log.txt").open("w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    return name, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=HERE / "lookup.yaml")
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/rl_learning/_out/staleness"))
    args = parser.parse_args()
    cells = [(k, tis) for k in args.staleness for tis in (True, False)]

    def play(cell: tuple[int, bool]) -> tuple[str, Path]:
        return _cell(args, *cell)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(play, cells))
    rows: list[dict[str, Any]] = []
    lines = [
        f"| max_staleness | TIS | trainer steps in {args.minutes:g} min | training rollouts: first → last window "
        "| held-out, last checkpoint |",
        "|---:|---|---:|---:|---:|",
    ]
    for (staleness, tis), (name, out) in zip(cells, done, strict=True):
        report = json.loads((out / "results.json").read_text())
        [run] = report["runs"]
        windows = run["training_rollouts"]
        row = {
            "cell": name,
            "max_staleness": staleness,
            "tis": tis,
            "steps": run["steps"],
            "rollouts_first": windows[0]["success_rate"],
            "rollouts_last": windows[-1]["success_rate"],
            "heldout_final": run["final"],
        }
        rows.append(row)
        lines.append(
            f"| {staleness} | {'on' if tis else 'off'} | {run['steps']} | "
            f"{row['rollouts_first']:.1%} → {row['rollouts_last']:.1%} | {run['final']:.1%} |"
        )
    (args.out / "staleness.json").write_text(
        json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1)
    )
    (args.out / "staleness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
