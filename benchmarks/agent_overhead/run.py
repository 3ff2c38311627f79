"""Agent-overhead benchmark orchestrator.

    .venv/bin/python benchmarks/agent_overhead/run.py [--n 2000 --k 5 --concurrency 500 --repeat 3] [--record]

1. Creates one venv per competitor under ``benchmarks/agent_overhead/.venvs/<name>`` (``python3.11 -m venv``, then
   ``pip install <pkg>``), after a ``pip install --dry-run`` that refuses torch/CUDA-like packages, and records each
   venv's installed size. A venv whose spec file matches (and whose planned packages are all installed) is reused.
2. Re-executes itself in a fresh network namespace (``unshare -n``, loopback only) when it can, so that nothing
   below can reach any address but 127.0.0.1 (``--netns off`` skips this; ``--netns on`` requires it).
3. Measures import time and RSS of each framework (``python -c "import X"`` against ``python -c "pass"``).
4. Starts the OpenAI-compatible server (``server.py``, its own small venv with uvicorn + uvloop + httptools + orjson)
   on 127.0.0.1.
5. Runs every (framework, mode) runner as its own subprocess, one after another, with the same N/K/concurrency;
   the whole sequence is repeated ``--repeat`` times (round 1 runs every framework once, then round 2, ...), and
   the load average is recorded before each run.
6. Prints a markdown table (median and min-max over the rounds) and writes ``_out/results-<timestamp>.json``,
   ``_out/latest.json`` and ``_out/latest.md``; ``--record`` also writes the table into ``benchmarks/RESULTS.md``
   under ``## agent_overhead`` (only that section is replaced).

Nothing here talks to any address but 127.0.0.1 (pip talks to the package index while installing, before step 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
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

H = Harness("agent_overhead", HERE)
log, pin_ours = H.log, H.pin_ours


def ensure_venv(env: Env, reinstall: bool) -> dict[str, Any]:
    """Create (or reuse) the venv for ``env``; return what was installed and how big it is."""
    return H.ensure_venv(env.name, env.packages, reinstall)


def reexec_in_netns(mode: str) -> None:
    H.reexec_in_netns(mode, Path(__file__).resolve())


def record(section_body: str) -> None:
    H.record(SECTION, section_body)


OUR_PYTHON = REPO / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Env:
    name: str
    packages: tuple[str, ...]
    import_stmt: str
    """What ``import <framework>`` means for the import-cost measurement."""


COMPETITORS = {
    "agentscope2": Env("agentscope2", ("agentscope==2.0.11",), "import agentscope.agent, agentscope.model"),
    "openai_agents": Env("openai_agents", ("openai-agents",), "import agents"),
    "pydantic_ai": Env("pydantic_ai", ("pydantic-ai-slim[openai]",), "import pydantic_ai"),
}
SERVER_ENV = Env("server", ("uvicorn", "uvloop", "httptools", "orjson"), "import uvicorn")


@dataclass(frozen=True)
class Run:
    key: str
    label: str
    runner: str
    venv: str | None
    """Competitor venv name, or None for the project's .venv."""
    mode: str
    extra: tuple[str, ...] = ()


RUNS = [
    Run("ours", "AgentScope (ours)", "runner_agentscope.py", None, "inproc"),
    Run(
        "ours_fm",
        "AgentScope (ours, testing.FunctionModel)",
        "runner_agentscope.py",
        None,
        "inproc",
        ("--function-model",),
    ),
    Run(
        "ours_inline",
        "AgentScope (ours, tool registered inline=True)",
        "runner_agentscope.py",
        None,
        "inproc",
        ("--inline-tool",),
    ),
    Run("agentscope2", "AgentScope 2.0.11", "runner_agentscope2.py", "agentscope2", "inproc"),
    Run("openai_agents", "openai-agents", "runner_openai_agents.py", "openai_agents", "inproc"),
    Run("pydantic_ai", "pydantic-ai", "runner_pydantic_ai.py", "pydantic_ai", "inproc"),
    Run("bare", "bare loop (httpx2)", "runner_bare.py", None, "http"),
    Run("ours", "AgentScope (ours)", "runner_agentscope.py", None, "http"),
    Run("agentscope2", "AgentScope 2.0.11", "runner_agentscope2.py", "agentscope2", "http"),
    Run("openai_agents", "openai-agents", "runner_openai_agents.py", "openai_agents", "http"),
    Run("pydantic_ai", "pydantic-ai", "runner_pydantic_ai.py", "pydantic_ai", "http"),
]


def venv_python(name: str | None) -> Path:
    return OUR_PYTHON if name is None else VENVS / name / "bin" / "python"


def measure_import(
    python: Path, stmt: str, repeat: int = 7, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Median wall time and max-RSS of ``python -c stmt`` minus those of ``python -c pass``."""
    probe = "import resource,sys,time;t=time.perf_counter();{};print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"

    def sample(code: str) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        out = subprocess.run(
            [str(python), "-c", probe.format(code)],
            capture_output=True,
            text=True,
            check=True,
            cwd=VENVS,
            env={**os.environ, **(env or {})},
        )
        wall = time.perf_counter() - t0
        inner, rss_kb = out.stdout.split()
        return wall, float(inner), float(rss_kb) / 1024

    sample(stmt)  # warm the file cache and __pycache__
    base = [sample("pass") for _ in range(repeat)]
    full = [sample(stmt) for _ in range(repeat)]
    return {
        "process_s": statistics.median(f[0] for f in full),
        "process_delta_s": statistics.median(f[0] for f in full) - statistics.median(b[0] for b in base),
        "in_process_s": statistics.median(f[1] for f in full),
        "rss_mb": statistics.median(f[2] for f in full),
        "rss_delta_mb": statistics.median(f[2] for f in full) - statistics.median(b[2] for b in base),
    }


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(python: Path, k: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([str(python), str(HERE / "server.py"), "--port", str(port), "--k", str(k)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/stats", timeout=1):
                return proc, url + "/v1"
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("benchmark server exited at start-up") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("benchmark server did not start")


def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (key, mode), in run order: median / min / max over the rounds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["key"], r["mode"]), []).append(r)
    rows = []
    for (key, mode), rs in groups.items():
        good = [r for r in rs if r.get("valid")]
        rates = [r["steps_per_s"] for r in good]
        row: dict[str, Any] = {
            "key": key,
            "mode": mode,
            "label": rs[0]["label"],
            "version": next((r.get("version") for r in rs if r.get("version")), None),
            "runs": len(rs),
            "valid_runs": len(good),
            "valid": bool(good) and len(good) == len(rs),
            "agents_error": sum(r.get("agents_error") or 0 for r in rs),
            "agents_wrong": sum(r.get("agents_wrong") or 0 for r in rs),
            "steps_per_s": statistics.median(rates) if rates else None,
            "steps_per_s_min": min(rates) if rates else None,
            "steps_per_s_max": max(rates) if rates else None,
            "steps_per_s_all": [round(x, 1) for x in rates],
            "cpu_ms_per_step": statistics.median(r["cpu_ms_per_step"] for r in good) if good else None,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in good) if good else None,
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in good) if good else None,
            "rss_after_import_mb": statistics.median(r["rss_after_import_mb"] for r in good)
            if good
            else None,
            "load_1m": [r.get("load_avg")[0] for r in rs if r.get("load_avg")],
            "server_cpu_share": (
                statistics.median(r["server_cpu_share_of_client_wall"] for r in good)
                if good and all("server_cpu_share_of_client_wall" in r for r in good)
                else None
            ),
        }
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def find(key: str, mode: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["key"] == key and r["mode"] == mode and r["valid"]), None)

    ours_in, as2_in = find("ours", "inproc"), find("agentscope2", "inproc")
    ours_inline = find("ours_inline", "inproc")
    ours_http, bare = find("ours", "http"), find("bare", "http")
    lines = [
        "| mode | framework | agent-steps/s median (min-max) | CPU ms/step | peak RSS MB | RSS after imports MB "
        "| relative (median) | load 1m at each run | ok |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ref = as2_in if r["mode"] == "inproc" else bare
        rel = "-"
        if ref and r["steps_per_s"] and r["valid"]:
            rel = f"{r['steps_per_s'] / ref['steps_per_s']:.2f}x {'AS 2.0' if r['mode'] == 'inproc' else 'bare'}"
        if r["valid"]:
            ok = f"yes ({r['runs']}/{r['runs']})"
        else:
            ok = (
                f"NO ({r['valid_runs']}/{r['runs']} runs valid; {r['agents_error']} agent errors, "
                f"{r['agents_wrong']} wrong)"
            )
        rate = "-"
        if r["steps_per_s"] is not None:
            rate = f"{fmt(r['steps_per_s'])} ({fmt(r['steps_per_s_min'])}-{fmt(r['steps_per_s_max'])})"
        load = ", ".join(f"{x:.1f}" for x in r["load_1m"])
        lines.append(
            f"| {r['mode']} | {r['label']} | {rate} | {fmt(r['cpu_ms_per_step'], 2)} | "
            f"{fmt(r['peak_rss_mb'], 1)} | {fmt(r['rss_after_import_mb'], 1)} | {rel} | {load} | {ok} |"
        )
    verdicts = []
    if ours_in and as2_in:
        verdicts.append(ratio_verdict("in process: ours / AgentScope 2.0.11", ours_in, as2_in, goal=10.0))
        cpu = as2_in["cpu_ms_per_step"] / ours_in["cpu_ms_per_step"]
        verdicts.append(f"in process, by CPU per step: AgentScope 2.0.11 / ours = {cpu:.2f}x")
    if ours_inline and as2_in:
        label = (
            "in process, the tool inline on both sides (AgentScope 2.0.11 runs every sync tool on the loop): "
            "ours / AgentScope 2.0.11"
        )
        verdicts.append(ratio_verdict(label, ours_inline, as2_in, goal=10.0))
    if ours_http and bare:
        verdicts.append(ratio_verdict("HTTP: ours / bare httpx2 loop", ours_http, bare, goal=1.0))
        cpu = bare["cpu_ms_per_step"] / ours_http["cpu_ms_per_step"]
        verdicts.append(f"HTTP, by client CPU per step: bare / ours = {cpu:.2f}x")
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {v}" for v in verdicts) if verdicts else "")


def ratio_verdict(label: str, ours: dict[str, Any], theirs: dict[str, Any], goal: float) -> str:
    """``label = 2.05x by median, 1.90x worst case (our min / their max); goal >= 10x: MISSED``."""
    x = ours["steps_per_s"] / theirs["steps_per_s"]
    lo = ours["steps_per_s_min"] / theirs["steps_per_s_max"]
    return (
        f"{label} = {x:.2f}x by median, {lo:.2f}x worst case (our min / their max); "
        f"goal >= {goal:g}x: {'met' if x >= goal else 'MISSED'}"
    )


def import_table(imports: dict[str, dict[str, float]]) -> str:
    lines = [
        "| import | wall s (process, median of 7) | minus `python -c pass` s | max RSS MB | minus `pass` MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in imports.items():
        lines.append(
            f"| {name} | {m['process_s']:.3f} | {m['process_delta_s']:.3f} | {m['rss_mb']:.1f} | {m['rss_delta_mb']:.1f} |"
        )
    return "\n".join(lines)


def report(doc: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The markdown section for RESULTS.md (without its ``## agent_overhead`` heading)."""
    m, p = doc["machine"], doc["params"]
    versions = sorted({f"{r['label']}: {r['version']}" for r in rows if r.get("version")})
    md = [
        f"Run {doc['started_utc']} to {doc['finished_utc']} (UTC). Machine: {m.get('cpu', '?')}, "
        f"{m['cores']} cores, {m['ram_gib']} GiB RAM, {m['platform']}; shared with other engineers' test runs, so "
        "wall-clock rates are noisy (CPU ms/step is steadier).",
        "",
        f"Command: `{doc['command']}`  ",
        f"N={p['n']} agents, K={p['k']} tool rounds, {p['concurrency']} concurrent, warm-up {p['warmup']} agents; "
        f"{p['repeat']} rounds (each round runs every row once, one after another); ours: {doc['ours']['source']}"
        + (" with uncommitted changes" if doc["ours"].get("agentscope_dirty") else "")
        + f"; network: {doc['network']}.",
        "",
        f"Load: `{doc['uptime_start']}` at the start, `{doc['uptime_end']}` at the end.",
        "",
        table(rows),
    ]
    if doc["imports"]:
        md += ["", import_table(doc["imports"])]
    md += ["", "Versions: " + "; ".join(versions) + f"; Python {doc['python']}."]
    if doc["venvs"]:
        md += ["", "| venv | packages | site-packages MB |", "|---|---:|---:|"]
        md += [
            f"| {k} ({' '.join(v['packages'])}) | {v.get('n_packages', '?')} | {v.get('site_packages_mb', '?')} |"
            for k, v in doc["venvs"].items()
        ]
    return "\n".join(md)


SECTION = "## agent_overhead"


def run_one(
    r: Run,
    a: argparse.Namespace,
    rnd: int,
    server: subprocess.Popen[bytes] | None,
    base_url: str,
    ours_env: dict[str, str],
) -> dict[str, Any]:
    out = OUT / f"{r.key}-{r.mode}-r{rnd}.json"
    out.unlink(missing_ok=True)
    cmd = [
        str(venv_python(r.venv)),
        str(HERE / r.runner),
        *("--mode", r.mode, "--n", str(a.n), "--k", str(a.k)),
        *("--concurrency", str(a.concurrency), "--warmup", str(a.warmup), "--out", str(out)),
        *r.extra,
    ]
    if r.mode == "http":
        cmd += ["--base-url", base_url]
    load = loadavg()
    srv_cpu0 = proc_cpu_s(server.pid) if server and r.mode == "http" else 0.0
    log(f"round {rnd}: {r.label} [{r.mode}] (load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    t0 = time.perf_counter()
    try:
        env = {**os.environ, **(ours_env if r.runner == "runner_agentscope.py" else {})}
        proc = subprocess.run(cmd, timeout=a.timeout, capture_output=True, text=True, env=env)
        rc: int | str = proc.returncode
        stderr_tail = proc.stderr[-3000:]
    except subprocess.TimeoutExpired:
        rc, stderr_tail = "timeout", ""
    wall = time.perf_counter() - t0
    res: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"valid": False}
    res.update(
        key=r.key, label=r.label, mode=r.mode, round=rnd, returncode=rc, process_wall_s=wall, load_avg=load
    )
    if rc != 0 or not res.get("valid"):
        res["valid"] = False
        res["stderr_tail"] = stderr_tail
        log(f"  FAILED or invalid (rc={rc}); see {out}\n{stderr_tail[-1500:]}")
    if server and r.mode == "http" and res.get("elapsed_s"):
        srv = proc_cpu_s(server.pid) - srv_cpu0
        res["server_cpu_s"] = srv
        res["server_cpu_share_of_client_wall"] = srv / wall
    log(
        f"  {fmt(res.get('steps_per_s'))} steps/s, {fmt(res.get('cpu_ms_per_step'), 2)} CPU ms/step, "
        f"peak RSS {fmt(res.get('peak_rss_mb'), 1)} MB, valid={res.get('valid')}"
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="agents per timed run")
    p.add_argument("--k", type=int, default=5, help="tool rounds per agent")
    p.add_argument("--concurrency", type=int, default=500, help="agents running at once")
    p.add_argument("--warmup", type=int, default=50, help="agents in each runner's warm-up run")
    p.add_argument(
        "--repeat", type=int, default=3, help="rounds: every selected run is repeated this many times"
    )
    p.add_argument(
        "--only",
        default="",
        help="comma list of run keys (ours,ours_fm,ours_inline,agentscope2,openai_agents,pydantic_ai,bare)",
    )
    p.add_argument("--modes", default="inproc,http", help="comma list: inproc,http")
    p.add_argument("--reinstall", action="store_true", help="recreate the competitor venvs")
    p.add_argument("--no-imports", action="store_true", help="skip the import-cost measurement")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per runner")
    p.add_argument(
        "--netns",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the benchmark in a loopback-only network namespace (auto: when unshare -n works)",
    )
    p.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    p.add_argument(
        "--ours-rev",
        default="HEAD",
        help="git revision of our agentscope/ to benchmark (snapshot taken at the start; 'worktree': the live checkout)",
    )
    a = p.parse_args()

    only = {s for s in a.only.split(",") if s}
    modes = {s for s in a.modes.split(",") if s}
    runs = [r for r in RUNS if (not only or r.key in only) and r.mode in modes]
    VENVS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)

    venvs = {}
    for name in sorted({r.venv for r in runs if r.venv}):
        venvs[name] = ensure_venv(COMPETITORS[name], a.reinstall)
    server_python = OUR_PYTHON
    if "http" in modes:
        try:
            venvs["server"] = ensure_venv(SERVER_ENV, a.reinstall)
            server_python = venv_python("server")
        except (subprocess.CalledProcessError, StopIteration) as exc:
            log(f"server venv failed ({exc}); serving from the project .venv (uvicorn without uvloop)")

    reexec_in_netns(a.netns)  # returns only when not re-executed
    isolated = network_isolated()
    if a.netns == "on" and not isolated:
        raise SystemExit("--netns on: a non-loopback address is reachable")
    network = "loopback-only network namespace (unshare -n)" if isolated else "NOT isolated"
    log(f"network: {network}")

    started = datetime.now(UTC)
    uptime_start = uptime()
    ours, ours_env = pin_ours(a.ours_rev)
    log(f"ours: {ours['source']}")
    imports: dict[str, dict[str, float]] = {}
    if not a.no_imports:
        log("measuring import cost")
        imports["agentscope (ours): `import agentscope`"] = measure_import(
            OUR_PYTHON, "import agentscope", env=ours_env
        )
        imports["agentscope (ours): `import agentscope.agents, .models, .tools`"] = measure_import(
            OUR_PYTHON, "import agentscope.agents, agentscope.models, agentscope.tools", env=ours_env
        )
        for name in venvs:
            if name in COMPETITORS:
                env = COMPETITORS[name]
                imports[f"{name}: `{env.import_stmt}`"] = measure_import(venv_python(name), env.import_stmt)

    server = None
    base_url = ""
    if any(r.mode == "http" for r in runs):
        server, base_url = start_server(server_python, a.k)
        log(f"server at {base_url} (pid {server.pid}, python {server_python})")

    results: list[dict[str, Any]] = []
    try:
        for rnd in range(1, a.repeat + 1):
            for r in runs:
                results.append(run_one(r, a, rnd, server, base_url, ours_env))
    finally:
        if server:
            server.terminate()
            server.wait(10)

    rows = aggregate(results)
    doc = {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/agent_overhead/run.py", *sys.argv[1:]]),
        "params": {"n": a.n, "k": a.k, "concurrency": a.concurrency, "warmup": a.warmup, "repeat": a.repeat},
        "machine": machine(),
        "python": platform.python_version(),
        "ours": ours,
        "network": network,
        "uptime_start": uptime_start,
        "uptime_end": uptime(),
        "venvs": venvs,
        "imports": imports,
        "summary": rows,
        "results": results,
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (OUT / f"results-{stamp}.json").write_text(json.dumps(doc, indent=2))
    (OUT / "latest.json").write_text(json.dumps(doc, indent=2))
    text = report(doc, rows)
    (OUT / "latest.md").write_text(text + "\n")
    print(text)
    if a.record:
        record(text)


if __name__ == "__main__":
    main()
