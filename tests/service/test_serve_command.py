"""``agentscope serve`` as a user runs it: a process serving an agent spec, answering the ``openai`` client, and
finishing the requests in flight when told to stop."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx2
import openai

from agentscope.service.cli import default_model_name

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: object, timeout_s: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited early:\n{proc.communicate()[1]}"
        try:
            if callable(condition) and condition():
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_serve_answers_and_drains_requests_in_flight_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    sessions = tmp_path / "sessions.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentscope.cli",
            "serve",
            "tests/service/agents/slow_calculator.py",
            "--port",
            str(port),
            "--sessions-db",
            str(sessions),
            "--api-key",
            "sk-drain-test-key-000",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )
    root = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=root) as http:
            wait_until(lambda: http.get("/healthz").status_code == 200, 30, proc)
            client = openai.OpenAI(base_url=f"{root}/v1", api_key="sk-drain-test-key-000", max_retries=0)
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    client.chat.completions.create,
                    model="slow_calculator",
                    messages=[{"role": "user", "content": "What is 2 + 3?"}],
                    extra_headers={"X-Session-Id": "drained"},
                )
                wait_until(lambda: http.get("/healthz").json()["in_flight"] == 1, 10, proc)
                proc.send_signal(signal.SIGTERM)  # mid-request: the agent needs two slow model calls
                answer = pending.result(timeout=30)
            client.close()
        assert answer.choices[0].message.content == "The result is 5.0."
        assert answer.model == "slow_calculator"
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), stderr  # uvicorn re-raises the signal it caught
    assert "Serving tests/service/agents/slow_calculator.py as model 'slow_calculator'" in stderr
    assert "POST /v1/chat/completions 200" in stderr
    assert "sk-drain-test-key-000" not in stderr
    # The drained request's turn was stored before the process ended.
    with closing(sqlite3.connect(sessions)) as conn:
        assert conn.execute("SELECT id, turns FROM service_sessions").fetchall() == [("drained", 1)]


def test_workers_share_the_sessions_and_keep_each_session_s_requests_in_order(tmp_path: Path) -> None:
    port = free_port()
    sessions = tmp_path / "sessions.db"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "agentscope.cli", "serve", "tests/service/agents/slow_calculator.py",
            "--port", str(port), "--sessions-db", str(sessions), "--workers", "2",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "AGENTSCOPE_API_KEYS": "sk-workers-key-1,sk-workers-key-2",
            "SLOW_CALCULATOR_S": "0.1",
            "SLOW_CALCULATOR_PROBE": str(tmp_path / "probe.txt"),
        },
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=root) as http:
            wait_until(lambda: http.get("/healthz").status_code == 200, 60, proc)
            assert http.get("/v1/models").status_code == 401  # the workers got the keys
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="sk-workers-key-2", max_retries=0)
        questions = [f"What is {n} + 1?" for n in range(4)]
        with ThreadPoolExecutor(4) as pool:  # new connections: the kernel spreads them over the workers
            answers = list(
                pool.map(
                    lambda q: client.chat.completions.create(
                        model="slow_calculator",
                        messages=[{"role": "user", "content": q}],
                        extra_headers={"X-Session-Id": "shared"},
                    ),
                    questions,
                )
            )
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    assert [a.choices[0].message.content for a in answers] == [f"The result is {n + 1.0}." for n in range(4)]
    # The workers log each request (their log level comes from the parent) and never the keys...
    assert stderr.count("POST /v1/chat/completions 200") == 4, stderr
    assert "sk-workers-key" not in stderr
    # ...and the agent's process no longer has the keys in its environment (its tools could read or pass them on).
    probes = (tmp_path / "probe.txt").read_text().splitlines()
    assert len(probes) == 8  # two model calls per question
    assert {line.split(" ", 1)[1] for line in probes} == {"None"}
    with closing(sqlite3.connect(sessions)) as conn:
        ((turns, state),) = conn.execute("SELECT turns, state FROM service_sessions").fetchall()
    roles = [m["role"] for m in json.loads(state)["memory"]["messages"]]
    assert turns == 4
    assert roles == ["user", "assistant", "tool", "assistant"] * 4  # one whole turn after another


def test_the_served_model_name_comes_from_the_spec() -> None:
    assert default_model_name("examples/calculator.py") == "calculator"
    assert default_model_name("examples/calculator.py:build_agent") == "calculator"
    assert default_model_name("my_pkg.agents:build") == "agents"
    assert default_model_name("agents:build") == "agents"


LIGHT_PROBE = """
import sys
from typer.testing import CliRunner
import agentscope.service
from agentscope.cli import app

for args, expected in ((["--help"], "Serve an agent over HTTP"), (["serve", "--help"], "--api-key")):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert expected in result.output, result.output
print(sorted({m.split(".")[0] for m in sys.modules} & {"fastapi", "starlette", "uvicorn"}))
"""


def test_the_command_and_the_package_load_no_web_framework_until_serving() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_PROBE], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
