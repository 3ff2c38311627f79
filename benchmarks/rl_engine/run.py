"""Embedded rollout engine throughput: TorchEngine with N concurrent agents vs Hugging Face ``generate``.

For N in --agents (default 1, 8, 32, 64):

- **ours**: N asyncio agents, each sending --requests requests of its own, one after the other, to one
  ``TorchEngine`` (continuous batching: one forward pass per decode step for every running request, new requests
  admitted between steps);
- **hf-per-request**: what a naive server does, ``model.generate`` on one request at a time (batch 1). Its
  throughput does not depend on N (requests queue), so it is measured on min(N, 4) requests;
- **hf-batch**: the batching ceiling, one pre-formed ``model.generate`` batch of the N prompts (left-padded).

Every request has its own chat prompt (system prompt with the calculator tool, a question; ~190 tokens) and
generates exactly --max-tokens tokens (no stop tokens, ``min_new_tokens`` for HF), sampled at temperature 1.
Throughput = generated tokens / wall time. All three run in this process, one after another for each N, with the
same number of torch threads (--threads; the engine's thread and the main thread).

    .venv/bin/python benchmarks/rl_engine/run.py [--agents 1 8 32 64] [--threads 1] [--out FILE.json]

``--multi-turn`` adds a second table: N agents playing 3-turn conversations (each turn's prompt extends the last
turn's prompt + completion + an observation), ours with and without the prefix cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentscope.message import Msg
from agentscope.rl.policy import ChatFormat, ChatTokenizer, TinyPolicyConfig, build_tiny_policy
from agentscope.rl.policy._tiny import CALCULATOR_TOOL
from agentscope.rl.rollout import SamplingParams, TorchEngine

SYSTEM = "You solve arithmetic problems. Use the calculator tool to compute, then reply with the number only."


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def prompts(chat: ChatTokenizer, n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        messages = [Msg(role="system", content=SYSTEM), Msg(role="user", content=f"What is {a} + {b}?")]
        system, rest = chat.chat_format.system_prompt_of(messages)
        ids = chat.encode_system(system, [CALCULATOR_TOOL])
        for m in rest:
            ids += chat.encode_message(m)
        out.append(ids + chat.generation_prompt_ids)
    return out


async def ours(
    policy: Path,
    agents: int,
    requests: int,
    max_tokens: int,
    threads: int,
    prefix_cache: bool = True,
    multi_turn: bool = False,
    chat: ChatTokenizer | None = None,
) -> dict[str, float]:
    engine = TorchEngine(
        policy,
        max_batch=64,
        max_seq_len=2048,
        num_threads=threads,
        prefix_cache_slots=None if prefix_cache else 0,
        seed=0,
    )
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0)
    base = prompts(chat, agents * requests, seed=1) if chat else []
    observation = (
        chat.encode("\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n")
        + (chat.generation_prompt_ids)
        if chat
        else []
    )
    async with engine:
        await engine.generate(base[0][:32] if base else [1, 2, 3], SamplingParams(max_tokens=4))  # warm-up

        async def agent(i: int) -> int:
            n = 0
            ids = base[i * requests]
            for r in range(requests):
                gen = await engine.generate(ids if multi_turn else base[i * requests + r], params)
                n += len(gen.completion_ids)
                if multi_turn:
                    ids = ids + gen.completion_ids + observation
            return n

        start = time.perf_counter()
        counts = await asyncio.gather(*(agent(i) for i in range(agents)))
        wall = time.perf_counter() - start
        stats = engine.stats()
    return {
        "tokens": float(sum(counts)),
        "seconds": wall,
        "tokens_per_s": sum(counts) / wall,
        "decode_steps": stats["rollout/decode_steps"],
        "prefill_tokens": stats["rollout/prefill_tokens"],
        "prefix_cache_hit_tokens": stats["rollout/prefix_cache_hit_tokens"],
    }


def hf_per_request(model: Any, batch: list[list[int]], max_tokens: int) -> dict[str, float]:
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for ids in batch:
            out = model.generate(
                torch.tensor([ids]),
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                pad_token_id=0,
            )
            tokens += out.shape[1] - len(ids)
    wall = time.perf_counter() - start
    return {"tokens": float(tokens), "seconds": wall, "tokens_per_s": tokens / wall}


def hf_batch(model: Any, batch: list[list[int]], max_tokens: int) -> dict[str, float]:
    width = max(len(p) for p in batch)
    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):  # left padding
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention[row, width - len(ids) :] = 1
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids,
            attention_mask=attention,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            pad_token_id=0,
        )
    wall = time.perf_counter() - start
    tokens = (out.shape[1] - width) * len(batch)
    return {"tokens": float(tokens), "seconds": wall, "tokens_per_s": tokens / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=int, default=2, help="requests per agent (ours)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--policy", type=Path, help="a policy directory (default: build the default tiny one)"
    )
    parser.add_argument("--multi-turn", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved repetitions per N (medians reported)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy or build_tiny_policy(TinyPolicyConfig(), Path(tmp) / "policy")
        model = AutoModelForCausalLM.from_pretrained(policy).eval()
        tokenizer = AutoTokenizer.from_pretrained(policy)
        chat = ChatTokenizer(tokenizer, ChatFormat())
        params = sum(p.numel() for p in model.parameters())
        all_prompts = prompts(chat, max(args.agents) * args.requests)
        print(
            f"policy: {params / 1e6:.2f} M parameters, vocab {model.config.vocab_size}, "
            f"prompt ~{statistics.mean(len(p) for p in all_prompts):.0f} tokens, "
            f"{args.max_tokens} generated per request, torch threads {args.threads}",
            flush=True,
        )
        rows = []
        for n in args.agents:
            reps = []
            for _ in range(args.repeat):  # interleaved, so that each ratio compares runs seconds apart
                before = load()
                mine = asyncio.run(ours(policy, n, args.requests, args.max_tokens, args.threads, chat=chat))
                single = hf_per_request(model, all_prompts[: min(n, 4)], args.max_tokens)
                ceiling = hf_batch(model, all_prompts[:n], args.max_tokens)
                reps.append(
                    {"ours": mine, "hf_per_request": single, "hf_batch": ceiling, "load": [before, load()]}
                )
                print(
                    f"N={n:3d}  ours {mine['tokens_per_s']:8.0f} tok/s  hf-per-request {single['tokens_per_s']:7.0f}"
                    f"  hf-batch {ceiling['tokens_per_s']:7.0f}  (load {before} -> {load()})",
                    flush=True,
                )
            row = {
                "agents": n,
                **{
                    key: statistics.median(r[key]["tokens_per_s"] for r in reps)
                    for key in ("ours", "hf_per_request", "hf_batch")
                },
                "speedup_vs_per_request": statistics.median(
                    r["ours"]["tokens_per_s"] / r["hf_per_request"]["tokens_per_s"] for r in reps
                ),
                "fraction_of_batch": statistics.median(
                    r["ours"]["tokens_per_s"] / r["hf_batch"]["tokens_per_s"] for r in reps
                ),
                "repetitions": reps,
            }
            rows.append(row)
            print(
                f"N={n:3d}  median: ours {row['ours']:.0f}, hf-per-request {row['hf_per_request']:.0f}, hf-batch "
                f"{row['hf_batch']:.0f} tok/s; ratios (median of per-repetition ratios): "
                f"{row['speedup_vs_per_request']:.1f}x per-request, {row['fraction_of_batch']:.2f}x batch",
                flush=True,
            )
        multi = []
        if args.multi_turn:
            for n in args.agents:
                on = asyncio.run(ours(policy, n, 3, args.max_tokens, args.threads, True, True, chat))
                off = asyncio.run(ours(policy, n, 3, args.max_tokens, args.threads, False, True, chat))
                multi.append({"agents": n, "prefix_cache": on, "no_prefix_cache": off, "load": load()})
                print(
                    f"multi-turn N={n:3d}  prefix cache {on['tokens_per_s']:8.0f} tok/s "
                    f"(prefilled {on['prefill_tokens']:.0f}, reused {on['prefix_cache_hit_tokens']:.0f})  "
                    f"without {off['tokens_per_s']:8.0f} tok/s (prefilled {off['prefill_tokens']:.0f})",
                    flush=True,
                )
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}, torch {torch.__version__}",
        "cpu": _cpu_name(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "parameters": params,
        "rows": rows,
        "multi_turn": multi,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "?"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
