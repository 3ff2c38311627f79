"""Registering gVisor with dockerd (``agentscope sandbox register-gvisor``) and the error when it cannot start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentscope.sandbox._gvisor import gvisor_start_failure, register_gvisor_runtime

# What Debian's runsc 2022 says on kernel 6.18 when dockerd registered it without --network=none.
REAL_FAILURE = (
    "OCI runtime start failed: starting container: setting up network: creating interfaces from net namespace "
    '"/proc/4186/ns/net": cannot run with network enabled in root network namespace: unknown'
)


def test_a_fresh_registration_has_no_network(tmp_path: Path) -> None:
    conf = tmp_path / "docker" / "daemon.json"
    assert register_gvisor_runtime("/usr/bin/runsc", daemon_json=conf) is True
    assert json.loads(conf.read_text()) == {
        "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}
    }
    assert register_gvisor_runtime("/usr/bin/runsc", daemon_json=conf) is False  # idempotent


def test_an_existing_registration_without_the_flag_is_updated_and_the_rest_kept(tmp_path: Path) -> None:
    conf = tmp_path / "daemon.json"
    before: dict[str, Any] = {
        "log-level": "warn",
        "runtimes": {
            "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace"]},
            "kata": {"path": "/opt/kata"},
        },
    }
    conf.write_text(json.dumps(before))
    assert register_gvisor_runtime("/usr/bin/runsc", daemon_json=conf) is True
    after = json.loads(conf.read_text())
    assert after["log-level"] == "warn"
    assert after["runtimes"]["kata"] == {"path": "/opt/kata"}
    assert after["runtimes"]["runsc"] == {
        "path": "/usr/bin/runsc",
        "runtimeArgs": ["--platform=ptrace", "--network=none"],
    }


def test_a_broken_daemon_json_is_left_alone_with_a_clear_error(tmp_path: Path) -> None:
    conf = tmp_path / "daemon.json"
    conf.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        register_gvisor_runtime("/usr/bin/runsc", daemon_json=conf)
    assert conf.read_text() == "{not json"


def test_the_cli_registers_and_reports_a_change(cli: Any, tmp_path: Path) -> None:
    conf = tmp_path / "daemon.json"
    first = cli("sandbox", "register-gvisor", "--runsc", "/usr/bin/runsc", "--daemon-json", str(conf))
    second = cli("sandbox", "register-gvisor", "--runsc", "/usr/bin/runsc", "--daemon-json", str(conf))
    assert (first.exit_code, first.output.strip()) == (0, "changed")
    assert (second.exit_code, second.output.strip()) == (0, "unchanged")


def test_a_runtime_that_cannot_start_names_the_fix() -> None:
    message = gvisor_start_failure("runsc", REAL_FAILURE)
    assert "cannot run with network enabled" in message
    assert '"runtimeArgs": ["--network=none"]' in message
    assert "agentscope sandbox register-gvisor" in message
