"""Load generator of the serve benchmark (the project's ``.venv``: ``httpx2``).

``--clients`` coroutines, each sending one non-streaming request at a time, back to back, for ``--warmup`` seconds
(not counted) and then ``--duration`` seconds. A request counts when it completes inside the timed window; requests
still in flight at the end are awaited and checked (an error then still counts) but not timed. Every answer is
checked: HTTP 200 and the agent's final text, and the one ``add`` tool round visible in the answer (our
``agentscope.steps``; for the peer's Responses API only the final text, which its scripted model gives only after
the tool's result). Anything else is an error, counted by kind with a few samples.

    .venv/bin/python benchmarks/serve/loadgen.py --url http://127.0.0.1:8000 --protocol chat --clients 50 \\
        --duration 60 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from collections import Counter
from typing import Any

import httpx2

FINAL_TEXT = "The answer is 3."
PROMPT = "What is 1 + 2? Use the add tool."

PATHS = {"chat": "/v1/chat/completions", "responses": "/compatible-mode/v1/responses"}


def body(protocol: str) -> dict[str, Any]:
    if protocol == "chat":
        return {"model": "agent", "messages": [{"role": "user", "content": PROMPT}]}
    return {"model": "agent", "input": [{"role": "user", "content": PROMPT}], "stream": False}


def check(protocol: str, data: Any) -> str | None:
    """None when ``data`` is a correct answer (the final text after one ``add`` round), else what is wrong."""
    if protocol == "chat":
        message = data["choices"][0]["message"]
        if message.get("content") != FINAL_TEXT:
            return f"content {message.get('content')!r}"
        steps = message.get("agentscope", {}).get("steps", [])
        kinds = [(s["type"], s["name"]) for s in steps]
        if kinds != [("tool_call", "add"), ("tool_result", "add")] or steps[1].get("output") != "3":
            return f"steps {kinds}"
        return None
    # the runtime answers with its last event, {"type": "response.completed", "response": {...}}; its output holds
    # the final message only (no function_call items), so the tool round shows only through the final text, which
    # the scripted model gives only after it has seen the tool's result
    response = data.get("response", data)
    if response.get("status") != "completed":
        return f"status {response.get('status')!r} {response.get('error')}"
    texts = [
        part.get("text")
        for item in response.get("output", [])
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    ]
    if not texts or texts[-1] != FINAL_TEXT:
        return f"text {texts}"
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url.rstrip("/") + PATHS[args.protocol]
    payload = json.dumps(body(args.protocol)).encode()
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    samples: list[str] = []
    late = 0
    limits = httpx2.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx2.AsyncClient(limits=limits, timeout=args.timeout) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + args.warmup
        end = start + args.duration

        async def one_client() -> None:
            nonlocal late
            while (t0 := loop.time()) < end:
                problem: str | None
                try:
                    response = await client.post(url, content=payload, headers=headers)
                    if response.status_code != 200:
                        problem = f"HTTP {response.status_code}: {response.text[:200]}"
                    else:
                        problem = check(args.protocol, response.json())
                except Exception as exc:  # every failure is counted, none stops the run
                    problem = f"{type(exc).__name__}: {exc}"
                t1 = loop.time()
                if problem is not None:
                    kind = problem.split(":", 1)[0][:80]
                    errors[kind] += 1
                    if len(samples) < 5:
                        samples.append(problem[:300])
                elif t0 >= start and t1 <= end:
                    latencies.append(t1 - t0)
                elif t0 >= start:
                    late += 1

        cpu0 = _cpu_s()
        await asyncio.gather(*(one_client() for _ in range(args.clients)))
        cpu = _cpu_s() - cpu0
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "protocol": args.protocol,
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / args.duration,
        "late": late,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "error_samples": samples,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else None,
        "mean_ms": sum(latencies) / len(latencies) * 1000 if latencies else None,
        "loadgen_cpu_s": cpu,
    }


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--protocol", choices=sorted(PATHS), default="chat")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="timed seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the timed window")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    result = asyncio.run(run(args))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"{result['requests_per_s']:.1f} req/s, p50 {result['p50_ms'] or 0:.1f} ms, "
        f"p99 {result['p99_ms'] or 0:.1f} ms, errors {result['errors']}"
    )


if __name__ == "__main__":
    main()
