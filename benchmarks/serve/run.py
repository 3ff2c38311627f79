"""Serve benchmark orchestrator: requests/s and p50/p99 latency of an agent served over HTTP.

    .venv/bin/python benchmarks/serve/run.py [--clients 1,50,200 --duration 60 --repeat 1] [--record]

1. Creates the peer's venv under ``benchmarks/serve/.venvs/<name>`` (``python3.11 -m venv`` + ``pip install``)
   after a ``pip install --dry-run --report`` that refuses torch/CUDA-like packages; a venv whose spec matches and
   whose planned packages are all installed is reused.
2. Re-executes itself in a fresh network namespace (``unshare -n``, loopback only) when it can.
3. Starts every server once, each on 127.0.0.1 with a free port: ``agentscope serve benchmarks/serve/agent.py``
   (ours, a snapshot of ``agentscope/`` at ``--ours-rev``) with tracing off and with ``--trace --trace-store``, and
   the peer (``peer_runtime.py``: agentscope-runtime's ``AgentApp`` serving an AgentScope 1.0 ``ReActAgent``).
4. For each round, for each client count, for each server: runs ``loadgen.py`` (its own process) against that
   server alone, recording the load average before it and the server's CPU seconds (process tree) during it.
5. Prints a markdown table (median and min-max over rounds), writes ``_out/latest.json``, ``_out/latest.md`` and
   ``_out/results-<timestamp>.json``; ``--record`` writes the table into ``benchmarks/RESULTS.md`` under
   ``## serve`` (only that section is replaced).

Nothing here talks to any address but 127.0.0.1 (pip talks to the package index while installing, before step 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Harness, free_port, loadavg, machine, network_isolated, uptime

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENVS = HERE / ".venvs"
OUT = HERE / "_out"

H = Harness("serve", HERE)
log, site_packages, pin_ours = H.log, H.site_packages, H.pin_ours


def ensure_venv(name: str, reinstall: bool) -> dict[str, Any]:
    """Create (or reuse) the venv ``name`` of :data:`VENV_PACKAGES`; return what was installed."""
    return H.ensure_venv(name, VENV_PACKAGES[name], reinstall)


def reexec_in_netns(mode: str) -> None:
    H.reexec_in_netns(mode, Path(__file__).resolve())


def record(section_body: str) -> None:
    H.record(SECTION, section_body)


OUR_PYTHON = REPO / ".venv" / "bin" / "python"
OUR_CLI = REPO / ".venv" / "bin" / "agentscope"

VENV_PACKAGES = {
    # agentscope-runtime alone resolves agentscope 2.0.11, whose pydantic Msg its agentscope adapter cannot read
    # (it calls block.get(...) on dict blocks): the runtime's documented agents are AgentScope 1.0 agents.
    # agentscope 1.0.21 imports mcp 1.x's streamablehttp_client (gone in mcp 2), hence mcp<2; and, undeclared,
    # sqlalchemy's asyncio module (greenlet) and tqdm at import.
    "agentscope_runtime": (
        "agentscope-runtime==1.1.6.post2",
        "agentscope==1.0.21",
        "mcp<2",
        "greenlet",
        "tqdm",
    ),
    # what `uvicorn[standard]` adds; our .venv has neither, so uvicorn runs the asyncio loop and h11
    "uvicorn_standard": ("uvloop", "httptools"),
}


@dataclass(frozen=True)
class Server:
    key: str
    label: str
    protocol: str
    """``chat`` (OpenAI Chat Completions) or ``responses`` (OpenAI Responses API)."""


SERVERS = [
    Server("ours", "AgentScope (ours), tracing off", "chat"),
    Server("ours_trace", "AgentScope (ours), tracing on", "chat"),
    Server("ours_trace_process", "AgentScope (ours), tracing on, writer process", "chat"),
    Server("ours_trace_sampled", "AgentScope (ours), tracing on, 5 % of requests recorded", "chat"),
    Server("ours_uvloop", "AgentScope (ours), tracing off, + uvloop/httptools", "chat"),
    Server("runtime", "agentscope-runtime 1.1.6.post2 (AgentScope 1.0.21 agent)", "responses"),
]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live descendants."""
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def start_server(s: Server, ours_env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = dict(os.environ)
    if s.key.startswith("ours"):
        cmd = [
            str(OUR_CLI),
            "serve",
            str(HERE / "agent.py"),
            "--port",
            str(port),
            "--sessions-db",
            str(tmp / f"{s.key}-sessions.db"),
        ]
        if s.key == "ours_trace":
            cmd += ["--trace", "--trace-store", str(tmp / "traces.db")]
        if s.key == "ours_trace_sampled":
            cmd += ["--trace", "--trace-sample-rate", "0.05", "--trace-store", str(tmp / "traces-sampled.db")]
        if s.key == "ours_trace_process":
            cmd += ["--trace", "--trace-writer", "process", "--trace-store", str(tmp / "traces-process.db")]
        paths = [ours_env.get("PYTHONPATH", "")]
        if s.key == "ours_uvloop":
            paths.append(str(site_packages("uvicorn_standard")))  # after ours: only adds uvloop and httptools
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        ready = "/healthz"
    else:
        cmd = [
            str(VENVS / "agentscope_runtime" / "bin" / "python"),
            str(HERE / "peer_runtime.py"),
            "--port",
            str(port),
        ]
        ready = "/health"
    logfile = OUT / f"server-{s.key}.log"
    proc = subprocess.Popen(cmd, env=env, stdout=logfile.open("wb"), stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + ready, timeout=1):
                return proc, url, logfile
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server {s.key} exited at start-up; see {logfile}") from None
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server {s.key} did not start; see {logfile}")


def run_cell(s: Server, url: str, pid: int, clients: int, rnd: int, a: argparse.Namespace) -> dict[str, Any]:
    out = OUT / f"{s.key}-c{clients}-r{rnd}.json"
    out.unlink(missing_ok=True)
    cmd = [
        str(OUR_PYTHON), str(HERE / "loadgen.py"), "--url", url, "--protocol", s.protocol,
        "--clients", str(clients), "--duration", str(a.duration), "--warmup", str(a.warmup), "--out", str(out),
    ]  # fmt: skip
    load = loadavg()
    log(f"round {rnd}: {s.label}, {clients} clients (load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    cpu0 = tree_cpu_s(pid)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + a.warmup + 300)
    wall = time.perf_counter() - t0
    cpu = tree_cpu_s(pid) - cpu0
    res: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"errors": None}
    res.update(
        key=s.key, label=s.label, clients=clients, round=rnd, load_avg=load, returncode=proc.returncode
    )
    res["server_cpu_s"] = cpu
    res["server_cpu_share"] = cpu / wall  # of one core, over warm-up + timed window + drain
    res["server_cpu_ms_per_req"] = (
        cpu * 1000 / max(1, res.get("requests", 0) + res.get("late", 0)) if out.exists() else None
    )
    if proc.returncode != 0 or not out.exists():
        res["stderr_tail"] = proc.stderr[-3000:]
        log(f"  loadgen FAILED rc={proc.returncode}\n{proc.stderr[-1500:]}")
    else:
        log(f"  {proc.stdout.strip()}; server CPU {res['server_cpu_share']:.2f} cores")
    return res


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["key"], r["clients"]), []).append(r)
    rows = []
    for (key, clients), rs in groups.items():
        good = [r for r in rs if r.get("requests_per_s") is not None]

        def med(field: str, rs: list[dict[str, Any]] = good) -> float | None:
            vals = [r[field] for r in rs if r.get(field) is not None]
            return statistics.median(vals) if vals else None

        rates = [r["requests_per_s"] for r in good]
        rows.append({
            "key": key,
            "label": rs[0]["label"],
            "clients": clients,
            "runs": len(rs),
            "errors": sum(r["errors"] for r in good) if len(good) == len(rs) else None,
            "requests_per_s": med("requests_per_s"),
            "requests_per_s_min": min(rates) if rates else None,
            "requests_per_s_max": max(rates) if rates else None,
            "p50_ms": med("p50_ms"),
            "p99_ms": med("p99_ms"),
            "server_cpu_share": med("server_cpu_share"),
            "server_cpu_ms_per_req": med("server_cpu_ms_per_req"),
            "loadgen_cpu_ms_per_req": statistics.median(
                r["loadgen_cpu_s"] * 1000 / max(1, r["requests"] + r["late"]) for r in good
            ) if good else None,
            "load_1m": [r["load_avg"][0] for r in rs],
        })  # fmt: skip
    return rows


def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(rows: list[dict[str, Any]], servers: list[Server]) -> str:
    lines = [
        "| clients | server | req/s median (min-max) | p50 ms | p99 ms | errors | server CPU (cores) "
        "| server CPU ms/req | loadgen CPU ms/req | load 1m at each run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    order = {s.key: i for i, s in enumerate(servers)}
    for r in sorted(rows, key=lambda r: (r["clients"], order.get(r["key"], 99))):
        rate = f"{fmt(r['requests_per_s'])}"
        if r["runs"] > 1:
            rate += f" ({fmt(r['requests_per_s_min'])}-{fmt(r['requests_per_s_max'])})"
        lines.append(
            f"| {r['clients']} | {r['label']} | {rate} | {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} | "
            f"{'?' if r['errors'] is None else r['errors']} | {fmt(r['server_cpu_share'], 2)} | "
            f"{fmt(r['server_cpu_ms_per_req'], 2)} | {fmt(r['loadgen_cpu_ms_per_req'], 2)} | "
            f"{', '.join(f'{x:.1f}' for x in r['load_1m'])} |"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdicts(rows))


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    def get(key: str, clients: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["key"] == key and r["clients"] == clients and r["requests_per_s"]), None
        )

    out = []
    ours50 = get("ours", 50)
    if ours50:
        met = ours50["requests_per_s"] >= 300 and (ours50["p99_ms"] or 1e9) <= 100
        out.append(
            f"target at 50 clients (>= 300 req/s, p99 <= 100 ms), tracing off: {fmt(ours50['requests_per_s'])} req/s, "
            f"p99 {fmt(ours50['p99_ms'], 1)} ms: {'met' if met else 'MISSED'}"
        )
    for clients in sorted({r["clients"] for r in rows}):
        ours, peer, traced = get("ours", clients), get("runtime", clients), get("ours_trace", clients)
        if ours and peer:
            out.append(
                f"{clients} clients: ours / agentscope-runtime = {ours['requests_per_s'] / peer['requests_per_s']:.2f}x "
                f"req/s; p99 {fmt(ours['p99_ms'], 1)} vs {fmt(peer['p99_ms'], 1)} ms"
            )
        if ours and traced:
            cost = 1 - traced["requests_per_s"] / ours["requests_per_s"]
            out.append(
                f"{clients} clients: tracing on costs {cost:.0%} of req/s (target <= 10% at 50 clients)"
            )
    errors = sum(r["errors"] or 0 for r in rows)
    unknown = any(r["errors"] is None for r in rows)
    out.append(f"errors over all cells: {errors}{' (some cells failed to report)' if unknown else ''}")
    return out


SECTION = "## serve"


def report(doc: dict[str, Any], rows: list[dict[str, Any]], servers: list[Server]) -> str:
    m, p = doc["machine"], doc["params"]
    return "\n".join([
        f"Run {doc['started_utc']} to {doc['finished_utc']} (UTC). Machine: {m.get('cpu', '?')}, {m['cores']} cores, "
        f"{m['platform']}; {doc['note']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Clients {p['clients']}, {p['duration']} s timed per cell after {p['warmup']} s of warm-up, {p['repeat']} "
        f"round(s) (each round runs every client count on every server, one server at a time); ours: "
        f"{doc['ours']['source']}; network: {doc['network']}.",
        "",
        f"Load: `{doc['uptime_start']}` at the start, `{doc['uptime_end']}` at the end.",
        "",
        table(rows, servers),
        "",
        f"Trace store after the run (tracing-on server, every cell): {fmt(doc['trace_store_mb'], 1)} MB.",
        "",
        "Versions: " + "; ".join(f"{k}: {' '.join(v['packages'])}" for k, v in doc["venvs"].items())
        + f"; Python {doc['python']}.",
    ])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", default="1,50,200", help="comma list of concurrent client counts")
    p.add_argument("--duration", type=float, default=60.0, help="timed seconds per cell")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each timed window")
    p.add_argument("--repeat", type=int, default=1, help="rounds")
    p.add_argument(
        "--only", default="", help="comma list of server keys: " + ",".join(s.key for s in SERVERS)
    )
    p.add_argument("--reinstall", action="store_true", help="recreate the venvs")
    p.add_argument("--netns", choices=["auto", "on", "off"], default="auto")
    p.add_argument(
        "--ours-rev", default="HEAD", help="git revision of our agentscope/ ('worktree': the live tree)"
    )
    p.add_argument(
        "--note", default="the machine was shared with other engineers' test runs.", help="for the report"
    )
    p.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    a = p.parse_args()

    only = {k for k in a.only.split(",") if k}
    servers = [s for s in SERVERS if not only or s.key in only]
    client_counts = [int(c) for c in a.clients.split(",")]
    VENVS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    venvs: dict[str, Any] = {}
    if any(s.key == "runtime" for s in servers):
        venvs["agentscope_runtime"] = ensure_venv("agentscope_runtime", a.reinstall)
    if any(s.key == "ours_uvloop" for s in servers):
        venvs["uvicorn_standard"] = ensure_venv("uvicorn_standard", a.reinstall)

    reexec_in_netns(a.netns)
    isolated = network_isolated()
    if a.netns == "on" and not isolated:
        raise SystemExit("--netns on: a non-loopback address is reachable")
    network = "loopback-only network namespace (unshare -n)" if isolated else "NOT isolated"
    log(f"network: {network}")

    started = datetime.now(UTC)
    uptime_start = uptime()
    ours, ours_env = pin_ours(a.ours_rev)
    log(f"ours: {ours['source']}")
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    procs: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    results: list[dict[str, Any]] = []
    try:
        for s in servers:
            procs[s.key] = start_server(s, ours_env, tmp)
            log(f"{s.label} at {procs[s.key][1]} (pid {procs[s.key][0].pid})")
        for rnd in range(1, a.repeat + 1):
            for clients in client_counts:
                for s in servers:
                    proc, url, _ = procs[s.key]
                    results.append(run_cell(s, url, proc.pid, clients, rnd, a))
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
        for proc, _, _ in procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
    trace_db = tmp / "traces.db"
    trace_mb = trace_db.stat().st_size / 2**20 if trace_db.exists() else None
    shutil.rmtree(tmp, ignore_errors=True)

    rows = aggregate(results)
    doc = {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/serve/run.py", *sys.argv[1:]]),
        "params": {"clients": client_counts, "duration": a.duration, "warmup": a.warmup, "repeat": a.repeat},
        "machine": machine(),
        "python": platform.python_version(),
        "note": a.note,
        "ours": ours,
        "network": network,
        "uptime_start": uptime_start,
        "uptime_end": uptime(),
        "venvs": venvs,
        "trace_store_mb": trace_mb,
        "summary": rows,
        "results": results,
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (OUT / f"results-{stamp}.json").write_text(json.dumps(doc, indent=2))
    (OUT / "latest.json").write_text(json.dumps(doc, indent=2))
    text = report(doc, rows, servers)
    (OUT / "latest.md").write_text(text + "\n")
    print(text)
    if a.record:
        record(text)


if __name__ == "__main__":
    main()
