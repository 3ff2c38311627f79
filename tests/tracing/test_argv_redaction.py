"""The command line a run records (``config.argv``) keeps no secrets: URL user info, secret URL parameters and
``--set KEY=VALUE`` overrides of secret-looking keys are redacted too, not only ``--api-key``-style options.

Before: ``--base-url https://user:pw@...`` and ``--set model.api_key=...`` were recorded in clear.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agentscope.testing import OpenAICompatServer
from agentscope.tracing import TraceStore
from agentscope.tracing._tracer import recorded_argv


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--base-url", "https://user:pw-0001@api.example/v1"],
            ["--base-url", "https://<redacted>@api.example/v1"],
        ),
        (["--base-url=https://u:pw-0001@h:8/v1"], ["--base-url=https://<redacted>@h:8/v1"]),
        (["--base-url", "http://token-only@h/"], ["--base-url", "http://<redacted>@h/"]),
        (["--set", "model.api_key=sk-0002"], ["--set", "model.api_key=<redacted>"]),
        (["--set=trainer.hf_token=hf-0003"], ["--set=trainer.hf_token=<redacted>"]),
        (["--set", "model.apiKey=sk-0004"], ["--set", "model.apiKey=<redacted>"]),
        (["OPENAI_API_KEY=sk-0004"], ["OPENAI_API_KEY=<redacted>"]),
        (
            ["--url", "https://h/v1?api_key=zz-0006&model=m"],
            ["--url", "https://h/v1?api_key=<redacted>&model=m"],
        ),
        (["--header", "Authorization=Bearer tok-0005"], ["--header", "Authorization=<redacted>"]),
        (["-H", "Authorization: Bearer tok-0007xyz"], ["-H", "Authorization: <redacted>"]),
        (["-H", "authorization:Basic dXNlcjpwdw=="], ["-H", "authorization: <redacted>"]),
        (["-H", "X-Api-Key: k-00080000"], ["-H", "X-Api-Key: <redacted>"]),
        (["-H", "Cookie: session=s-0009"], ["-H", "Cookie: <redacted>"]),
        (["--note", "sent with Bearer tok-0010abcdef"], ["--note", "sent with Bearer <redacted>"]),
        # Not secrets: kept as they are.
        (["--set", "rollout.max_tokens=512"], ["--set", "rollout.max_tokens=512"]),
        (["--max-tokens", "100"], ["--max-tokens", "100"]),
        (["--base-url", "https://api.example/v1"], ["--base-url", "https://api.example/v1"]),
        (["-m", "what is a=b?"], ["-m", "what is a=b?"]),
        (["-H", "Accept: application/json"], ["-H", "Accept: application/json"]),
        (["-m", "Note: the bearer of bad news"], ["-m", "Note: the bearer of bad news"]),
        (["--base-url", "http://127.0.0.1:8000/v1"], ["--base-url", "http://127.0.0.1:8000/v1"]),
    ],
)
def test_secrets_inside_arguments_are_redacted(argv: list[str], expected: list[str]) -> None:
    assert recorded_argv(["agentscope", *argv]) == ["agentscope", *expected]


def test_without_content_only_option_names_remain() -> None:
    argv = ["agentscope", "run", "--base-url", "https://u:pw-0001@h/v1", "--set=model.api_key=sk-0002"]
    assert recorded_argv(argv, capture_content=False) == [
        "agentscope",
        "<redacted>",
        "--base-url",
        "<redacted>",
        "--set",
    ]


@pytest.mark.integration
def test_a_real_run_records_no_secret(
    cli_process: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """``agentscope run`` in a subprocess with secrets on its command line: none reaches the trace store."""
    store = tmp_path / "traces.db"
    with OpenAICompatServer(lambda body: "2") as server:
        result = cli_process(
            "run",
            "examples/calculator.py",
            "--trace-store",
            str(store),
            "--model",
            "openai:local",
            "--base-url",
            server.base_url.replace("http://", "http://user:pw-0001@"),
            "--api-key",
            "sk-0002",
            "-m",
            "1 + 1",
        )
    assert result.returncode == 0, result.stderr
    with TraceStore(store) as traces:
        runs, _ = traces.list_runs()
    (run,) = runs
    argv = run["config"]["argv"]
    assert argv[argv.index("--base-url") + 1] == server.base_url.replace("http://", "http://<redacted>@")
    assert argv[argv.index("--api-key") + 1] == "<redacted>"
    files = [p for p in tmp_path.iterdir() if p.name.startswith("traces.db")]
    assert files
    assert all(secret not in p.read_bytes() for p in files for secret in (b"pw-0001", b"sk-0002"))
