"""Fixtures of the RL tests: a real PostgreSQL server for the trajectory store's PostgreSQL backend.

``postgres_url`` starts one server per session from Debian's binaries (``apt-get install postgresql``): initdb into
a fresh temporary folder, as the ``postgres`` system user when the tests run as root (the server refuses to run as
root), listening on 127.0.0.1 and a unix socket in that folder, on a free port; stopped and removed at the end.
Tests that need it skip, saying why, where the binaries or psycopg are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_USER = "agentscope"
"""The server's superuser (trust authentication, reachable on 127.0.0.1 only)."""


def _postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server's ``bin`` folder (``/usr/lib/postgresql/<major>/bin``), if any."""
    found = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.parent.name == "bin"
        and (path.parent / "pg_ctl").exists()
        and path.parent.parent.name.isdigit()
    ]
    return max(found, key=lambda b: int(b.parent.name)) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of this session: initdb into a fresh temporary folder, listening on 127.0.0.1 (and a
    unix socket in that folder) on a free port, stopped and removed at the end. Yields the URL of its ``postgres``
    database (superuser ``agentscope``, no password)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb and pg_ctl): apt-get install postgresql"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]'")
    as_user: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="agentscope-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the user Debian's package creates
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip(
                "running as root and there is no 'postgres' system user to run the PostgreSQL server as"
            )
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data, log = root / "data", root / "server.log"
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(root)}

    def run(*args: str) -> None:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=120, check=False, env=env, cwd=root, **as_user
        )
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{server_log}"
            )

    port = _free_port()
    settings = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        run(
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", settings, "start"
        )
        try:
            yield f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
