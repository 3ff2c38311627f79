"""Shared harness for the agent_overhead runners (standard library only: every framework's venv imports it).

A runner supplies ``run_one(index) -> AgentResult`` for its framework; :func:`main` parses the common arguments,
runs a small warm-up, then the timed run (``n`` agents, at most ``concurrency`` at once), checks every agent, and
writes one JSON result.

Correctness is checked per agent: the run must return the expected final answer, and the ``add`` tool must have
run exactly ``k`` times for that agent. Tool calls are counted through a context variable that holds a per-agent
counter (context variables follow tasks and ``to_thread``/executor hops), plus a global counter under a lock as a
cross-check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import gc
import json
import os
import resource
import sys
import threading
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

FINAL_TEXT = "The answer is 3."
"""What the scripted model and the HTTP server answer once the agent has made ``k`` tool calls."""

SYSTEM_PROMPT = "You are a calculator agent. Use the add tool."
USER_PROMPT = "Add 1 and 2, several times."

_agent_counter: contextvars.ContextVar[list[int]] = contextvars.ContextVar("agent_tool_counter")
_global_lock = threading.Lock()
_global_tool_calls = 0
_model_calls = 0


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    global _global_tool_calls
    # LookupError: the framework ran the tool outside the agent's context; then it is counted globally only
    with contextlib.suppress(LookupError):
        _agent_counter.get()[0] += 1
    with _global_lock:
        _global_tool_calls += 1
    return a + b


def count_model_call() -> None:
    """Called by in-process scripted models once per model call."""
    global _model_calls
    _model_calls += 1


def decide(tool_results: int, k: int) -> bool:
    """True when the scripted model should ask for another tool call."""
    return tool_results < k


@dataclass
class AgentResult:
    """What one agent run produced."""

    final_text: str


@dataclass
class Args:
    framework: str
    mode: str
    n: int
    k: int
    concurrency: int
    warmup: int
    base_url: str
    out: str
    extra: dict[str, Any] = field(default_factory=dict[str, Any])


def parse_args(framework: str) -> Args:
    p = argparse.ArgumentParser(description=f"agent_overhead runner: {framework}")
    p.add_argument("--mode", choices=["inproc", "http"], required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50, help="agents in the warm-up run (0: none)")
    p.add_argument("--base-url", default="", help="OpenAI-compatible base URL ending in /v1 (http mode)")
    p.add_argument("--out", required=True, help="where to write the JSON result")
    a = p.parse_args()
    if a.mode == "http":
        assert a.base_url.startswith(("http://127.0.0.1:", "http://localhost:")), "loopback servers only"
    return Args(framework, a.mode, a.n, a.k, a.concurrency, a.warmup, a.base_url, a.out)


def rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _server_stats(base_url: str, reset: bool = False) -> dict[str, Any]:
    root = base_url.rsplit("/v1", 1)[0]
    req = urllib.request.Request(
        root + ("/stats/reset" if reset else "/stats"), method="POST" if reset else "GET"
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # loopback only (checked in parse_args)
        return json.loads(r.read())


async def _run_batch(
    run_one: Callable[[int], Awaitable[AgentResult]], n: int, k: int, concurrency: int
) -> dict[str, Any]:
    """Run ``n`` agents with ``concurrency`` workers; return timing and checked outcomes."""
    global _global_tool_calls, _model_calls
    with _global_lock:
        _global_tool_calls = 0
    _model_calls = 0
    next_index = 0
    ok = 0
    wrong: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    first_traceback: list[str] = []
    per_agent_tool_calls: Counter[int] = Counter()

    async def one(i: int) -> None:
        nonlocal ok
        counter = [0]
        token = _agent_counter.set(counter)
        try:
            result = await run_one(i)
        except Exception as exc:
            key = f"{type(exc).__name__}: {str(exc)[:300]}"
            errors[key] += 1
            if not first_traceback:
                first_traceback.append(traceback.format_exc()[-4000:])
            return
        finally:
            _agent_counter.reset(token)
        per_agent_tool_calls[counter[0]] += 1
        if counter[0] != k:
            wrong[f"tool calls {counter[0]} != {k}"] += 1
        elif FINAL_TEXT not in result.final_text:
            wrong[f"final answer {result.final_text[:80]!r}"] += 1
        else:
            ok += 1

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await one(i)

    cpu0 = cpu_s()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    elapsed = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "agents_ok": ok,
        "agents_wrong": sum(wrong.values()),
        "agents_error": sum(errors.values()),
        "wrong_samples": dict(wrong.most_common(5)),
        "error_samples": dict(errors.most_common(5)),
        "first_traceback": first_traceback[0] if first_traceback else None,
        "tool_calls_total": _global_tool_calls,
        "tool_calls_per_agent_histogram": {str(c): v for c, v in sorted(per_agent_tool_calls.items())},
        "model_calls_inproc": _model_calls,
    }


def main(
    framework: str,
    setup: Callable[
        [Args], Awaitable[tuple[Callable[[int], Awaitable[AgentResult]], Callable[[], Awaitable[None]]]]
    ],
    *,
    version: str,
    import_s: float,
    notes: str = "",
) -> None:
    """Entry point of a runner: ``setup(args)`` returns ``(run_one, aclose)``."""
    args = parse_args(framework)
    rss_after_import = rss_mb()
    result: dict[str, Any] = {
        "framework": framework,
        "version": version,
        "mode": args.mode,
        "n": args.n,
        "k": args.k,
        "concurrency": args.concurrency,
        "python": sys.version.split()[0],
        "import_s": import_s,
        "rss_after_import_mb": rss_after_import,
        "notes": notes,
    }

    async def go() -> None:
        run_one, aclose = await setup(args)
        try:
            if args.warmup:
                warm = await _run_batch(run_one, args.warmup, args.k, min(args.concurrency, args.warmup))
                result["warmup"] = {
                    k: warm[k] for k in ("elapsed_s", "agents_ok", "agents_error", "error_samples")
                }
                if warm["first_traceback"]:
                    result["warmup"]["first_traceback"] = warm["first_traceback"]
            gc.collect()
            result["rss_before_timed_mb"] = rss_mb()
            if args.mode == "http":
                _server_stats(args.base_url, reset=True)
            timed = await _run_batch(run_one, args.n, args.k, args.concurrency)
            result.update(timed)
            if args.mode == "http":
                result["model_calls_server"] = _server_stats(args.base_url)["chat_requests"]
        finally:
            await aclose()

    try:
        asyncio.run(go())
    except Exception:
        result["fatal"] = traceback.format_exc()[-4000:]
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_end_mb"] = rss_mb()
    expected_calls = args.n * (args.k + 1)
    calls = result.get("model_calls_server", result.get("model_calls_inproc"))
    result["model_calls"] = calls
    result["model_calls_expected"] = expected_calls
    if "elapsed_s" in result:
        result["steps_per_s"] = expected_calls / result["elapsed_s"]
        result["agents_per_s"] = args.n / result["elapsed_s"]
        result["cpu_ms_per_step"] = 1000 * result["cpu_s"] / expected_calls
    result["valid"] = (
        "fatal" not in result
        and result.get("agents_ok") == args.n
        and result.get("tool_calls_total") == args.n * args.k
        and calls == expected_calls
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        json.dumps({k: result.get(k) for k in ("framework", "mode", "valid", "steps_per_s", "peak_rss_mb")})
    )


def timed_import(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` (which does the framework's imports) and return its result and the seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
