"""Run a command for as long as the process that started it lives: ``python _lifeline.py -- COMMAND ...``.

A server we launch in a session of its own (vLLM: an API server, an engine core and workers) outlives its owner when
the owner is killed with SIGKILL, holding its port, its memory and, on a GPU, the device. This script stands between
them: the owner starts it with a pipe as its standard input and never writes to it; the script starts the command
(same process group) and waits. When the owner's end of the pipe closes (the kernel closes it however the owner
ends, SIGKILL included), the script reads EOF and stops the whole group: SIGTERM, then SIGKILL after
``AGENTSCOPE_LIFELINE_GRACE_S`` seconds (default 30). When the command exits first, the script exits with its code;
what the command left running in the group is then the owner's to stop (``VLLMServer`` does, at ``stop`` and when
a start fails).

Unlike ``PR_SET_PDEATHSIG``, this does not depend on which thread started the child (the signal is sent when that
*thread* exits, and the owner's launches run in worker threads that are retired when idle). Standard library only:
it runs under the interpreter of the owner, whatever environment the command needs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_ENV = "AGENTSCOPE_LIFELINE_GRACE_S"
"""Seconds the command's group gets between SIGTERM and SIGKILL once the owner is gone."""


_STOPPING = threading.Event()
"""Set once the owner is gone: the command's end no longer ends this process, which still owes the rest of the
group its SIGKILL (vLLM's engine core and workers outlive the API server)."""


def _stop_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    _STOPPING.set()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is for the command, not for us
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)  # what is left of the group, this process included


def _exit_with(child: subprocess.Popen[bytes]) -> None:
    code = child.wait()
    if _STOPPING.is_set():
        return
    sys.stdout.flush()
    os._exit(code if code >= 0 else 128 - code)  # killed by signal N: the shell's 128 + N


def main(argv: list[str]) -> int:
    """Start ``argv``'s command (after ``--``), stop its group when standard input closes; exits with the
    command's code when it ends first."""
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python _lifeline.py -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    grace_s = float(os.environ.get(GRACE_ENV, "30"))
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    # The command's end is watched in a thread (it exits the process); the owner's in the main thread, which alone
    # may change signal handlers.
    threading.Thread(target=_exit_with, args=(child,), daemon=True).start()
    stdin = sys.stdin.buffer
    while stdin.read(65536):  # the owner never writes; anything it did write is ignored
        pass
    _stop_group(child, grace_s)
    return 0  # not reached: the group's SIGKILL ends this process too


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
