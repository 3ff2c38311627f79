"""A human approval paused in one ``agentscope serve`` process and decided in another: the paused agent is JSON in
the session file, so nothing of it lives in the process that paused."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai

ROOT = Path(__file__).resolve().parents[2]
AGENT = "tests/service/agents/guarded_files.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, sessions: Path, files: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentscope.cli",
            "serve",
            AGENT,
            "--port",
            str(port),
            "--sessions-db",
            str(sessions),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "GUARDED_FILES_DIR": str(files)},
    )


def wait_ready(root: str, proc: subprocess.Popen[str]) -> None:
    with httpx2.Client(base_url=root, timeout=2) as http:
        for _ in range(600):
            assert proc.poll() is None, f"the server exited early:\n{proc.communicate()[1]}"
            try:
                if http.get("/healthz").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
    raise AssertionError("the server did not start in 30 s")


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def test_an_approval_paused_in_one_server_process_is_decided_in_the_next(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("keep me until approved")
    sessions = tmp_path / "sessions.db"
    session = {"X-Session-Id": "user-1"}

    port = free_port()
    first = start_server(port, sessions, files)
    try:
        wait_ready(f"http://127.0.0.1:{port}", first)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0) as client:
            paused = client.chat.completions.create(
                model="guarded_files",
                messages=[{"role": "user", "content": "remove a.txt"}],
                extra_headers=session,
            )
    finally:
        stop(first)
    waiting = (paused.choices[0].message.model_extra or {})["agentscope"]["approval_required"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in waiting] == [
        ("call-remove", "remove", {"path": "a.txt"})
    ]
    assert (files / "a.txt").exists()  # nothing ran without the approval

    port = free_port()
    second = start_server(port, sessions, files)
    try:
        wait_ready(f"http://127.0.0.1:{port}", second)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0) as client:
            decided = client.chat.completions.create(
                model="guarded_files",
                messages=[],
                extra_headers=session,
                extra_body={"agentscope": {"approvals": [{"call_id": "call-remove", "action": "approve"}]}},
            )
    finally:
        stop(second)
    assert decided.choices[0].message.content == "Done: removed a.txt"
    assert not (files / "a.txt").exists()
