"""Rollout servers as processes of their own (``rollout.backend: process``), and the server side they run.

Each server is ``agentscope rl rollout-server CONFIG --model DIR --index I``: the rollout service that the
in-process backend would build for server ``I`` (same engine, same sampling, same seed), behind the rollout HTTP
app on 127.0.0.1. The training process talks to it through :class:`ProcessRolloutServer`, a
:class:`~agentscope.rl.rollout.RemoteRolloutServer` that also owns the process: it starts it, waits until it
serves, and when it dies restarts it from the newest published weights (episodes in flight on it fail as
``failed_infra``; the router keeps sending new ones to the servers that answer). Weights reach the servers as
files, each version written once by the run's :class:`~agentscope.rl.rollout.WeightPublisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import anyio.abc
import anyio.to_thread

from agentscope.exceptions import ModelConnectionError
from agentscope.rl.rollout import RemoteRolloutServer, WeightPublisher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agentscope.rl._config import RLConfig
    from agentscope.rl.policy import TokenizerLike
    from agentscope.rl.rollout import RolloutHTTPServer, RolloutService

__all__ = ["ProcessRolloutServer", "serve_rollout_server"]

logger = logging.getLogger(__name__)

READY_PREFIX = "agentscope-rollout-server "
"""Starts the stdout line a server prints once it serves (then a JSON object: url, pid, version)."""

TOKEN_ENV = "AGENTSCOPE_ROLLOUT_TOKEN"
"""The environment variable holding the rollout server's bearer token (never a command-line argument, which any
user of the machine can read in the process list)."""


async def serve_rollout_server(
    config: RLConfig,
    model_dir: Path,
    *,
    index: int = 0,
    version: int = 0,
    weights: Path | None = None,
    weights_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    ready: Callable[[str], None] | None = None,
    until: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Serve rollout server ``index`` of ``config`` over HTTP until SIGTERM or SIGINT (or until ``until()``
    returns, when given: a server on a thread other than the main one cannot receive signals).

    Builds the service exactly as the in-process backend does (:func:`build_rollout_service`), starting from
    ``model_dir`` as policy ``version``, or from the weights file ``weights`` (as :class:`WeightPublisher` writes
    it) over it. ``weights_dir`` is the run's :class:`WeightPublisher` directory, where an engine behind HTTP
    (``rollout.engine`` vllm or sglang) has its server reload each version from. With ``token`` every request must
    carry it (required beyond loopback). ``ready`` receives the ready line (default: printed to stdout).
    """
    from agentscope.rl._components import build_rollout_service, load_policy_tokenizer
    from agentscope.rl.rollout import RolloutHTTPServer, load_weights

    tokenizer = await load_policy_tokenizer(model_dir, config.rollout.threads)
    publisher = WeightPublisher(weights_dir) if weights_dir is not None else None
    service = build_rollout_service(
        config, model_dir, tokenizer, 0 if weights is not None else version, index=index, weights=publisher
    )
    embedded = config.rollout.engine == "torch"
    if weights is not None and embedded:
        state_dict = await anyio.to_thread.run_sync(load_weights, weights)
        await service.update_weights(state_dict, version)  # before start: applied to the loaded model
    http = RolloutHTTPServer(service, host=host, port=port, token=token)
    async with service:
        if weights is not None and not embedded:  # a server behind HTTP reloads once it runs
            state_dict = await anyio.to_thread.run_sync(load_weights, weights)
            await service.update_weights(state_dict, version)
        await _serve(http, service, ready, until)


async def _serve(
    http: RolloutHTTPServer,
    service: RolloutService,
    ready: Callable[[str], None] | None,
    until: Callable[[], Awaitable[Any]] | None,
) -> None:
    async with http as server:
        line = READY_PREFIX + json.dumps(
            {"url": f"http://{server.host}:{server.port}", "pid": os.getpid(), "version": service.version}
        )
        (ready or _print_flushed)(line)
        await (until or _signalled)()


async def _signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def until_stdin_closes_or_signalled() -> None:
    """Return at SIGTERM or SIGINT, or when stdin closes: the parent that started this server with a pipe on its
    stdin died (even by SIGKILL), so the server does not outlive it."""
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        loop.call_soon_threadsafe(closed.set)

    threading.Thread(target=watch, name="agentscope-stdin-watch", daemon=True).start()
    async with anyio.create_task_group() as tg:

        async def first(wait: Callable[[], Awaitable[Any]]) -> None:
            await wait()
            tg.cancel_scope.cancel()

        tg.start_soon(first, closed.wait)
        tg.start_soon(first, _signalled)


def _print_flushed(line: str) -> None:
    print(line, flush=True)


class ProcessRolloutServer(RemoteRolloutServer):
    """Rollout server ``index`` of a run, in a process of its own that this object starts, watches and restarts.

    The process gets a bearer token of the run (through its environment), a session of its own (Ctrl-C in the
    terminal reaches the training process, which stops the servers, not the servers first) and a pipe on its
    stdin: when the training process dies, even by SIGKILL, the pipe closes and the server exits.

    Args:
        config_path: The run's resolved config (``config.yaml`` of the run directory).
        model_dir: The policy the server starts from.
        index: Which server of the run (its seed).
        version: The policy version of ``model_dir``.
        publisher: The run's weight publisher (updates, and the newest weights after a restart).
        tokenizer: The policy's tokenizer (for ``count_tokens``).
        log_path: Where the process's stderr goes (appended).
        start_timeout_s: Longest a start may take before it is an error.
        max_restarts: Restarts after which a dead server stays dead (its calls fail; the router avoids it).
    """

    def __init__(
        self,
        config_path: Path,
        model_dir: Path,
        *,
        index: int,
        version: int,
        publisher: WeightPublisher,
        tokenizer: TokenizerLike | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 300.0,
        max_restarts: int = 5,
    ) -> None:
        token = secrets.token_urlsafe(24)
        super().__init__("http://127.0.0.1:0", publisher, tokenizer=tokenizer, version=version, token=token)
        self.config_path = config_path
        self.model_dir = model_dir
        self.index = index
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.max_restarts = max_restarts
        self._secret = token
        self._initial_version = version
        self._process: anyio.abc.Process | None = None
        self._log: TextIO | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._stopping = False
        self._up = False
        """Whether the process printed its ready line and has not been seen to exit since."""

    def __repr__(self) -> str:
        return f"ProcessRolloutServer(index={self.index}, url={self.base_url!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """The server process's id (None before it starts)."""
        return self._process.pid if self._process is not None else None

    @property
    def available(self) -> bool:
        """Up and answering (see :attr:`RemoteRolloutServer.available`)."""
        return self._up and super().available

    async def __aenter__(self) -> ProcessRolloutServer:
        try:
            if self.log_path is not None:
                self._log = await anyio.to_thread.run_sync(_open_log, self.log_path)
            await self._launch(None, self._initial_version)
            await self.refresh()
        except BaseException:
            await self._shutdown()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        with anyio.CancelScope(shield=True):
            self._stopping = True
            try:
                for task in (self._watcher, self._drainer):
                    if task is not None and not task.done():
                        task.cancel()
                    if task is not None:
                        with contextlib.suppress(asyncio.CancelledError):
                            try:
                                await task
                            except Exception:
                                logger.exception("rollout server %d: its watcher failed", self.index)
                await self.aclose()
            finally:
                await self._terminate()
                if self._log is not None:
                    self._log.close()

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        self._up = False
        if process is None or process.returncode is not None:
            return
        process.terminate()
        with anyio.move_on_after(15):
            await process.wait()
            return
        process.kill()
        await process.wait()

    def _command(self, weights: Path | None, version: int) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "agentscope.cli",
            "rl",
            "rollout-server",
            str(self.config_path),
            "--model",
            str(self.model_dir),
            "--index",
            str(self.index),
            "--version",
            str(version),
            "--exit-with-stdin",
        ]
        if self.publisher is not None:
            command += ["--weights-dir", str(self.publisher.root)]  # the same working directory
        if weights is not None:
            command += ["--weights", str(weights)]
        return command

    async def _launch(self, weights: Path | None, version: int) -> None:
        """Start the process and wait for its ready line (on failure the process is stopped and
        ModelConnectionError names why and where its log is)."""
        process = await anyio.open_process(
            self._command(weights, version),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", TOKEN_ENV: self._secret},
            start_new_session=True,
        )
        self._process = process
        assert process.stdout is not None
        buffered = b""
        ready: str | None = None
        with anyio.move_on_after(self.start_timeout_s) as deadline:
            while ready is None:
                try:
                    buffered += await process.stdout.receive()
                except anyio.EndOfStream:
                    break
                lines = buffered.split(b"\n")
                buffered = lines.pop()
                ready = next(
                    (x.decode(errors="replace") for x in lines if x.startswith(READY_PREFIX.encode())), None
                )
        info: dict[str, Any] | None = None
        if ready is not None:
            with contextlib.suppress(ValueError):
                info = json.loads(ready.removeprefix(READY_PREFIX))
        if info is None or "url" not in info or "version" not in info:
            await self._terminate()
            why = (
                f"did not serve within {self.start_timeout_s:g} s" if deadline.cancelled_caught else "exited"
            )
            where = f"; its log: {self.log_path}" if self.log_path is not None else ""
            raise ModelConnectionError(f"rollout server {self.index} {why} before it served{where}")
        self.rebind(str(info["url"]))
        self._version = int(info["version"])
        self._drainer = asyncio.get_running_loop().create_task(_drain(process))
        self._up = True

    async def _watch(self) -> None:
        """Restart the process whenever it dies, from the newest published weights; failed starts are retried
        with a growing pause until ``max_restarts`` starts were tried."""
        pause = 1.0
        while not self._stopping:
            process = self._process
            if process is not None:
                code = await process.wait()
                self._up = False
                if self._stopping:
                    return
                logger.warning("rollout server %d died (exit %s)", self.index, code)
            if self.restarts >= self.max_restarts:
                logger.error("rollout server %d: %d restarts tried, left dead", self.index, self.restarts)
                self._process = None
                return
            self.restarts += 1
            try:
                found = await anyio.to_thread.run_sync(self.publisher.newest) if self.publisher else None
                weights, version = found[1] if found else None, found[0] if found else self._initial_version
                await self._launch(weights, version)
                await self.catch_up()
                pause = 1.0
            except Exception:
                logger.exception("rollout server %d: restart %d failed", self.index, self.restarts)
                self._process = None
                await anyio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def update_weights(self, state_dict: Any, version: int) -> None:
        """As :meth:`RemoteRolloutServer.update_weights`; while the process is down (dead, or restarting) the
        update is left to the restart, which loads the newest published version."""
        try:
            await super().update_weights(state_dict, version)
        except ModelConnectionError:
            process = self._process
            if process is not None and self._up:
                with anyio.move_on_after(2):  # a refused connection: has the process died?
                    await process.wait()
                self._up = process.returncode is None
            if self._stopping or self._up:
                raise
            logger.warning(
                "rollout server %d is down: it will load version %d when it restarts", self.index, version
            )


def _open_log(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")


async def _drain(process: anyio.abc.Process) -> None:
    """Read and drop what the server prints on stdout after its ready line (a full pipe would block it)."""
    if process.stdout is None:
        return
    with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        while True:
            await process.stdout.receive()
