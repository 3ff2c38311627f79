"""MCP tool calls per second: our ``MCPClient`` side by side with the raw ``mcp`` SDK ``Client``.

Transports: stdio (``echo_stdio_server.py``, a dependency-free server that costs next to nothing per call, so the
client is what is measured) and streamable HTTP (``echo_http_server.py``, the SDK's ``MCPServer`` under uvicorn
on 127.0.0.1, shared by every client). Callers: 1 and 50 concurrent tasks sharing one client. Each round opens
a fresh client of each kind (over stdio each with its own server process), warms them up, then lets them take
turns in short bursts (``--slices`` per client, order rotating) for ``--seconds`` each, counting the ``echo``
calls that complete and the client process's CPU time. Rows:

- ``raw SDK``: ``mcp.Client`` (``async with Client(...)``, ``await client.call_tool(...)``);
- ``ours``: ``agentscope.tools.MCPClient.call_tool`` (which returns a converted ``ToolResponse``);
- ``ours via Toolkit``: the tool registered with ``Toolkit.register_mcp`` and called with ``Toolkit.call``, as an
  agent calls it (argument handling, progress streaming, result conversion to a ``ToolResultBlock``).

The interleaving spreads a shared machine's slow phases over all clients alike; the table gives the median over
rounds, and the ratios are medians of per-round ratios. ``--record`` writes the table into ``benchmarks/RESULTS.md`` under ``## mcp``
(re-reading the file first and replacing only that section).

    .venv/bin/python benchmarks/mcp/run.py                 # 3 rounds x 6 s per client and cell (~5 min)
    .venv/bin/python benchmarks/mcp/run.py --rounds 5 --record
    .venv/bin/python benchmarks/mcp/run.py --from-json benchmarks/mcp/_out/latest.json --record
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STDIO_SERVER = HERE / "echo_stdio_server.py"
HTTP_SERVER = HERE / "echo_http_server.py"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CLIENTS = ("raw SDK", "ours", "ours via Toolkit")
ARGS = {"message": "hello"}

Call = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------------- the clients


@asynccontextmanager
async def raw_sdk(target: str) -> Any:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    server: Any = (
        target if target.startswith("http") else StdioServerParameters(command=sys.executable, args=[target])
    )
    async with Client(server) as client:

        async def call() -> None:
            result = await client.call_tool("echo", ARGS)
            assert not result.is_error

        yield call


@asynccontextmanager
async def ours(target: str) -> Any:
    from agentscope.tools import MCPClient, StdioServer

    server: Any = target if target.startswith("http") else StdioServer(sys.executable, [target])
    async with MCPClient(server) as client:

        async def call() -> None:
            result = await client.call_tool("echo", ARGS)
            assert not result.is_error, result

        yield call


@asynccontextmanager
async def ours_via_toolkit(target: str) -> Any:
    from agentscope.message import ToolUseBlock
    from agentscope.tools import MCPClient, StdioServer, Toolkit

    server: Any = target if target.startswith("http") else StdioServer(sys.executable, [target])
    async with MCPClient(server) as client:
        toolkit = Toolkit()
        await toolkit.register_mcp(client)
        use = ToolUseBlock(id="call-1", name="echo", input=ARGS)

        async def call() -> None:
            result = await toolkit.call(use)
            assert not result.is_error, result

        yield call


FACTORIES: dict[str, Callable[[str], AbstractAsyncContextManager[Call]]] = {
    "raw SDK": raw_sdk,
    "ours": ours,
    "ours via Toolkit": ours_via_toolkit,
}


async def burst(call: Call, concurrency: int, seconds: float) -> tuple[int, float, float]:
    """(calls completed, wall seconds, client CPU seconds) for ``concurrency`` tasks calling for ``seconds``."""
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await call()
            count += 1

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count, time.perf_counter() - start, time.process_time() - cpu_start


async def measure_round(
    target: str, concurrency: int, seconds: float, slices: int
) -> dict[str, tuple[float, float]]:
    """Each client's (calls per second, client CPU microseconds per call) over one round.

    The three clients are open at once and take turns in short bursts (``slices`` per client, the order rotating),
    so that the load of a shared machine, which changes from second to second, falls on all of them alike. The
    CPU time is this process's (the client's; the server is another process): a steadier measure of what a client
    costs than its call rate, which depends on the scheduler.
    """
    async with AsyncExitStack() as stack:
        calls = {name: await stack.enter_async_context(FACTORIES[name](target)) for name in CLIENTS}
        for call in calls.values():
            for _ in range(20):  # warm-up: the SDK lists tools before the first call of each, caches warm up
                await call()
        totals = {name: [0, 0.0, 0.0] for name in CLIENTS}
        for i in range(slices):
            for name in CLIENTS[i % len(CLIENTS) :] + CLIENTS[: i % len(CLIENTS)]:
                count, wall, cpu = await burst(calls[name], concurrency, seconds / slices)
                totals[name][0] += count
                totals[name][1] += wall
                totals[name][2] += cpu
    return {name: (count / wall, cpu / count * 1e6) for name, (count, wall, cpu) in totals.items()}


# ---------------------------------------------------------------------- orchestration


def start_http_server() -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, str(HTTP_SERVER)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    if not line.startswith("LISTENING "):
        process.kill()
        raise SystemExit(f"the HTTP server did not start: {line}{process.stderr.read().decode()}")
    return process, f"http://127.0.0.1:{int(line.split()[1])}/mcp"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import mcp  # noqa: F401 (imported once up front, not inside the first measurement)

    results: dict[str, dict[int, dict[str, list[float]]]] = {}
    cpu: dict[str, dict[int, dict[str, list[float]]]] = {}
    load_before = uptime()
    http_process, url = start_http_server() if "http" in args.transports else (None, "")
    try:
        for round_no in range(args.rounds):
            for transport in args.transports:
                target = url if transport == "http" else str(STDIO_SERVER)
                for concurrency in args.concurrency:
                    measured = asyncio.run(measure_round(target, concurrency, args.seconds, args.slices))
                    for name, (value, cpu_us) in measured.items():
                        results.setdefault(transport, {}).setdefault(concurrency, {}).setdefault(
                            name, []
                        ).append(value)
                        cpu.setdefault(transport, {}).setdefault(concurrency, {}).setdefault(name, []).append(
                            cpu_us
                        )
                        print(
                            f"round {round_no + 1} {transport:5} x{concurrency:<3} {name:17} {value:8.0f} calls/s "
                            f"{cpu_us:7.0f} us client CPU/call",
                            flush=True,
                        )
    finally:
        if http_process is not None:
            http_process.terminate()
            http_process.wait(10)
            if http_process.stderr is not None:
                http_process.stderr.close()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "mcp_version": _version("mcp"),
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "command": " ".join(["python", "benchmarks/mcp/run.py", *sys.argv[1:]]),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "slices": args.slices,
        "results": results,
        "cpu_us_per_call": cpu,
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def paired_ratio(by_client: dict[str, list[float]], name: str) -> float:
    """Median over rounds of ``name``'s rate divided by the raw SDK's in the same round (measured minutes apart at
    most, so a shared machine's slow phases cancel out better than in a ratio of medians)."""
    return statistics.median(a / b for a, b in zip(by_client[name], by_client["raw SDK"], strict=True))


def table(report: dict[str, Any]) -> str:
    lines = [
        "| transport | callers | raw SDK calls/s | ours calls/s | **ours / raw** | ours via Toolkit calls/s | "
        "Toolkit / raw | client CPU µs/call: raw / ours / Toolkit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for transport, by_concurrency in report["results"].items():
        for concurrency, by_client in by_concurrency.items():
            med = {name: statistics.median(values) for name, values in by_client.items()}
            spread = {name: f"{min(v):.0f}-{max(v):.0f}" for name, v in by_client.items()}
            cpu = {
                n: statistics.median(v) for n, v in report["cpu_us_per_call"][transport][concurrency].items()
            }
            lines.append(
                f"| {transport} | {concurrency} | {med['raw SDK']:.0f} ({spread['raw SDK']}) | {med['ours']:.0f} "
                f"({spread['ours']}) | **{paired_ratio(by_client, 'ours'):.2f}x** | {med['ours via Toolkit']:.0f} "
                f"({spread['ours via Toolkit']}) | {paired_ratio(by_client, 'ours via Toolkit'):.2f}x | "
                f"{cpu['raw SDK']:.0f} / {cpu['ours']:.0f} / {cpu['ours via Toolkit']:.0f} |"
            )
    return "\n".join(lines)


def section(report: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## mcp",
            "",
            "MCP tool calls per second through our `MCPClient` and through the raw `mcp` SDK `Client`, one client "
            "shared by 1 or 50 concurrent callers (`benchmarks/mcp/`; stdio: a dependency-free echo server, so the "
            "client is what is measured; HTTP: the SDK's `MCPServer` under uvicorn on 127.0.0.1). Median of "
            f"{report['rounds']} rounds (min-max in brackets); in each, the three clients take turns in "
            f"{report.get('slices', 1)} bursts for {report['seconds']:g} s each, so load changes on the shared "
            "machine hit them alike; the ratios are medians of per-round ratios. Client CPU per call is the client "
            "process's CPU time over the calls it completed. Target: ours >= 0.9x raw.",
            "",
            f"- machine: {report['machine']}; mcp {report['mcp_version']}",
            f"- date: {report['date']}",
            f"- command: `{report['command']}`",
            f"- load before: `{report['uptime_before']}`",
            f"- load after: `{report['uptime_after']}`",
            "",
            table(report),
            "",
            "Per-round ours / raw: "
            + "; ".join(
                f"{t} x{c}: "
                + " ".join(
                    f"{a / b:.2f}" for a, b in zip(by_client["ours"], by_client["raw SDK"], strict=True)
                )
                for t, by_c in report["results"].items()
                for c, by_client in by_c.items()
            )
            + ".",
            *(line for note in report.get("notes", []) for line in ("", note)),
            "",
        ]
    )


def record(report: dict[str, Any]) -> None:
    """Replace (or append) the ``## mcp`` section of RESULTS.md, re-reading the file right before writing."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## mcp"), None)
    new = section(report).rstrip("\n").splitlines()
    if start is None:
        lines = [*lines, "", *new] if lines and lines[-1].strip() else [*lines, *new]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = [*lines[:start], *new, *([""] if end < len(lines) else []), *lines[end:]]
    RESULTS.write_text("\n".join(lines).rstrip("\n") + "\n")
    print(f"recorded in {RESULTS.relative_to(ROOT)}")


def load(path: Path) -> dict[str, Any]:
    """A saved report (``_out/latest.json``), with the concurrency keys back to integers."""
    report: dict[str, Any] = json.loads(path.read_text())
    for key in ("results", "cpu_us_per_call"):
        report[key] = {t: {int(c): v for c, v in by_c.items()} for t, by_c in report[key].items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--seconds", type=float, default=6.0, help="measured seconds per client, cell and round"
    )
    parser.add_argument(
        "--slices", type=int, default=6, help="bursts per client, cell and round (interleaved)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--transports", nargs="+", choices=["stdio", "http"], default=["stdio", "http"])
    parser.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--from-json", type=Path, help="measure nothing: show (and --record) a saved report")
    args = parser.parse_args()
    if args.from_json is not None:
        report = load(args.from_json)
    else:
        report = run(args)
        out = HERE / "_out"
        out.mkdir(exist_ok=True)
        (out / "latest.json").write_text(json.dumps(report, indent=2))
    print()
    print(section(report))
    if args.record:
        record(report)


if __name__ == "__main__":
    main()
