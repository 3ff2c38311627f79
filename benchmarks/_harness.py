"""What the benchmark orchestrators share (``agent_overhead/run.py``, ``serve/run.py``): venvs for the peers built
from the package index after a dry run that refuses torch/CUDA-like packages, a re-run inside a loopback-only
network namespace, a snapshot of our ``agentscope/`` at a git revision, the machine's description and load, and
writing one section of ``benchmarks/RESULTS.md``.

Each orchestrator makes one :class:`Harness` with its name and folder: ``.venvs/`` and ``_out/`` live there, and
its log lines start with ``[name]``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Recorded runs of the benchmarks under `benchmarks/`. Each section belongs to one benchmark and is rewritten by "
    "whoever reruns it; machine, date, command and load are given with every table.\n"
)
BASE_PYTHON = shutil.which("python3.11") or sys.executable
FORBIDDEN = ("torch", "nvidia", "cuda", "triton", "tensorflow", "jax", "jaxlib")
"""Package name prefixes a peer's venv may not pull in (multi-GB GPU builds)."""


class Harness:
    """One benchmark's venvs, network namespace, snapshot of our code, log and RESULTS.md section."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.venvs = folder / ".venvs"
        self.out = folder / "_out"
        self.netns_mark = f"{name.upper()}_IN_NETNS"
        """Set in the environment of the re-run inside the network namespace."""

    def log(self, msg: str) -> None:
        print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)

    def quiet(self, cmd: list[str]) -> None:
        """Run ``cmd``; show its output only when it fails."""
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            self.log(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise subprocess.CalledProcessError(proc.returncode, cmd)

    def ensure_venv(self, venv: str, packages: Sequence[str], reinstall: bool) -> dict[str, Any]:
        """Create (or reuse) the venv ``venv`` holding ``packages``; return what was installed and how big it is.

        A venv is reused when it was made for the same packages and every planned package is installed at the
        planned version; otherwise it is made anew (never inside the network namespace, which has no index).
        """
        path = self.venvs / venv
        spec_file = path / f"{self.name}_spec.json"
        spec = {"packages": list(packages), "python": BASE_PYTHON}
        if (
            not reinstall
            and spec_file.exists()
            and json.loads(spec_file.read_text()).get("packages") == spec["packages"]
        ):
            info = json.loads(spec_file.read_text())
            missing = venv_missing(path, info.get("installed", []))
            if not missing:
                self.log(f"venv {venv}: reusing ({info.get('site_packages_mb', 0):.0f} MB)")
                return info
            self.log(f"venv {venv}: incomplete (missing or mismatched: {missing[:5]}); recreating")
        if os.environ.get(self.netns_mark):
            raise SystemExit(
                f"venv {venv} needs installing, which cannot happen inside the network namespace"
            )
        if path.exists():
            shutil.rmtree(path)
        self.log(f"venv {venv}: creating with {BASE_PYTHON}")
        subprocess.run([BASE_PYTHON, "-m", "venv", str(path)], check=True)
        pip = [str(path / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        report = path / "dry-run-report.json"
        self.quiet([*pip, "install", "--dry-run", "--report", str(report), *packages])
        planned = sorted(
            f"{i['metadata']['name']}=={i['metadata']['version']}"
            for i in json.loads(report.read_text())["install"]
        )
        bad = [p for p in planned if p.split("==")[0].lower().startswith(FORBIDDEN)]
        if bad:
            raise SystemExit(f"{venv}: refusing to install heavy packages {bad}")
        self.log(f"venv {venv}: installing {len(planned)} packages (dry run clean: no torch/CUDA)")
        self.quiet([*pip, "install", *packages])
        info = {
            **spec,
            "installed": planned,
            "n_packages": len(planned),
            "site_packages_mb": round(du_mb(self.site_packages(venv)), 1),
        }
        spec_file.write_text(json.dumps(info, indent=2))
        return info

    def site_packages(self, venv: str) -> Path:
        return next((self.venvs / venv / "lib").glob("python*/site-packages"))

    def reexec_in_netns(self, mode: str, script: Path) -> None:
        """Run ``script`` again inside a new network namespace that has only loopback (needs ``unshare -n``);
        return only when that is not done (``mode`` off, already inside, or not possible with ``mode`` auto)."""
        if mode == "off" or os.environ.get(self.netns_mark):
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
                str(script),
                *argv,
            ]
            self.log("re-running inside a fresh network namespace (loopback only)")
            sys.stdout.flush()
            os.execve(unshare, cmd, {**os.environ, self.netns_mark: "1"})
        if mode == "on":
            raise SystemExit(
                "--netns on: cannot create a network namespace (unshare -n needs root or user namespaces)"
            )
        self.log("WARNING: no network namespace available; running without network isolation")

    def pin_ours(self, rev: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Extract ``agentscope/`` at ``rev`` into ``_out/ours-src`` and return (description, env for our runs).

        Other engineers commit to the same checkout while a benchmark runs (it takes a while); a snapshot taken at
        the start keeps every round on the same code. ``rev == "worktree"`` runs the live checkout instead.
        """
        if rev == "worktree":
            return {
                "source": "live working tree",
                "commit": _git("rev-parse", "--short", "HEAD"),
                "agentscope_dirty": bool(
                    _git("status", "--porcelain", "--untracked-files=no", "--", "agentscope")
                ),
            }, {}
        commit = _git("rev-parse", "--short", rev)
        dest = self.out / "ours-src"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "agentscope"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        info = {"source": f"snapshot of agentscope/ at {commit} (git archive)", "commit": commit}
        return info, {"PYTHONPATH": str(dest)}

    def record(self, section: str, body: str) -> None:
        """Replace (or append) the ``section`` of benchmarks/RESULTS.md (``## name``), leaving the others alone."""
        text = RESULTS_MD.read_text() if RESULTS_MD.exists() else RESULTS_HEADER
        block = f"{section}\n\n{body.rstrip()}\n"
        match = re.search(rf"^{re.escape(section)}\s*$", text, flags=re.M)
        if match:
            nxt = re.search(r"^## ", text[match.end() :], flags=re.M)
            end = match.end() + nxt.start() if nxt else len(text)
            text = text[: match.start()] + block + ("\n" + text[end:] if nxt else "")
        else:
            text = text.rstrip("\n") + "\n\n" + block
        RESULTS_MD.write_text(text)
        self.log(f"recorded in {RESULTS_MD}")


def venv_missing(path: Path, planned: list[str]) -> list[str]:
    """Packages of ``planned`` (``name==version``) not installed at that version in the venv at ``path``."""
    code = (
        "import json,sys,importlib.metadata as m\n"
        "bad=[]\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    n,v=p.split('==')\n"
        "    try:\n"
        "        ok=m.version(n)==v\n"
        "    except m.PackageNotFoundError:\n"
        "        ok=False\n"
        "    bad+=[] if ok else [p]\n"
        "print(json.dumps(bad))"
    )
    python = path / "bin" / "python"
    if not python.exists():
        return ["<no python>"]
    proc = subprocess.run([str(python), "-c", code, json.dumps(planned)], capture_output=True, text=True)
    if proc.returncode != 0:
        return ["<venv python fails>"]
    return json.loads(proc.stdout)


def du_mb(path: Path) -> float:
    """Size of the files under ``path`` in MiB (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total / 2**20


def network_isolated() -> bool:
    """True when this process cannot reach a non-loopback address (checked with a connect to a TEST-NET address)."""
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("192.0.2.1", 9))  # RFC 5737 TEST-NET-1: never routed; in a netns: ENETUNREACH at once
        except OSError as exc:
            return "unreachable" in str(exc).lower() or getattr(exc, "errno", 0) == 101
        return False


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    """Platform, cores, CPU model and memory of this machine."""
    info: dict[str, Any] = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        info["ram_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    return info
