"""What checkpointing every step costs the trainer: AsyncCheckpointer vs none vs a synchronous save.

    .venv/bin/python benchmarks/rl_checkpoint/bench.py --model 3.7m --steps 6 --rounds 3
    .venv/bin/python benchmarks/rl_checkpoint/bench.py --model 25m --steps 4 --rounds 2

A tiny Qwen2 policy (built in code, no download) trains with :class:`agentscope.rl.trainer.Trainer` on a fixed
GRPO batch shaped like the smoke task's (``--groups`` × ``--group-size`` episodes of ``--turns`` tool turns,
``--completion`` generated tokens per turn). Three variants run in rounds, interleaved (the machine is shared, so
load drifts; interleaving spreads it over all three):

- ``none``: ``trainer.step()`` only;
- ``async``: ``trainer.step()`` then ``AsyncCheckpointer.save()`` every step (the write overlaps the next step;
  the final ``wait()`` is counted);
- ``sync``: the same save followed at once by ``wait()`` (what a blocking checkpoint costs).

Overhead = (wall time of the variant - wall time of ``none``) / wall time of ``none``, per round; the report gives
the median over rounds, plus the snapshot (blocking) and write (background) times per checkpoint. The same ratio
over process CPU time (all threads) is reported too: on a shared machine whose load drifts it is the steadier
number, and on a dedicated one it bounds the wall overhead (the writer thread competes with training for cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agentscope.rl import Trajectory, Turn
from agentscope.rl.trainer import AsyncCheckpointer, Trainer, TrainerConfig

MODELS = {
    "3.7m": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4},
    "25m": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8},
}
VOCAB = 2048


def build(model_name: str) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        **MODELS[model_name],
    )
    vocab = {"<|endoftext|>": 0, "<|im_end|>": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # pyright: ignore[reportAttributeAccessIssue]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    return Qwen2ForCausalLM(config), tokenizer


def batch(args: argparse.Namespace) -> list[Trajectory]:
    g = torch.Generator().manual_seed(1)

    def tokens(n: int) -> list[int]:
        return torch.randint(2, VOCAB, (n,), generator=g).tolist()

    trajs: list[Trajectory] = []
    for group in range(args.groups):
        for k in range(args.group_size):
            context = tokens(args.prompt)
            turns: list[Turn] = []
            for t in range(args.turns):
                prompt = context + tokens(args.observation) if t else context
                completion = tokens(args.completion)
                turns.append(
                    Turn(
                        prompt_ids=prompt,
                        completion_ids=completion,
                        logprobs=[-7.6] * len(completion),
                        version_head=0,
                        version_tail=0,
                    )
                )
                context = prompt + completion
            trajs.append(
                Trajectory(task_id=f"t{group}", group_id=f"g{group}", turns=turns, reward=float(k % 2))
            )
    return trajs


def run_variant(variant: str, args: argparse.Namespace, trajs: list[Trajectory]) -> dict[str, object]:
    model, tokenizer = build(args.model)
    trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-5, micro_batch_size=args.micro_batch_size))
    trainer.step(trajs)  # warm-up (allocator, first-call overheads): not timed
    snapshots: list[float] = []
    snapshot_cpu: list[float] = []
    writes: list[float] = []
    write_cpu: list[float] = []
    steps: list[float] = []

    def record_write(stats: dict[str, float]) -> None:
        writes.append(stats["checkpoint/write_s"])
        write_cpu.append(stats["checkpoint/write_cpu_s"])

    with tempfile.TemporaryDirectory(dir=args.tmp) as run_dir:
        checkpointer = AsyncCheckpointer(run_dir, keep=2)
        started = time.perf_counter()
        cpu_started = time.process_time()
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            trainer.step(trajs, step=step)
            steps.append(time.perf_counter() - t0)
            if variant == "none":
                continue
            checkpointer.save(  # first waits for the previous write: its figures are then final
                step=step,
                model=model,
                tokenizer=tokenizer,
                trainer_state=trainer.state_dict(),
                extra={"data": {"version": 1, "outcomes": {}, "counters": {"trained": step}}},
            )
            stats = checkpointer.stats()
            snapshots.append(stats["checkpoint/snapshot_s"])
            snapshot_cpu.append(stats["checkpoint/snapshot_cpu_s"])
            if variant == "async" and step > 1:
                record_write(stats)
            if variant == "sync":
                checkpointer.wait()
                record_write(checkpointer.stats())
        checkpointer.wait()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if variant == "async":
            record_write(checkpointer.stats())
        size = checkpointer.stats().get("checkpoint/bytes", 0.0)
    return {
        "variant": variant,
        "wall_s": wall,
        "cpu_s": cpu,
        "load": os.getloadavg()[0],
        "step_s_median": statistics.median(steps),
        "snapshot_s_median": statistics.median(snapshots) if snapshots else None,
        "snapshot_cpu_s_median": statistics.median(snapshot_cpu) if snapshot_cpu else None,
        "write_s_median": statistics.median(writes) if writes else None,
        "write_cpu_s_median": statistics.median(write_cpu) if write_cpu else None,
        "checkpoint_mb": size / 1e6,
    }


def run_paired(args: argparse.Namespace, trajs: list[Trajectory]) -> dict[str, object]:
    """One trainer; units of two steps alternate: A = step, checkpoint, step; B = step, step. The load of a shared
    machine drifts slowly next to a unit (~2 steps), so the A-B difference per pair of neighbouring units is the
    cost of one checkpoint: its blocking snapshot plus the background write's interference with the next step."""
    model, tokenizer = build(args.model)
    trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-5, micro_batch_size=args.micro_batch_size))
    trainer.step(trajs)  # warm-up
    with tempfile.TemporaryDirectory(dir=args.tmp) as run_dir:
        checkpointer = AsyncCheckpointer(run_dir, keep=2)
        checkpointer.save(step=0, model=model, tokenizer=tokenizer, trainer_state=trainer.state_dict())
        checkpointer.wait()  # the first save allocates the host buffers: not timed
        step = 0
        costs: list[float] = []
        units: dict[str, list[float]] = {"A": [], "B": []}
        blocked: list[float] = []
        written: list[float] = []
        for pair in range(args.pairs):
            times: dict[str, float] = {}
            for kind in "AB" if pair % 2 == 0 else "BA":
                t0 = time.perf_counter()
                for i in range(2):
                    step += 1
                    trainer.step(trajs, step=step)
                    if kind == "A" and i == 0:
                        t1 = time.perf_counter()
                        checkpointer.save(
                            step=step, model=model, tokenizer=tokenizer, trainer_state=trainer.state_dict()
                        )
                        save_s = time.perf_counter() - t1
                t1 = time.perf_counter()
                checkpointer.wait()
                times[kind] = time.perf_counter() - t0
                if kind == "A":
                    blocked.append(save_s + time.perf_counter() - t1)
                    written.append(checkpointer.stats()["checkpoint/write_s"])
                units[kind].append(times[kind])
            costs.append(times["A"] - times["B"])
            print(
                f"pair {pair + 1}: A {times['A']:.2f}s B {times['B']:.2f}s; A blocked {blocked[-1]:.2f}s, "
                f"write {written[-1]:.2f}s (load {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
    step_s = statistics.median(units["B"]) / 2
    cost = statistics.median(costs)
    return {
        "pairs": args.pairs,
        "unit_a_s": units["A"],
        "unit_b_s": units["B"],
        "checkpoint_cost_s_per_pair": costs,
        "checkpoint_cost_s_median": cost,
        "blocked_s_median": statistics.median(blocked),
        "write_s_median": statistics.median(written),
        "step_s_median": step_s,
        "overhead_every_step": cost / step_s,
    }


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _emit(report: dict[str, object], out: Path | None) -> None:
    """Finish the report (load afterwards), print it, and write it to ``out`` too."""
    report["uptime_after"] = _uptime()
    text = json.dumps(report, indent=1)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="3.7m")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=60)
    parser.add_argument("--observation", type=int, default=20)
    parser.add_argument("--completion", type=int, default=100)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument(
        "--pairs", type=int, default=0, help="paired mode: this many A/B unit pairs (0: the rounds mode)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--tmp", default=None, help="directory for the run directories (default: the system's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here too")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    header: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads",
        "uptime_before": _uptime(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model,
    }
    trajs = batch(args)
    if args.pairs:
        _emit({"benchmark": "rl_checkpoint (paired)", **header, **run_paired(args, trajs)}, args.out)
        return
    rounds: list[dict[str, dict[str, object]]] = []
    for r in range(args.rounds):
        order = ["none", "async", "sync"] if r % 2 == 0 else ["sync", "async", "none"]
        results = {v: run_variant(v, args, trajs) for v in order}
        rounds.append(results)
        base = float(results["none"]["wall_s"])  # type: ignore[arg-type]
        print(
            f"round {r + 1}: none {base:.1f}s, async {results['async']['wall_s']:.1f}s, "
            f"sync {results['sync']['wall_s']:.1f}s (load: {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
        )

    def overhead(variant: str, key: str = "wall_s") -> list[float]:
        return [
            (float(rr[variant][key]) - float(rr["none"][key])) / float(rr["none"][key])  # type: ignore[arg-type]
            for rr in rounds
        ]

    def median_of(variant: str, key: str) -> float | None:
        values = [rr[variant][key] for rr in rounds if rr[variant][key] is not None]
        return statistics.median(float(v) for v in values) if values else None  # type: ignore[arg-type]

    report = {
        "benchmark": "rl_checkpoint",
        **header,
        "parameters_m": sum(p.numel() for p in build(args.model)[0].parameters()) / 1e6,
        "batch": {
            "trajectories": len(trajs),
            "tokens_per_sample": len(trajs[0].flatten()[0].prompt_ids)
            + len(trajs[0].flatten()[0].response_ids),
            "generated_tokens_per_sample": trajs[0].num_generated_tokens,
        },
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "step_s_median": median_of("none", "step_s_median"),
        "async_overhead_median": statistics.median(overhead("async")),
        "async_overhead_per_round": overhead("async"),
        "sync_overhead_median": statistics.median(overhead("sync")),
        "sync_overhead_per_round": overhead("sync"),
        "async_cpu_overhead_median": statistics.median(overhead("async", "cpu_s")),
        "sync_cpu_overhead_median": statistics.median(overhead("sync", "cpu_s")),
        "snapshot_s_median": median_of("async", "snapshot_s_median"),
        "snapshot_cpu_s_median": median_of("async", "snapshot_cpu_s_median"),
        "write_s_median": median_of("async", "write_s_median"),
        "write_cpu_s_median": median_of("async", "write_cpu_s_median"),
        "step_cpu_s_median": statistics.median(float(rr["none"]["cpu_s"]) / args.steps for rr in rounds),  # type: ignore[arg-type]
        "checkpoint_mb": median_of("async", "checkpoint_mb"),
        "raw": rounds,
    }
    snapshot_s, snapshot_cpu_s = report["snapshot_s_median"], report["snapshot_cpu_s_median"]
    write_cpu_s, step_s, step_cpu_s = (
        report["write_cpu_s_median"],
        report["step_s_median"],
        report["step_cpu_s_median"],
    )
    # What the trainer waits for per step, and the CPU a checkpoint takes from training (an upper bound of the
    # wall overhead on an otherwise idle machine, where the writer thread competes with training for the cores).
    report["blocking_fraction"] = float(snapshot_s) / float(step_s)  # type: ignore[arg-type]
    report["cpu_fraction"] = (float(snapshot_cpu_s) + float(write_cpu_s)) / float(step_cpu_s)  # type: ignore[arg-type]
    _emit(report, args.out)


if __name__ == "__main__":
    main()
