"""The staleness study, as AReaL reports it: final success for ``schedule.max_staleness`` in {0, 1, 2, 4, 8}, with
and without truncated importance sampling (``trainer.tis_threshold``: the config's, or null), async mode.

Every cell starts from ONE warm start (``--warm-seed``; built once, before the cells, into the policy cache, where
each cell finds it), so cells differ in the staleness bound, TIS and the RL seed. The bound does two things, as
AReaL's maximum staleness does: a trajectory older than it is dropped, and (``schedule.max_ahead`` unset) it sets
how many episodes may run ahead of the trainer, ``max(k, 1)`` batches' worth while the trainer trains: a larger
bound lets more of the policy's generation happen at once, which is what it buys. Each cell is one ``run.py`` run:
RL for ``--steps`` trainer steps (equal optimizer steps in every cell, whatever the machine's load; ``--minutes``
is a safety cap, and a cell that hits it is marked), every ``--eval-every``-th checkpoint evaluated on the held-out
split afterwards. ``--jobs 2`` runs two cells at once (each uses one core). Writes ``OUT/staleness.md``,
``OUT/staleness.json`` and ``OUT/staleness.png``: per cell and seed the trainer steps and wall-clock, the staleness
the trained batches actually had (mean and max over steps), the episodes dropped as too stale, the training
rollouts' success in the first and last window of versions, and the held-out success of the last checkpoint
(overall, and per category when the config sets ``evaluation.breakdown``); then mean ± sd over seeds per cell.

    .venv/bin/python benchmarks/rl_learning/staleness.py --config benchmarks/rl_learning/lookup-level2.yaml \\
        --seeds 0 1 2 --steps 200 --eval-every 100 --jobs 2 --set sft.threads=2 \\
        --set env.slots=64 --set data.batch_groups=1 --out benchmarks/rl_learning/_out/staleness

Check the realised staleness first: where the trainer waits for data, batches are never much older than a version
or two whatever the bound, and the larger bounds are then the same experiment (one 80-step run with 16 env slots and
batches of 32 episodes: mean 0.5-0.6, max 2, for bounds 1-8; RESULTS.md, rl_learning). Many slots and small batches
(the command above) make generation run ahead of the trainer, as in AReaL's setting.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent

_CELL = re.compile(r"^k(\d+)-tis(on|off)-seed(\d+)$")
_OWNED = {
    "schedule.max_staleness": "--staleness",
    "trainer.tis_threshold": "--tis",
    "schedule.steps": "--steps",
    "schedule.time_limit_s": "--minutes",
    "schedule.mode": "(async, always)",
    "schedule.checkpoint_every": "--eval-every",
    "schedule.keep_checkpoints": "(every checkpoint is kept)",
    "seed": "--seeds",
    "policy.path": "--warm-seed",
    "sft.steps": "--warm-seed",
}
"""Settings this script (or run.py) sets per cell: a ``--set`` of one would be silently overridden, so it is refused,
naming the option to use instead."""
_PER_CELL = ("schedule.max_staleness=", "trainer.tis_threshold=")


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _name(staleness: int, tis: bool, seed: int) -> str:
    return f"k{staleness}-tis{'on' if tis else 'off'}-seed{seed}"


def _warm_start(args: argparse.Namespace) -> dict[str, Any]:
    """Build (or find in the policy cache) the one warm start every cell starts from, before any cell runs: two
    cells building it at once would race for the same cache entry."""
    from agentscope.rl import load_config, sft

    seed = args.warm_seed
    config = load_config(args.config, [*args.set, f"seed={seed}", f"policy.tiny.seed={seed}"])
    _log(f"warm start of seed {seed}")
    summary: dict[str, Any] = anyio.run(sft, config, args.out / f"warm-seed{seed}")
    _log(f"warm start: held-out success {summary['eval']['success_rate']:.3f}")
    return summary


def _cell(args: argparse.Namespace, staleness: int, tis: bool, seed: int) -> Path | None:
    """One cell's run.py run; None when it failed (its log says why; the other cells go on)."""
    out = args.out / _name(staleness, tis, seed)
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--config",
        str(args.config),
        "--seeds",
        str(seed),
        "--warm-seed",
        str(args.warm_seed),
        "--modes",
        "async",
        "--minutes",
        str(args.minutes),
        "--eval-every",
        str(args.eval_every),
        "--out",
        str(out),
    ]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    for item in [*args.set, f"schedule.max_staleness={staleness}"]:  # the cell's own settings last: they win
        command += ["--set", item]
    if not tis:
        command += ["--set", "trainer.tis_threshold=null"]
    out.mkdir(parents=True, exist_ok=True)
    _log(f"{out.name}: start")
    with (out / "log.txt").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        _log(f"{out.name}: FAILED (exit status {done.returncode}; see {out / 'log.txt'})")
        return None
    _log(f"{out.name}: done")
    return out


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in (json.loads(line) for line in lines if line.strip()) if "step" in row]


def _row(staleness: int, tis: bool, seed: int, out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "results.json").read_text())
    [run] = report["runs"]
    overrides: list[str] = report.get("overrides") or []
    shared = [item for item in overrides if not item.startswith(_PER_CELL)]
    metrics = _metrics(out / f"seed{seed}-async")
    realised = [float(m["data/staleness"]) for m in metrics if "data/staleness" in m]
    last = metrics[-1] if metrics else {}
    windows = run["training_rollouts"]
    final = run["points"][-1]
    return {
        "cell": _name(staleness, tis, seed),
        "max_staleness": staleness,
        "tis": tis,
        "seed": seed,
        "config": report.get("config"),
        "overrides": shared,
        "steps_asked": report.get("steps"),
        "minutes_cap": report.get("minutes"),
        "warm_seed": report.get("warm_seed"),
        "command": report.get("command"),
        "steps": run["steps"],
        "train_wall_s": run["train_wall_s"],
        "staleness_mean": statistics.fmean(realised) if realised else None,
        "staleness_max": max(float(m["data/staleness_max"]) for m in metrics if "data/staleness_max" in m)
        if realised
        else None,
        "dropped_stale": last.get("data/dropped_stale"),
        "trained": last.get("data/trained"),
        "rollouts_first": windows[0]["success_rate"] if windows else None,
        "rollouts_last": windows[-1]["success_rate"] if windows else None,
        "warm": report["warm_start"][str(seed)]["success_rate"],
        "heldout_final": run["final"],
        "breakdown_final": {k: v for k, v in final.items() if k.startswith("success_by_")},
        "breakdown_warm": {
            k: v for k, v in report["warm_start"][str(seed)].items() if k.startswith("success_by_")
        },
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _categories(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(breakdown key, category) pairs over the rows: ``("success_by_level", "2")``."""
    return sorted({(key, c) for r in rows for key, table in r["breakdown_final"].items() for c in table})


def _category_label(key: str, category: str) -> str:
    return f"{key.removeprefix('success_by_')} {category}"


def _head(columns: list[str], categories: list[tuple[str, str]], per_category: str) -> list[str]:
    """A markdown table's header and alignment rows: ``columns`` (the second, TIS, left-aligned), then one column
    per breakdown category, named ``<category>: <per_category>``."""
    names = [*columns, *(f"{_category_label(*c)}: {per_category}" for c in categories)]
    return ["| " + " | ".join(names) + " |", "|---:|---|" + "---:|" * (len(names) - 2)]


def _title(rows: list[dict[str, Any]]) -> str:
    steps = sorted({r.get("steps_asked") for r in rows}, key=str)
    if steps and all(isinstance(s, int) for s in steps):
        return f"equal trainer steps ({', '.join(map(str, steps))})"
    return "equal wall-clock" if steps == [None] else "steps unknown (made before steps were recorded)"


def _table(rows: list[dict[str, Any]]) -> str:
    categories = _categories(rows)
    lines = _head(
        [
            "max_staleness",
            "TIS",
            "seed",
            "trainer steps (wall s)",
            "realised staleness mean / max",
            "dropped stale",
            "training rollouts: first → last window",
            "held-out: warm → last checkpoint",
        ],
        categories,
        "warm → last",
    )
    for r in rows:
        capped = isinstance(r.get("steps_asked"), int) and r["steps"] < r["steps_asked"]
        cells = [
            str(r["max_staleness"]),
            "on" if r["tis"] else "off",
            str(r["seed"]),
            f"{r['steps']}{' (time cap)' if capped else ''} ({r['train_wall_s']:.0f})",
            "-" if r["staleness_mean"] is None else f"{r['staleness_mean']:.2f} / {r['staleness_max']:.0f}",
            "-" if r["dropped_stale"] is None else f"{r['dropped_stale']:.0f}",
            f"{_pct(r['rollouts_first'])} → {_pct(r['rollouts_last'])}",
            f"{_pct(r['warm'])} → {_pct(r['heldout_final'])}",
        ]
        for key, category in categories:
            warm = r["breakdown_warm"].get(key, {}).get(category)
            last = r["breakdown_final"].get(key, {}).get(category)
            cells.append(f"{_pct(warm)} → {_pct(last)}")
        lines.append("| " + " | ".join(cells) + " |")
    return f"Staleness study, {_title(rows)}:\n\n" + "\n".join(lines) + "\n"


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{statistics.fmean(values):.1%}" if values else "-"
    return f"{statistics.fmean(values):.1%} ± {statistics.stdev(values):.1%}"


def _summary(rows: list[dict[str, Any]]) -> str:
    """Per cell (staleness, TIS), over its seeds: mean ± sd of the held-out success of the last checkpoint, its
    gain over the warm start, and per category; the realised staleness and the episodes dropped as stale."""
    categories = _categories(rows)
    lines = _head(
        [
            "max_staleness",
            "TIS",
            "seeds",
            "trainer steps, wall s (mean)",
            "realised staleness (mean)",
            "dropped stale (mean)",
            "held-out, last checkpoint",
            "gain (points)",
        ],
        categories,
        "last",
    )
    cells = sorted({(r["max_staleness"], r["tis"]) for r in rows}, key=lambda c: (c[0], not c[1]))
    for staleness, tis in cells:
        group = [r for r in rows if r["max_staleness"] == staleness and r["tis"] is tis]
        gains = [100 * (r["heldout_final"] - r["warm"]) for r in group]
        realised = [r["staleness_mean"] for r in group if r["staleness_mean"] is not None]
        dropped = [r["dropped_stale"] for r in group if r["dropped_stale"] is not None]
        gain = f"{statistics.fmean(gains):+.1f}" + (
            f" ± {statistics.stdev(gains):.1f}" if len(gains) > 1 else ""
        )
        row = [
            str(staleness),
            "on" if tis else "off",
            ", ".join(str(r["seed"]) for r in group),
            f"{statistics.fmean(r['steps'] for r in group):.0f}, "
            f"{statistics.fmean(r['train_wall_s'] for r in group):.0f}",
            f"{statistics.fmean(realised):.2f}" if realised else "-",
            f"{statistics.fmean(dropped):.0f}" if dropped else "-",
            _mean_sd([r["heldout_final"] for r in group]),
            gain,
        ]
        for key, category in categories:
            values = [
                r["breakdown_final"][key][category]
                for r in group
                if category in r["breakdown_final"].get(key, {})
            ]
            row.append(_mean_sd(values))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    figure, axis = plt.subplots(figsize=(6, 4))
    for tis, colour in ((True, "tab:blue"), (False, "tab:orange")):
        cells = sorted({r["max_staleness"] for r in rows if r["tis"] is tis})
        means = [
            statistics.fmean(r["heldout_final"] for r in rows if r["tis"] is tis and r["max_staleness"] == k)
            for k in cells
        ]
        axis.plot(cells, means, marker="o", color=colour, label=f"TIS {'on' if tis else 'off'}")
        for r in rows:
            if r["tis"] is tis:
                axis.scatter(r["max_staleness"], r["heldout_final"], color=colour, alpha=0.35, s=14)
    warm = statistics.fmean(r["warm"] for r in rows)
    axis.axhline(warm, color="grey", linestyle="--", label="warm start")
    axis.set_xscale("symlog", base=2, linthresh=1)
    ticks = sorted({r["max_staleness"] for r in rows})
    axis.set_xticks(ticks, labels=[str(k) for k in ticks])
    axis.set_xlabel("max_staleness (policy versions)")
    axis.set_ylabel("held-out success, last checkpoint")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "staleness.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=HERE / "lookup-level2.yaml")
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--tis", choices=["on", "off"], nargs="+", default=["on", "off"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="RL seeds (one cell each).")
    parser.add_argument("--warm-seed", type=int, default=0, help="The seed of the one shared warm start.")
    parser.add_argument("--steps", type=int, default=None, help="Trainer steps per cell (None: --minutes).")
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/rl_learning/_out/staleness"))
    parser.add_argument(
        "--report-only", action="store_true", help="Redraw the table and plot from the cells in OUT."
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="Merge the staleness.json of several OUT dirs (seeds run apart) into --out: the per-seed table, the "
        "summary over seeds and the plot.",
    )
    args = parser.parse_args()
    for item in args.set:
        key = item.split("=", 1)[0]
        if key in _OWNED:
            parser.error(f"--set {item}: this script sets {key} per cell; use {_OWNED[key]}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        rows = [r for d in args.merge for r in _rows_in(d)]
        _check_comparable(rows, parser)
        provenance = {"merged_from": [str(d) for d in args.merge], "report_command": _command()}
    else:
        if not args.report_only:
            _run_cells(args)
        rows = _rows_in(args.out)
        previous = args.out / "staleness.json"
        provenance = {"report_command": _command()}
        if not args.report_only:
            provenance["command"] = _command()
        elif previous.exists():  # keep the command that made the cells
            provenance["command"] = json.loads(previous.read_text()).get("command")
    rows.sort(key=lambda r: (r["max_staleness"], not r["tis"], r["seed"]))
    (args.out / "staleness.json").write_text(json.dumps(provenance | {"rows": rows}, indent=1))
    table = _table(rows) + "\nOver seeds:\n\n" + _summary(rows)
    (args.out / "staleness.md").write_text(table)
    _plot(rows, args.out)
    print(table)


def _command() -> str:
    return " ".join([sys.executable, *sys.argv])


def _run_cells(args: argparse.Namespace) -> None:
    from agentscope.rl import load_config

    if (
        load_config(args.config, args.set).policy.cache_dir is None
    ):  # where the cells find the shared warm start
        args.set = [*args.set, f"policy.cache_dir={args.out / 'policy-cache'}"]
    _warm_start(args)
    cells = [(k, tis == "on", seed) for seed in args.seeds for k in args.staleness for tis in args.tis]

    def play(cell: tuple[int, bool, int]) -> Path | None:
        return _cell(args, *cell)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(play, cells))


def _rows_in(out: Path) -> list[dict[str, Any]]:
    """A row for every finished cell in ``out`` (a directory ``k<K>-tis<on|off>-seed<S>`` with its results.json)."""
    rows: list[dict[str, Any]] = []
    for cell in sorted(out.iterdir()):
        match = _CELL.match(cell.name)
        if match is not None and (cell / "results.json").exists():
            k, tis, seed = int(match[1]), match[2] == "on", int(match[3])
            rows.append(_row(k, tis, seed, cell))
    return rows


def _check_comparable(rows: list[dict[str, Any]], parser: argparse.ArgumentParser) -> None:
    """Merged cells must come from the same config, settings, steps and warm start; refuse otherwise."""
    for field in ("config", "overrides", "steps_asked", "warm_seed"):
        values = {json.dumps(r.get(field)) for r in rows}
        if len(values) > 1:
            parser.error(f"--merge: the cells differ in {field}: {sorted(values)}")


if __name__ == "__main__":
    main()
