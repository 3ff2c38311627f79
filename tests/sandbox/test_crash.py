"""When the process that owns sandboxes dies (SIGKILL, no clean-up of ours runs), nothing of them outlives it:
the Docker container goes (its guest sees end of input and exits; the engine auto-removes it, and the next
process sweeps anything labelled as ours whose owner is gone), the bubblewrap sandbox dies with its parent, and
its cgroup is swept by the next process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio

from agentscope.sandbox._cgroups import list_sandbox_cgroups, sweep_stale_cgroups

if TYPE_CHECKING:
    from conftest import Opener  # type: ignore[import-not-found]

OWNER = textwrap.dedent("""
    import sys, time, anyio
    from agentscope.sandbox import open_sandbox

    async def main(backend, seconds):
        async with open_sandbox(backend) as sb:
            await sb.exec(f"sleep {seconds} &", keep_background=True)
            print(getattr(sb, "_container", None) or sb.id, flush=True)
            time.sleep(600)

    anyio.run(main, sys.argv[1], sys.argv[2])
""")


async def test_sandbox_does_not_outlive_a_killed_owner(api_backend: Opener) -> None:
    # A sleep length no other test uses (test_escape runs a "sleep 600" that may still be dying).
    seconds = f"600.{os.getpid()}"
    owner = await anyio.open_process([sys.executable, "-c", OWNER, api_backend.name, seconds])
    try:
        assert owner.stdout is not None
        with anyio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                line += await owner.stdout.receive()
        sandbox_id = line.decode().strip()
        os.kill(owner.pid, signal.SIGKILL)
        await owner.wait()
    finally:
        if owner.returncode is None:
            owner.kill()
        await owner.aclose()
    if api_backend.name == "docker":
        from agentscope.sandbox._docker import docker_client

        def gone() -> bool:
            names = {c["Id"] for c in docker_client().api.containers(all=True)}
            return sandbox_id not in names

        with anyio.fail_after(20):
            while not await anyio.to_thread.run_sync(gone):  # noqa: ASYNC110 - polling the engine
                await anyio.sleep(0.2)
    else:
        with anyio.fail_after(10):
            while await anyio.to_thread.run_sync(_sleepers_alive, seconds):  # noqa: ASYNC110 - polling the host
                await anyio.sleep(0.1)
        stale = [p for p in await anyio.to_thread.run_sync(list_sandbox_cgroups) if p.name == sandbox_id]
        assert stale, "the killed owner's cgroup should still be there, for the sweep to find"
        # The sweep removes it (or another process's first sandbox on this machine already did: same code).
        await anyio.to_thread.run_sync(sweep_stale_cgroups)
        left = [p for p in await anyio.to_thread.run_sync(list_sandbox_cgroups) if p.name == sandbox_id]
        assert not left


def _sleepers_alive(seconds: str) -> bool:
    out = subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True, text=True).stdout
    return bool(out.strip())
