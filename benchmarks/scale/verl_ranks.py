"""What verl's FSDP actor costs per step on this machine: the torch backend and ``verl_fsdp`` on one rank in this
process, against ``verl_fsdp`` on N ranks as Ray actors (``trainer.placement: ray``, ``trainer.ranks: N``).

The policy is the quick start's (``examples/rl/quickstart.yaml``: the tiny Qwen2 built offline, 0.35 M
parameters, untrained); a batch is the quick start's (4 groups of 8 trajectories, mixed rewards), made of
multi-turn episodes like its lookups (a ~220-token first prompt, 3 turns of 24 generated tokens, 40-token tool
results between them), with the policy's exact log-probs as the rollout's. Each arm builds its trainer, takes one
warm-up step, then ``--steps`` timed steps on the same batches; the arms run in turn, then again in reverse order,
so drift of the machine falls on all of them. In-process arms use ``--threads`` torch threads (the whole machine
by default); each Ray rank uses ``--threads // ranks``.

    .venv/bin/python benchmarks/scale/verl_ranks.py [--steps 6] [--ranks 2] [--rounds 2] [--out FILE.json]

Prints a table (median step seconds per arm and round, start seconds) and writes it as JSON with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _policy(out: Path) -> Path:
    from agentscope.rl.policy import TinyPolicyConfig, build_tiny_policy

    quickstart = yaml.safe_load((ROOT / "examples" / "rl" / "quickstart.yaml").read_text())
    return build_tiny_policy(TinyPolicyConfig(**quickstart["policy"]["tiny"]), out)


@torch.no_grad()
def _trajectory(model: Any, vocab: int, *, group: int, index: int, reward: float) -> Any:
    from agentscope.rl import Trajectory, Turn

    g = torch.Generator().manual_seed(1000 * group + index)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    context = tokens(220)
    turns: list[Turn] = []
    for turn in range(3):
        prompt = context + tokens(40) if turn else context
        completion = tokens(24)
        ids = torch.tensor([prompt + completion])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
        turns.append(
            Turn(
                prompt_ids=prompt,
                completion_ids=completion,
                logprobs=logprobs.tolist(),
                version_head=0,
                version_tail=0,
            )
        )
        context = prompt + completion
    return Trajectory(
        task_id=f"t{group}", group_id=f"g{group}", turns=turns, reward=reward, success=reward > 0
    )


def _batches(model: Any, vocab: int, count: int) -> list[list[Any]]:
    return [
        [
            _trajectory(model, vocab, group=10 * b + g, index=i, reward=float((g + i) % 3 == 0))
            for g in range(4)
            for i in range(8)
        ]
        for b in range(count)
    ]


def _arm(name: str, model_dir: Path, batches: list[list[Any]], *, ranks: int, threads: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentscope.rl.trainer import Trainer, TrainerConfig, VerlFSDPTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.set_num_threads(threads)
    base = {"lr": 3e-4, "micro_batch_size": 16}
    started = time.perf_counter()
    if name == "torch":
        trainer: Any = Trainer(model, tokenizer, TrainerConfig(**base))
    elif ranks == 1:
        trainer = VerlFSDPTrainer(
            model, tokenizer, TrainerConfig(backend="verl_fsdp", **base), model_dir=model_dir
        )
    else:
        config = TrainerConfig(backend="verl_fsdp", placement="ray", ranks=ranks, **base)
        trainer = VerlFSDPTrainer(
            model, tokenizer, config, model_dir=model_dir, threads=max(1, threads // ranks)
        )
    start_s = time.perf_counter() - started
    try:
        trainer.step(batches[0])  # warm-up
        seconds = []
        for batch in batches[1:]:
            began = time.perf_counter()
            trainer.step(batch)
            seconds.append(time.perf_counter() - began)
    finally:
        close = getattr(trainer, "close", None)
        if close is not None:
            close()
    return {"start_s": start_s, "step_s": seconds, "median_step_s": statistics.median(seconds)}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import ray

    load_start = os.getloadavg()[0]
    ray.init(num_cpus=max(args.ranks, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import AutoModelForCausalLM

        model_dir = _policy(Path(tmp) / "policy")
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        vocab = int(model.config.vocab_size)
        batches = _batches(model, vocab, args.steps + 1)
        arms = [("torch", 1), ("verl_fsdp", 1), ("verl_fsdp", args.ranks)]
        rows: list[dict[str, Any]] = []
        for round_index in range(args.rounds):
            order = arms if round_index % 2 == 0 else list(reversed(arms))
            for name, ranks in order:
                result = _arm(name, model_dir, batches, ranks=ranks, threads=args.threads)
                row = {"round": round_index, "backend": name, "ranks": ranks, **result}
                rows.append(row)
                where = "in process" if ranks == 1 else "Ray actors"
                print(
                    f"round {round_index} {name:9} ranks {ranks} ({where}): start {result['start_s']:.1f} s, "
                    f"median step {result['median_step_s']:.2f} s",
                    file=sys.stderr,
                )
    tokens = sum(len(t.completion_ids) for traj in batches[0] for t in traj.turns)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "verl": _version("verl"),
            "ray": _version("ray"),
            "load_1m_start": load_start,
            "load_1m_end": os.getloadavg()[0],
        },
        "batch": {"trajectories": 32, "generated_tokens": tokens},
        "threads": args.threads,
        "rows": rows,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
