"""``agentscope eval`` as a user runs it: real processes (one killed with SIGKILL mid-way and resumed), a real
OpenAI-compatible server on 127.0.0.1 as the model, real files and a real trace store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from agentscope.evaluation import EvaluationReport
from agentscope.evaluation._results import read_log
from agentscope.models import ChatResponse, ChatUsage, to_response, tool_call
from agentscope.rl.tasks import arith_tasks
from agentscope.testing import OpenAICompatServer
from agentscope.tracing import TraceStore

ROOT = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).with_name("arith_agent.py")


def agentscope_eval(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentscope.cli", "eval", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=ROOT,
        **kwargs,
    )


def expected(n: int, seed: int) -> dict[str, bool]:
    return {t.content_key: " - " not in str(t.metadata["expression"]) for t in arith_tasks(n, seed)}


@pytest.mark.integration
def test_a_killed_evaluation_resumes_and_counts_nothing_twice(tmp_path: Path) -> None:
    out, store = tmp_path / "results.json", tmp_path / "traces.db"
    log = out.with_suffix(".jsonl")
    spec, repeats, total = "arith:n=15,seed=5", 2, 30
    args = [str(AGENT), spec, "--repeats", str(repeats), "--concurrency", "2", "--out", str(out)]
    args += ["--trace-store", str(store), "--name", "killed"]
    first_played, second_played = tmp_path / "played-1.txt", tmp_path / "played-2.txt"
    first = agentscope_eval(*args, env={"EVAL_TEST_DELAY_S": "0.08", "EVAL_TEST_PLAYED": str(first_played)})
    deadline = time.monotonic() + 60
    while (log.read_text().count("\n") if log.exists() else 0) < 1 + 6:  # the header and 6 episodes
        assert first.poll() is None, f"it ended before it could be killed: {first.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    header, kept, _ = read_log(log)
    assert header is not None
    assert 6 <= len(kept) < total, "killed mid-way"
    assert not out.exists(), "the report is written at the end"

    second = agentscope_eval(*args, "--resume", env={"EVAL_TEST_PLAYED": str(second_played)})
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert f"{total}/{total}" in stderr, "the progress bar counts from what was kept"

    # The second process played exactly the episodes the first did not finish.
    assert len(second_played.read_text().splitlines()) == total - len(kept)
    report = EvaluationReport.model_validate_json(out.read_text())
    assert report.complete
    assert len(report.episodes) == total
    assert report.run_id == header.run_id
    truth = expected(15, 5)
    assert {(e.task_key, e.repeat) for e in report.episodes} == {
        (k, r) for k in truth for r in range(repeats)
    }
    assert all(e.success is truth[e.task_key] for e in report.episodes)
    rate = sum(truth.values()) / len(truth)
    assert report.metrics["eval/success_rate"] == pytest.approx(rate)
    assert json.loads(stdout)["metrics"]["eval/success_rate"] == pytest.approx(rate)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + total, "each (task, repeat) is logged once"
    with TraceStore(store) as opened:
        rows = opened.eval_results(header.run_id)
        assert len(rows) == total
        assert sum(r["success"] for r in rows) == sum(e.success for e in report.episodes)
        run = opened.get_run(header.run_id)
        assert run is not None
        assert run["status"] == "finished"
        assert run["name"] == "killed"
        assert opened.list_evaluations()[1] == 1, "one evaluation, resumed: one run"


def _solve(body: dict[str, Any]) -> ChatResponse:
    """An OpenAI-compatible model that solves arith tasks with the calculator."""
    messages = body["messages"]
    usage = ChatUsage(input_tokens=50, output_tokens=5)
    if messages[-1]["role"] == "tool":
        return to_response(f"The answer is {messages[-1]['content']}.").model_copy(update={"usage": usage})
    question = next(m["content"] for m in messages if m["role"] == "user")
    text = question if isinstance(question, str) else question[0]["text"]
    expression = text.split("What is ", 1)[1].split("?", 1)[0]
    return ChatResponse(content=[tool_call("calculator", expression=expression)], usage=usage)


@pytest.mark.integration
def test_an_agent_on_an_openai_compatible_server(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    with OpenAICompatServer(_solve) as server:
        process = agentscope_eval(
            str(AGENT), "arith:n=4,seed=0", "--model", "openai:test-model", "--base-url", server.base_url,
            "--api-key", "sk-test", "--price", "2,8", "--no-trace", "--out", str(out),
        )  # fmt: skip
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    report = EvaluationReport.model_validate_json(out.read_text())
    assert report.model == "openai:test-model"
    assert report.metrics["eval/success_rate"] == 1.0, "the server's answers, not the file's own model"
    assert all((e.input_tokens, e.output_tokens) == (100, 10) for e in report.episodes), "usage over HTTP"
    assert report.metrics["eval/cost"] == pytest.approx(4 * (100 * 2 + 10 * 8) / 1e6)
    assert len(server.requests) == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch.py", "arith:n=2"], "agent spec 'nosuch.py'"),
        ([str(AGENT), "nosuch:n=2"], "unknown task set 'nosuch'"),
        ([str(AGENT), "arith:n=2", "--price", "cheap"], "expected INPUT,OUTPUT"),
        ([str(AGENT), "arith:n=2", "--out", "x.jsonl"], "names the results log itself"),
    ],
)
def test_bad_input_is_named(
    cli: Callable[..., Result], tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("eval", *args, "--no-trace")
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.integration
def test_episodes_the_endpoint_failed_are_played_again_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    with socket.socket() as s:  # a port nobody listens on: every model call fails to connect
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    args = [str(AGENT), "arith:n=2,seed=0", "--model", "openai:test-model", "--api-key", "sk-test"]
    args += ["--no-trace", "--out", str(out)]
    down = agentscope_eval(*args, "--base-url", dead)
    _, stderr = down.communicate(timeout=120)
    assert down.returncode == 1, stderr
    assert "2 of 2 episodes failed for infrastructure" in stderr
    assert "--resume" in stderr
    failed = EvaluationReport.model_validate_json(out.read_text())
    assert failed.statuses == {"failed_infra": 2}
    assert not failed.complete

    with OpenAICompatServer(_solve) as server:
        up = agentscope_eval(*args, "--base-url", server.base_url, "--resume")
        _, stderr = up.communicate(timeout=120)
    assert up.returncode == 0, stderr
    report = EvaluationReport.model_validate_json(out.read_text())
    assert report.complete
    assert report.statuses == {"ok": 2}
    assert report.metrics["eval/success_rate"] == 1.0


@pytest.mark.integration
def test_episodes_played_by_ray_workers(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out, store, played = tmp_path / "results.json", tmp_path / "traces.db", tmp_path / "played.txt"
    process = agentscope_eval(
        str(AGENT), "arith:n=8,seed=1", "--workers", "2", "--concurrency", "2", "--out", str(out),
        "--trace-store", str(store), env={"EVAL_TEST_PLAYED": str(played), "EVAL_TEST_DELAY_S": "0.2"},
    )  # fmt: skip
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    pids = {int(line.split()[0]) for line in played.read_text().splitlines()}
    assert process.pid not in pids, "the episodes ran in worker processes"
    assert len(pids) >= 2, "two workers at once"
    report = EvaluationReport.model_validate_json(out.read_text())
    truth = expected(8, 1)
    assert {e.task_key for e in report.episodes} == set(truth)
    assert all(e.success is truth[e.task_key] for e in report.episodes)
    assert all((e.model_calls, e.input_tokens) == (2, 200) for e in report.episodes)
    with TraceStore(store) as opened:
        assert len(opened.eval_results(report.run_id)) == 8


@pytest.mark.integration
def test_a_crashed_ray_worker_fails_its_chunk_only_and_resume_plays_it_again(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "results.json"
    tasks = arith_tasks(8, 1)
    crash_on = next(str(t.metadata["expression"]) for t in tasks)
    args = [
        str(AGENT),
        "arith:n=8,seed=1",
        "--workers",
        "2",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--no-trace",
    ]
    crashed = agentscope_eval(*args, env={"EVAL_TEST_CRASH_ON": crash_on})
    _, stderr = crashed.communicate(timeout=240)
    assert crashed.returncode == 1, stderr
    assert "--resume" in stderr
    report = EvaluationReport.model_validate_json(out.read_text())
    failed = [e for e in report.episodes if e.status == "failed_infra"]
    assert len(failed) == 2, "the crashed worker's chunk of two"
    assert all("Ray worker" in str(e.error) for e in failed)
    assert {e.task_id for e in failed} >= {next(t.id for t in tasks)}
    assert report.statuses.get("ok", 0) + report.statuses.get("failed_agent", 0) == 6, "the others played on"

    resumed = agentscope_eval(*args, "--resume")
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    report = EvaluationReport.model_validate_json(out.read_text())
    assert report.complete
    truth = expected(8, 1)
    assert {e.task_key for e in report.episodes} == set(truth)
    assert all(e.success is truth[e.task_key] for e in report.episodes)


_CANCEL_SCRIPT = """
import sys, time
from pathlib import Path
import anyio
from agentscope.evaluation import evaluate

async def main() -> None:
    agent, out, played = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: evaluate(agent, "arith:n=2,seed=1", workers=1, concurrency=2, out=out))
        while not (played.exists() and played.read_text()):  # a worker is playing the chunk
            await anyio.sleep(0.1)
        cancelled = time.monotonic()
        tg.cancel_scope.cancel()
    print(f"{time.monotonic() - cancelled:.2f}")

anyio.run(main)
"""


@pytest.mark.integration
def test_cancelling_a_ray_evaluation_does_not_wait_for_its_chunk(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    played = tmp_path / "played.txt"
    process = subprocess.run(
        [sys.executable, "-c", _CANCEL_SCRIPT, str(AGENT), str(tmp_path / "results.json"), str(played)],
        capture_output=True, text=True, timeout=200, cwd=ROOT,
        env={**os.environ, "EVAL_TEST_PLAYED": str(played), "EVAL_TEST_DELAY_S": "30"},
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    # Each episode's model calls take 30 s: the old wait held the cancelled evaluation until the chunk ended.
    assert float(process.stdout.split()[-1]) < 10


@pytest.mark.integration
def test_ray_workers_get_the_api_key_from_their_environment_not_their_arguments(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from agentscope.evaluation._ray import RemoteSetup

    assert "api_key" not in RemoteSetup.__dataclass_fields__, (
        "a task argument is stored in Ray's object store"
    )
    out = tmp_path / "results.json"
    with OpenAICompatServer(_solve) as server:
        process = agentscope_eval(
            str(AGENT), "arith:n=2,seed=0", "--workers", "1", "--model", "openai:test-model", "--api-key",
            "sk-worker-key", "--base-url", server.base_url, "--no-trace", "--out", str(out),
        )  # fmt: skip
        _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert EvaluationReport.model_validate_json(out.read_text()).statuses == {"ok": 2}
    assert server.requests
    assert {r.headers.get("authorization") for r in server.requests} == {"Bearer sk-worker-key"}
