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
import re
import shutil
import socket
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENVS = HERE / ".venvs"
OUT = HERE / "_out"
OUR_PYTHON = REPO / ".venv" / "bin" / "python"
OUR_CLI = REPO / ".venv" / "bin" / "agentscope"
BASE_PYTHON = shutil.which("python3.11") or sys.executable
FORBIDDEN = ("torch", "nvidia", "cuda", "triton", "tensorflow", "jax", "jaxlib")
_NETNS_MARK = "SERVE_BENCH_IN_NETNS"

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
    Server("ours_uvloop", "AgentScope (ours), tracing off, + uvloop/httptools", "chat"),
    Server("runtime", "agentscope-runtime 1.1.6.post2 (AgentScope 1.0.21 agent)", "responses"),
]


def log(msg: str) -> None:
    print(f"[serve] {msg}", file=sys.stderr, flush=True)


def _quiet(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        log(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def ensure_venv(name: str, reinstall: bool) -> dict[str, Any]:
    """Create (or reuse) the venv ``name``; return what was installed."""
    packages = list(VENV_PACKAGES[name])
    path = VENVS / name
    spec_file = path / "serve_spec.json"
    if not reinstall and spec_file.exists():
        info = json.loads(spec_file.read_text())
        if info.get("packages") == packages and not venv_missing(path, info["installed"]):
            log(f"venv {name}: reusing")
            return info
    if os.environ.get(_NETNS_MARK):
        raise SystemExit(f"venv {name} needs installing, which cannot happen inside the network namespace")
    shutil.rmtree(path, ignore_errors=True)
    log(f"venv {name}: creating with {BASE_PYTHON}")
    subprocess.run([BASE_PYTHON, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    report = path / "dry-run-report.json"
    _quiet([*pip, "install", "--dry-run", "--report", str(report), *packages])
    planned = sorted(
        f"{i['metadata']['name']}=={i['metadata']['version']}"
        for i in json.loads(report.read_text())["install"]
    )
    bad = [p for p in planned if p.split("==")[0].lower().startswith(FORBIDDEN)]
    if bad:
        raise SystemExit(f"{name}: refusing to install heavy packages {bad}")
    log(f"venv {name}: installing {len(planned)} packages (dry run clean: no torch/CUDA)")
    _quiet([*pip, "install", *packages])
    info = {"packages": packages, "python": BASE_PYTHON, "installed": planned, "n_packages": len(planned)}
    spec_file.write_text(json.dumps(info, indent=2))
    return info


def venv_missing(path: Path, planned: list[str]) -> list[str]:
    code = (
        "import json,sys,importlib.metadata as m\n"
        "bad=[]\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    n,v=p.split('==')\n"
        "    try: ok=m.version(n)==v\n"
        "    except m.PackageNotFoundError: ok=False\n"
        "    bad+=[] if ok else [p]\n"
        "print(json.dumps(bad))"
    )
    python = path / "bin" / "python"
    if not python.exists():
        return ["<no python>"]
    proc = subprocess.run([str(python), "-c", code, json.dumps(planned)], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else ["<venv python fails>"]


def site_packages(name: str) -> Path:
    return next((VENVS / name / "lib").glob("python*/site-packages"))


def reexec_in_netns(mode: str) -> None:
    """Run this script again inside a new network namespace that has only loopback (needs ``unshare -n``)."""
    if mode == "off" or os.environ.get(_NETNS_MARK):
        return
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare and ip and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        argv = [a for a in sys.argv[1:] if a != "--reinstall"]
        cmd = [
            unshare,
            "-n",
            "sh",
            "-c",
            f'{ip} link set lo up && exec "$@"',
            "sh",
            sys.executable,
            __file__,
            *argv,
        ]
        log("re-running inside a fresh network namespace (loopback only)")
        sys.stdout.flush()
        os.execve(unshare, cmd, {**os.environ, _NETNS_MARK: "1"})
    if mode == "on":
        raise SystemExit(
            "--netns on: cannot create a network namespace (unshare -n needs root or user namespaces)"
        )
    log("WARNING: no network namespace available; running without network isolation")


def network_isolated() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("192.0.2.1", 9))  # RFC 5737 TEST-NET-1; in a loopback-only netns: ENETUNREACH at once
        except OSError as exc:
            return "unreachable" in str(exc).lower() or getattr(exc, "errno", 0) == 101
        return False


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def pin_ours(rev: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Snapshot ``agentscope/`` at ``rev`` into ``_out/ours-src`` (others commit while this runs)."""
    if rev == "worktree":
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "agentscope"))
        return {
            "source": "live working tree",
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": dirty,
        }, {}
    commit = _git("rev-parse", "--short", rev)
    dest = OUT / "ours-src"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "agentscope"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return {"source": f"snapshot of agentscope/ at {commit} (git archive)", "commit": commit}, {
        "PYTHONPATH": str(dest)
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


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


RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## serve"


def record(section_body: str) -> None:
    """Replace (or append) the ``## serve`` section of benchmarks/RESULTS.md, leaving the others alone."""
    text = RESULTS_MD.read_text()
    block = f"{SECTION}\n\n{section_body.rstrip()}\n"
    match = re.search(rf"^{re.escape(SECTION)}\s*$", text, flags=re.M)
    if match:
        nxt = re.search(r"^## ", text[match.end() :], flags=re.M)
        end = match.end() + nxt.start() if nxt else len(text)
        text = text[: match.start()] + block + ("\n" + text[end:] if nxt else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS_MD.write_text(text)
    log(f"recorded in {RESULTS_MD}")


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


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cores": os.cpu_count()}
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            info["cpu"] = line.split(":", 1)[1].strip()
    return info


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
