"""Learning that holds up: held-out success of RL against its warm start, over seeds, vs wall-clock and env steps.

For every seed: the warm start (``agentscope rl sft``: the tiny policy built offline and fine-tuned on a fixed
budget of expert demonstrations of the training set's warm split) is evaluated on the held-out
split; then, for every schedule mode, RL trains from it for ``--minutes`` of wall-clock, keeping a checkpoint every
``--eval-every`` trainer steps, and every kept checkpoint is evaluated on the held-out split afterwards (so the
evaluations do not slow the training they measure). Held-out tasks share no content key with the training or
warm-start tasks (the config fails to load otherwise, and every evaluation report counts the overlap: 0).

Writes ``OUT/results.json`` (every evaluation, with the step, wall-clock seconds and environment episodes of its
checkpoint), ``OUT/table.md`` (mean and spread over seeds) and PNG plots (held-out success vs wall-clock and vs
environment episodes, one line per mode, the warm start as a dashed line).

    .venv/bin/python benchmarks/rl_learning/run.py --config benchmarks/rl_learning/lookup.yaml --seeds 0 1 2 \\
        --modes async sync-wave --minutes 30 --eval-every 10 --out benchmarks/rl_learning/_out/lookup
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from agentscope.rl import evaluate, load_config, sft, train
from agentscope.rl._evaluation import evaluate_cached
from agentscope.rl._sft import policy_dir

_STEP_DIR = re.compile(r"^step_(\d+)$")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _cpu_s() -> float:
    """CPU seconds of this process (every thread) and of its reaped children so far: all of an embedded run
    (in-process or process rollout servers, which are reaped before ``train`` returns), not Ray actors."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _breakdown(report: dict[str, Any]) -> dict[str, Any]:
    """An evaluation report's success by category (``success_by_<key>``, when ``evaluation.breakdown`` is set)."""
    return {key: value for key, value in report.items() if key.startswith("success_by_")}


def _run_overrides(args: argparse.Namespace, seed: int, mode: str, warm_policy: str | None) -> list[str]:
    # With --warm-seed, every seed's RL starts from that seed's warm start, given by path (its key holds its seed).
    shared = [f"policy.path={warm_policy}", "sft.steps=0"] if args.warm_seed is not None else []
    return [
        *args.set,
        *shared,
        f"seed={seed}",
        f"policy.tiny.seed={seed}",
        f"schedule.mode={mode}",
        f"schedule.time_limit_s={args.minutes * 60}",
        f"schedule.steps={args.steps or 100000}",
        f"schedule.checkpoint_every={args.eval_every}",
        "schedule.keep_checkpoints=null",
        "evaluation.before_after=false",
    ]


async def _one_run(args: argparse.Namespace, seed: int, mode: str, warm: dict[str, Any]) -> dict[str, Any]:
    run_dir = args.out / f"seed{seed}-{mode}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = load_config(args.config, _run_overrides(args, seed, mode, warm.get("policy")))
    _log(f"seed {seed} {mode}: training for {args.minutes} min ({_uptime()})")
    cpu_started = _cpu_s()
    result = await train(config, run_dir)
    train_cpu_s = _cpu_s() - cpu_started
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    parsed: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
    rows = {int(r["step"]): r for r in parsed if "step" in r}
    points: list[dict[str, Any]] = [
        {
            "step": 0,
            "wall_s": 0.0,
            "episodes": 0.0,
            "success_rate": warm["success_rate"],
            "source": "warm start",
            **_breakdown(warm),
        }
    ]
    checkpoints = sorted(
        (int(m.group(1)), path)
        for path in (run_dir / "checkpoints").iterdir()
        if (m := _STEP_DIR.match(path.name)) is not None
    )
    for step, path in checkpoints:
        report = await evaluate(config, path)
        row = rows.get(step, {})
        points.append(
            {
                "step": step,
                "wall_s": row.get("time/wall_s", float("nan")),
                "episodes": row.get("env/episodes", float("nan")),
                "success_rate": report["success_rate"],
                "training_overlap": report["training_overlap"],
                "episodes_evaluated": report["episodes"],
                **_breakdown(report),
            }
        )
        _log(f"seed {seed} {mode}: step {step} held-out success {report['success_rate']:.3f}")
    return {
        "seed": seed,
        "mode": mode,
        "steps": result.steps,
        "train_wall_s": result.wall_s,
        "train_cpu_s": train_cpu_s,
        "points": points,
        "final": points[-1]["success_rate"],
        "best": max(p["success_rate"] for p in points),
        "training_rollouts": _rollout_success(run_dir / "trajectories.db", args.eval_every),
        "uptime_after": _uptime(),
    }


def _rollout_success(store: Path, every: int) -> list[dict[str, float]]:
    """Success of the training rollouts (sampled, every episode played, trained or not) by the policy version that
    finished them, in windows of ``every`` versions: what RL did on the tasks it is rewarded on."""
    import sqlite3

    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT max_version / ?, AVG(success), COUNT(*) FROM trajectories GROUP BY max_version / ? ORDER BY 1",
            (every, every),
        ).fetchall()
    return [
        {"versions_from": float(w * every), "success_rate": rate, "episodes": float(n)} for w, rate, n in rows
    ]


async def _sft_more(
    args: argparse.Namespace, seed: int, warm: dict[str, Any], warm_dir: Path
) -> dict[str, Any]:
    """The strongest cheap baseline for "RL adds something": more supervised steps on the same demonstrations, for
    the same wall-clock as an RL run, from the same warm start (chunks of ``--sft-chunk`` steps, each from the last
    one's weights; every chunk's policy is evaluated afterwards, outside the measured time)."""
    run_dir = args.out / f"seed{seed}-sft-more"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    points: list[dict[str, Any]] = [
        {
            "step": 0,
            "wall_s": 0.0,
            "episodes": 0.0,
            "success_rate": warm["success_rate"],
            "source": "warm start",
            "cpu_s": 0.0,
        }
    ]
    chunks: list[tuple[int, float, float, Path]] = []
    source, steps, started, cpu_started = warm_dir, 0, time.perf_counter(), _cpu_s()
    done: list[dict[str, Any]] = []
    if args.sft_more_continue is not None:
        # The earlier run's chunks count as done (their time, CPU and scores as it recorded them); the next chunk
        # starts from its last policy with the chunk number, and so the batch order, a longer run would have had.
        earlier = args.sft_more_continue / f"seed{seed}-sft-more"
        records = [
            r
            for r in json.loads((args.sft_more_continue / "results.json").read_text())["runs"]
            if r["mode"] == "sft-more" and r["seed"] == seed
        ]
        if len(records) != 1 or len(records[0]["points"]) < 2:
            raise SystemExit(
                f"--sft-more-continue {args.sft_more_continue}: no sft-more run of seed {seed} with a chunk to "
                f"continue from ({len(records)} sft-more runs of that seed in its results.json)"
            )
        done = records[0]["points"][1:]
        for point in done:
            chunk_dir = earlier / f"chunk{len(chunks) + 1:03d}"
            chunks.append((point["step"], point["wall_s"], point["cpu_s"], chunk_dir / "policy_init"))
        steps, source = chunks[-1][0], chunks[-1][3]
        started -= chunks[-1][1]
        cpu_started -= chunks[-1][2]
    budget = f", at most {args.cpu_budget_s:.0f} CPU s" if args.cpu_budget_s is not None else ""
    _log(f"seed {seed} sft-more: {args.minutes} min of supervised steps{budget} ({_uptime()})")
    while time.perf_counter() - started < args.minutes * 60 and (
        args.cpu_budget_s is None or _cpu_s() - cpu_started < args.cpu_budget_s
    ):
        chunk_dir = run_dir / f"chunk{len(chunks) + 1:03d}"
        config = load_config(
            args.config,
            [
                *args.set,
                f"seed={seed * 1000 + len(chunks)}",  # a new batch order for every chunk
                f"policy.path={source}",
                "policy.cache_dir=null",
                f"sft.steps={args.sft_chunk}",
                "sft.validation_tasks=null",  # more steps, not early stopping: a chunk is trained to its end
                "eval_tasks=null",
                *([f"sft.threads={args.sft_more_threads}"] if args.sft_more_threads is not None else []),
            ],
        )
        summary = await sft(config, chunk_dir)
        steps += args.sft_chunk
        source = Path(summary["policy"])
        chunks.append((steps, time.perf_counter() - started, _cpu_s() - cpu_started, source))
    train_cpu_s = _cpu_s() - cpu_started
    config = load_config(args.config, [*args.set, f"seed={seed}"])
    points += done
    for steps_done, wall_s, cpu_s, policy in chunks[len(done) :]:
        report = await evaluate(config, policy)
        points.append(
            {
                "step": steps_done,
                "wall_s": wall_s,
                "cpu_s": cpu_s,
                "episodes": 0.0,
                "success_rate": report["success_rate"],
                "training_overlap": report["training_overlap"],
                "episodes_evaluated": report["episodes"],
                **_breakdown(report),
            }
        )
        _log(f"seed {seed} sft-more: {steps_done} more steps, held-out success {report['success_rate']:.3f}")
    return {
        "seed": seed,
        "mode": "sft-more",
        "steps": steps,
        "cpu_budget_s": args.cpu_budget_s,
        "sft_more_threads": args.sft_more_threads,
        "train_wall_s": chunks[-1][1] if chunks else 0.0,
        "train_cpu_s": train_cpu_s,
        "points": points,
        "final": points[-1]["success_rate"],
        "best": max(p["success_rate"] for p in points),
        "uptime_after": _uptime(),
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    warm_starts: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        warm_seed = seed if args.warm_seed is None else args.warm_seed
        base = load_config(args.config, [*args.set, f"seed={warm_seed}", f"policy.tiny.seed={warm_seed}"])
        _log(f"seed {seed}: warm start of seed {warm_seed} ({_uptime()})")
        summary = await sft(base, args.out / f"seed{warm_seed}-sft")
        if "eval" not in summary:
            raise SystemExit(f"{args.config} has no eval_tasks: nothing to measure held-out success on")
        warm = summary["eval"]
        warm_starts[seed] = {
            "success_rate": warm["success_rate"],
            "episodes": warm["episodes"],
            "sft": summary["sft"],
            "warm_seed": warm_seed,
            "policy": str(summary["policy"]),
            **_breakdown(warm),
        }
        _log(f"seed {seed}: warm start held-out success {warm['success_rate']:.3f}")
        for mode in args.modes:
            if mode == "sft-more":
                runs.append(await _sft_more(args, seed, warm_starts[seed], Path(summary["policy"])))
            else:
                runs.append(await _one_run(args, seed, mode, warm_starts[seed]))
            (args.out / "results.json").write_text(json.dumps(_report(args, warm_starts, runs), indent=1))
    return _report(args, warm_starts, runs)


async def _complete_breakdown(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Add the per-category success (``evaluation.breakdown``) that a results.json made before it was kept lacks:
    the warm start's from its cached evaluation (no episode replayed), each RL run's final checkpoint by evaluating
    it again (greedy, so it replays what was judged, but not bit for bit: Chromium's timing may change a page; the
    re-evaluation's own overall success is kept beside the first as ``breakdown_success_rate``). Run it on each OUT
    before merging: a merged report's runs live in other directories. The settings are the report's own
    (``overrides``, ``warm_seed``), not this command's."""
    if "merged_from" in report:
        raise SystemExit(
            "--complete-breakdown: run it on each OUT of the merge (its runs are there), then merge again"
        )
    args.set, args.warm_seed = list(report.get("overrides") or []), report.get("warm_seed")
    for key, warm in report["warm_start"].items():
        if _breakdown(warm):
            continue
        seed = int(warm.get("warm_seed", key))
        config = load_config(args.config, [*args.set, f"seed={seed}", f"policy.tiny.seed={seed}"])
        made = warm.get("policy") or policy_dir(config, args.out / f"seed{seed}-sft")
        cached = await evaluate_cached(config, Path(made))
        if not _breakdown(cached):
            raise SystemExit(
                f"{args.config} sets no evaluation.breakdown: there is no per-task success to add"
            )
        warm.update(_breakdown(cached))
    for run in report["runs"]:
        final = run["points"][-1]
        if run["mode"] == "sft-more" or "source" in final or _breakdown(final):
            continue
        checkpoint = (
            args.out / f"seed{run['seed']}-{run['mode']}" / "checkpoints" / f"step_{final['step']:08d}"
        )
        warm_policy = report["warm_start"][str(run["seed"])].get("policy")
        config = load_config(args.config, _run_overrides(args, run["seed"], run["mode"], warm_policy))
        _log(f"seed {run['seed']} {run['mode']}: evaluating step {final['step']} again for its breakdown")
        again = await evaluate(config, checkpoint)
        final.update(_breakdown(again), breakdown_success_rate=again["success_rate"])


def _report(
    args: argparse.Namespace, warm: dict[int, dict[str, Any]], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "config": str(args.config),
        "overrides": args.set,
        "minutes": args.minutes,
        "steps": args.steps,
        "warm_seed": args.warm_seed,
        "warm_start": {str(k): v for k, v in warm.items()},
        "runs": runs,
    }


def _merge(dirs: list[Path], every: int) -> dict[str, Any]:
    """One report of the runs in ``dirs`` (each an OUT of this script); the first one's header is kept."""
    reports = [json.loads((d / "results.json").read_text()) for d in dirs]
    merged = {
        **reports[0],
        "merged_from": [str(d) for d in dirs],
        "commands": [r["command"] for r in reports],
    }
    merged["warm_start"] = {k: v for r in reports for k, v in r["warm_start"].items()}
    merged["runs"] = []
    for directory, report in zip(dirs, reports, strict=True):
        for run in report["runs"]:
            if (
                "training_rollouts" not in run and run["mode"] != "sft-more"
            ):  # supervised steps play no rollouts
                store = directory / f"seed{run['seed']}-{run['mode']}" / "trajectories.db"
                run["training_rollouts"] = _rollout_success(store, every)
            merged["runs"].append(run)
    return merged


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1%}"
    return f"{mean:.1%} ± {statistics.stdev(values):.1%} (min {min(values):.1%}, max {max(values):.1%})"


def _per_category_table(report: dict[str, Any]) -> str:
    """Held-out success per category (``success_by_<key>``: per task on MiniWoB++), warm start against each mode's
    final checkpoint, mean over the seeds that have both; empty when no run kept a breakdown."""
    warm = report["warm_start"]
    keys = sorted({k for w in warm.values() for k in _breakdown(w)})
    if not keys:
        return ""
    key = keys[0]
    runs = [r for r in report["runs"] if key in r["points"][-1]]
    modes = sorted({r["mode"] for r in runs})
    categories = sorted({c for w in warm.values() for c in w.get(key, {})})
    header = ["| " + key.removeprefix("success_by_") + " | warm start |"]
    rule = ["|---|---:|"]
    for mode in modes:
        header.append(f" {mode}, final | gain (points): mean, per seed |")
        rule.append("---:|---:|")
    lines = ["".join(header), "".join(rule)]
    gains_by_mode: dict[str, list[float]] = {mode: [] for mode in modes}
    for category in categories:
        row = [f"| {category} | "]
        warm_rates = [w[key][category] for w in warm.values() if category in w.get(key, {})]
        row.append(f"{statistics.fmean(warm_rates):.0%} |" if warm_rates else "- |")
        for mode in modes:
            pairs = [
                (r["points"][-1][key][category], warm[str(r["seed"])][key][category])
                for r in runs
                if r["mode"] == mode
                and category in r["points"][-1][key]
                and category in warm.get(str(r["seed"]), {}).get(key, {})
            ]
            if not pairs:
                row.append(" - | - |")
                continue
            gains = [100 * (after - before) for after, before in pairs]
            gains_by_mode[mode].append(statistics.fmean(gains))
            seeds = ", ".join(f"{g:+.0f}" for g in gains)
            row.append(
                f" {statistics.fmean(a for a, _ in pairs):.0%} | {statistics.fmean(gains):+.0f} ({seeds}) |"
            )
        lines.append("".join(row))
    for mode in modes:
        gains = gains_by_mode[mode]
        if gains:
            raised = sum(g > 0 for g in gains)
            lowered = sum(g < 0 for g in gains)
            lines.append(
                f"\n{mode}: mean of the per-{key.removeprefix('success_by_')} gains {statistics.fmean(gains):+.1f} "
                f"points; raised {raised}, lowered {lowered}, unchanged {len(gains) - raised - lowered} of {len(gains)}."
            )
    return "\n".join(lines) + "\n"


def _full_windows(windows: list[dict[str, float]]) -> list[dict[str, float]]:
    """The rollout windows without a trailing one of under half the usual episodes: the versions the run reached
    just before its time ran out, whose few episodes would be read as the run's last success."""
    if len(windows) < 2:
        return windows
    usual = statistics.median(w["episodes"] for w in windows[:-1])
    return windows[:-1] if windows[-1]["episodes"] < usual / 2 else windows


def _schedule_table(report: dict[str, Any]) -> str:
    """The issue's schedule criterion, per seed: when async's held-out success first reached the final success of
    each synchronous run of the same seed (as a fraction of that run's wall-clock), when the sync run itself first
    reached it, and async's success at the last checkpoint within half that wall-clock. Times are those of the
    first checkpoint at or above the target: upper bounds, at each run's checkpoint spacing. Empty unless some seed
    has an async run and a sync one."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for run in report["runs"]:
        modes = by_seed.setdefault(run["seed"], {})
        if run["mode"] in modes:
            raise SystemExit(
                f"two {run['mode']} runs of seed {run['seed']}: merge them into separate reports"
            )
        modes[run["mode"]] = run
    lines: list[str] = []
    for seed in sorted(by_seed):
        modes = by_seed[seed]
        mine = modes.get("async")
        if mine is None:
            continue
        for baseline in sorted(m for m in modes if m.startswith("sync")):
            lines.append(_schedule_row(seed, baseline, mine, modes[baseline]))
    if not lines:
        return ""
    header = (
        "| seed | sync run | its final held-out success | the sync run first reaches it at (share of its time) "
        "| async final | async first reaches it at (share of the sync run's time) "
        "| async at half the sync run's time |\n|---:|---|---:|---:|---:|---:|---:|"
    )
    return header + "\n" + "\n".join(lines) + "\n"


def _schedule_row(seed: int, baseline: str, mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    target = theirs["final"]
    horizon = theirs["points"][-1]["wall_s"]
    if not (math.isfinite(horizon) and horizon > 0):
        horizon = theirs.get("train_wall_s", 0.0)
    head = f"| {seed} | {baseline} | {target:.1%} ({theirs['steps']} steps, {horizon:.0f} s) | "
    # Trained checkpoints only: the warm start (step 0) is every run's first point, and "reaching" a final at or
    # below it says nothing about either schedule.
    trained = [p for p in theirs["points"] if p.get("step", 0) > 0]
    warm = theirs["points"][0]["success_rate"]
    if not (math.isfinite(horizon) and horizon > 0) or not trained:
        return head + "n/a (no trained checkpoint) | | | |"
    if target <= warm:
        return head + f"n/a (at or below the warm start's {warm:.1%}) | | | |"
    own = next((p for p in trained if p["success_rate"] >= target), trained[-1])
    reached = next((p for p in mine["points"] if p.get("step", 0) > 0 and p["success_rate"] >= target), None)
    within = [p for p in mine["points"] if math.isfinite(p["wall_s"]) and p["wall_s"] <= horizon / 2]
    at_half = within[-1]["success_rate"] if within else None
    if reached is None:
        when = "never"
    elif math.isfinite(reached["wall_s"]):
        when = f"{reached['wall_s']:.0f} s ({reached['wall_s'] / horizon:.2f}x)"
    else:
        when = f"step {reached['step']} (time not recorded)"
    return (
        head
        + f"{own['wall_s'] / horizon:.2f}x | {mine['final']:.1%} ({mine['steps']} steps) | {when} | "
        + ("-" if at_half is None else f"{at_half:.1%}")
        + " |"
    )


def _arm_row(
    label: str,
    successes: list[float],
    gains: list[float],
    steps: list[int],
    cpu: list[float],
    moved: str,
) -> str:
    """One row of ``table.md``: success and gain over seeds, mean optimizer steps, CPU seconds (mean and range)
    and how the training rollouts moved."""
    cpu_cell = f"{statistics.fmean(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f})" if cpu else "-"
    return (
        f"| {label} | {_spread(successes)} | "
        f"{statistics.fmean(gains):+.1f} (min {min(gains):+.1f}, max {max(gains):+.1f}) | "
        f"{statistics.fmean(steps):.0f} | {cpu_cell} | {moved} |"
    )


def _within_budget(run: dict[str, Any]) -> dict[str, Any] | None:
    """An sft-more run's last point within its ``--cpu-budget-s`` (the final one runs past it by up to a chunk);
    None without a budget."""
    budget = run.get("cpu_budget_s")
    if budget is None:
        return None
    inside = [point for point in run["points"] if point.get("cpu_s", math.inf) <= budget]
    return inside[-1] if inside else None


def _distinct_warm(report: dict[str, Any]) -> list[float]:
    """The success of each distinct warm start (one when every seed started from the same, ``--warm-seed``)."""
    by_source = {w.get("policy", key): w["success_rate"] for key, w in report["warm_start"].items()}
    return list(by_source.values())


def _warm_label(report: dict[str, Any]) -> str:
    count = len(_distinct_warm(report))
    if count == 1 and len(report["warm_start"]) > 1:
        return f"warm start (one, shared by {len(report['warm_start'])} RL seeds)"
    return f"warm start ({count} seeds)"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """The table (mean ± std over seeds) and the plots of ``report``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    modes = sorted({r["mode"] for r in runs})
    warm = [w["success_rate"] for w in report["warm_start"].values()]
    lines = [
        f"| | held-out success (greedy) | gain over warm start (points) | optimizer steps in {report['minutes']} min "
        "| CPU s of training per run (process + reaped children) | training rollouts (sampled): first window → last |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {_warm_label(report)} | {_spread(_distinct_warm(report))} | | | | |",
    ]
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        gains = [100 * (r["final"] - report["warm_start"][str(r["seed"])]["success_rate"]) for r in mine]
        rollouts = [_full_windows(r["training_rollouts"]) for r in mine if r.get("training_rollouts")]
        first = statistics.fmean(w[0]["success_rate"] for w in rollouts) if rollouts else None
        last = statistics.fmean(w[-1]["success_rate"] for w in rollouts) if rollouts else None
        moved = f"{first:.1%} → {last:.1%}" if first is not None and last is not None else "-"
        name = "more supervised steps (sft-more)" if mode == "sft-more" else f"RL {mode}"
        cpu = [
            r["train_cpu_s"] for r in mine if "train_cpu_s" in r
        ]  # not measured before 2026-12-07 16:40 UTC
        lines.append(
            _arm_row(
                f"{name}, final ({len(mine)} seeds)",
                [r["final"] for r in mine],
                gains,
                [r["steps"] for r in mine],
                cpu,
                moved,
            )
        )
        within = [_within_budget(r) for r in mine]
        if mode == "sft-more" and within and all(point is not None for point in within):
            points = [point for point in within if point is not None]
            base = [report["warm_start"][str(r["seed"])]["success_rate"] for r in mine]
            gains = [100 * (point["success_rate"] - b) for point, b in zip(points, base, strict=True)]
            label = f"{name}, last chunk within its {mine[0]['cpu_budget_s']:.0f} CPU s budget"
            successes = [point["success_rate"] for point in points]
            steps = [point["step"] for point in points]
            lines.append(_arm_row(label, successes, gains, steps, [point["cpu_s"] for point in points], "-"))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    schedules = _schedule_table(report)
    if schedules:
        (out / "schedules.md").write_text(schedules)
    per_category = _per_category_table(report)
    if per_category:
        (out / "per_task.md").write_text(per_category)
    for axis_key, label, name in (
        ("wall_s", "training wall-clock (s)", "time"),
        ("episodes", "environment episodes", "episodes"),
    ):
        figure, axis = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
        for index, mode in enumerate(modes):
            if mode == "sft-more" and axis_key == "episodes":
                continue  # supervised steps play no episodes
            for r in (r for r in runs if r["mode"] == mode):
                xs = [p[axis_key] for p in r["points"]]
                ys = [p["success_rate"] for p in r["points"]]
                axis.plot(
                    xs,
                    ys,
                    color=f"C{index}",
                    alpha=0.8,
                    marker="o",
                    markersize=3,
                    label=mode if r["seed"] == min(x["seed"] for x in runs if x["mode"] == mode) else None,
                )
        if warm:
            axis.axhline(statistics.fmean(warm), color="gray", linestyle="--", label="warm start (mean)")
        axis.set_xlabel(label)
        axis.set_ylabel("held-out success")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.set_title(f"{Path(report['config']).stem}: one line per seed", fontsize=10)
        figure.savefig(out / f"heldout_vs_{name}.png", dpi=110)
        plt.close(figure)
    figure, axis = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    for index, mode in enumerate(modes):
        for r in (r for r in runs if r["mode"] == mode and r.get("training_rollouts")):
            windows = _full_windows(r["training_rollouts"])
            axis.plot(
                [w["versions_from"] for w in windows],
                [w["success_rate"] for w in windows],
                color=f"C{index}",
                alpha=0.8,
                marker="o",
                markersize=3,
                label=mode if r["seed"] == min(x["seed"] for x in runs if x["mode"] == mode) else None,
            )
    axis.set_xlabel("policy version (window start)")
    axis.set_ylabel("training-rollout success (sampled)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("the tasks RL is rewarded on: one line per seed", fontsize=10)
    figure.savefig(out / "training_rollouts.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("benchmarks/rl_learning/lookup.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["async"],
        help="Schedule modes (async, sync-wave, sync-refill), and sft-more: the same minutes of supervised steps "
        "on the warm start's demonstrations instead of RL (the baseline RL must beat).",
    )
    parser.add_argument(
        "--sft-chunk", type=int, default=250, help="sft-more: supervised steps between evaluated policies."
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--cpu-budget-s",
        type=float,
        default=None,
        help="sft-more: also stop at the first chunk boundary past this many CPU seconds (e.g. an RL arm's "
        "train_cpu_s), for a comparison at equal compute, which the machine's load changes far less than "
        "wall-clock (unless cores are oversubscribed: see --sft-more-threads). The table also shows the last chunk "
        "within the budget.",
    )
    parser.add_argument(
        "--sft-more-threads",
        type=int,
        default=None,
        help="sft-more: torch threads of each chunk (default: the config's sft.threads). Use 1 when several runs "
        "share the cores: OpenMP threads that wait for a descheduled sibling spin, burning CPU without progress.",
    )
    parser.add_argument(
        "--sft-more-continue",
        type=Path,
        default=None,
        metavar="OUT",
        help="sft-more: continue the sft-more runs of an earlier OUT dir (same seeds and settings) from their last "
        "chunk; --cpu-budget-s and --minutes count their time too.",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="Also stop each RL run after this many trainer steps (whichever of --minutes and --steps comes "
        "first): for comparisons at equal optimizer steps, which the machine's load does not change.",
    )
    parser.add_argument(
        "--warm-seed",
        type=int,
        default=None,
        help="Start every seed's RL from the warm start of this seed (built once; the spread over seeds is then "
        "RL's alone). Default: each seed its own warm start.",
    )
    parser.add_argument(
        "--eval-every", type=int, default=10, help="Trainer steps between evaluated checkpoints."
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/rl_learning/_out/run"))
    parser.add_argument(
        "--report-only", action="store_true", help="Redraw table and plots from OUT/results.json."
    )
    parser.add_argument(
        "--complete-breakdown",
        action="store_true",
        help="Add the per-task success that OUT/results.json lacks (warm start: cached; each run's final "
        "checkpoint: evaluated again), then report.",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="Merge the results.json of several OUT dirs (runs made in parallel) into --out, then report.",
    )
    args = parser.parse_args()
    if args.cpu_budget_s is not None and args.cpu_budget_s <= 0:
        parser.error("--cpu-budget-s must be positive")
    if args.sft_more_threads is not None and args.sft_more_threads < 1:
        parser.error("--sft-more-threads must be at least 1")
    if args.merge and args.complete_breakdown:
        parser.error("--complete-breakdown works on one OUT: run it on each before --merge")
    if args.merge:
        report = _merge(args.merge, args.eval_every)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=1))
    elif args.report_only or args.complete_breakdown:
        report = json.loads((args.out / "results.json").read_text())
        if args.complete_breakdown:
            anyio.run(_complete_breakdown, args, report)
            (args.out / "results.json").write_text(json.dumps(report, indent=1))
    else:
        report = anyio.run(_main, args)
        (args.out / "results.json").write_text(json.dumps(report, indent=1))
    write_outputs(report, args.out)
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
