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
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import anyio.abc
import anyio.to_thread

from agentscope.exceptions import ModelConnectionError, ModelError
from agentscope.rl.rollout import RemoteRolloutServer, WeightPublisher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agentscope.rl._config import RLConfig
    from agentscope.rl.policy import TokenizerLike

__all__ = ["ProcessRolloutServer", "serve_rollout_server"]

logger = logging.getLogger(__name__)

READY_PREFIX = "agentscope-rollout-server "
"""Starts the one stdout line a server prints once it serves (then a JSON object: url, pid, version)."""


async def serve_rollout_server(
    config: RLConfig,
    model_dir: Path,
    *,
    index: int = 0,
    version: int = 0,
    weights: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[str], None] | None = None,
    until: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Serve rollout server ``index`` of ``config`` over HTTP until SIGTERM or SIGINT (or until ``until()``
    returns, when given: a server on a thread other than the main one cannot receive signals).

    Builds the service exactly as the in-process backend does (:func:`build_rollout_service`), starting from
    ``model_dir`` as policy ``version``, or from the weights file ``weights`` (as :class:`WeightPublisher` writes
    it) over it. ``ready`` receives the ready line (default: printed to stdout).
    """
    from agentscope.rl._components import build_rollout_service, load_policy_tokenizer
    from agentscope.rl.rollout import RolloutHTTPServer, load_weights

    tokenizer = await load_policy_tokenizer(model_dir, config.rollout.threads)
    service = build_rollout_service(
        config, model_dir, tokenizer, 0 if weights is not None else version, index=index
    )
    if weights is not None:
        state_dict = await anyio.to_thread.run_sync(load_weights, weights)
        await service.update_weights(state_dict, version)  # before start: applied to the loaded model
    async with service, RolloutHTTPServer(service, host=host, port=port) as server:
        line = READY_PREFIX + json.dumps(
            {"url": f"http://{server.host}:{server.port}", "pid": os.getpid(), "version": service.version}
        )
        (ready or _print_flushed)(line)
        await (until or _signalled)()


async def _signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


def _print_flushed(line: str) -> None:
    print(line, flush=True)


class ProcessRolloutServer(RemoteRolloutServer):
    """Rollout server ``index`` of a run, in a process of its own that this object starts, watches and restarts.

    Args:
        config_path: The run's resolved config (``config.yaml`` of the run directory).
        model_dir: The policy the server starts from.
        index: Which server of the run (its seed).
        version: The policy version of ``model_dir``.
        publisher: The run's weight publisher (updates, and the newest weights after a restart).
        tokenizer: The policy's tokenizer (for ``count_tokens``).
        log_path: Where the process's stderr goes (appended).
        start_timeout_s: Longest a start may take before it is an error.
        max_restarts: Restarts after which a dead server stays dead (its calls fail).
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
        super().__init__("http://127.0.0.1:0", publisher, tokenizer=tokenizer, version=version)
        self.config_path = config_path
        self.model_dir = model_dir
        self.index = index
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.max_restarts = max_restarts
        self.restarts = 0
        """How many times the process was restarted after it died."""
        self._initial_version = version
        self._process: anyio.abc.Process | None = None
        self._log: TextIO | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._stopping = False
        self._up = False
        """Whether the process printed its ready line and has not been seen to exit since."""

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"ProcessRolloutServer(index={self.index}, url={self.base_url!r}, pid={pid})"

    @property
    def pid(self) -> int | None:
        """The server process's id (None before it starts)."""
        return self._process.pid if self._process is not None else None

    async def __aenter__(self) -> ProcessRolloutServer:
        if self.log_path is not None:
            self._log = await anyio.to_thread.run_sync(_open_log, self.log_path)
        try:
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
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
            await self.aclose()
            await self._terminate()
            if self._log is not None:
                self._log.close()

    async def _terminate(self) -> None:
        process, self._process = self._process, None
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
        ]
        if weights is not None:
            command += ["--weights", str(weights)]
        return command

    async def _launch(self, weights: Path | None, version: int) -> None:
        process = await anyio.open_process(
            self._command(weights, version),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._process = process
        assert process.stdout is not None
        buffered = b""
        with anyio.move_on_after(self.start_timeout_s) as deadline:
            while b"\n" not in buffered:
                try:
                    buffered += await process.stdout.receive()
                except anyio.EndOfStream:
                    break
        line = buffered.split(b"\n", 1)[0].decode(errors="replace")
        if not line.startswith(READY_PREFIX):
            await self._terminate()
            why = (
                f"did not serve within {self.start_timeout_s:g} s" if deadline.cancelled_caught else "exited"
            )
            where = f"; its log: {self.log_path}" if self.log_path is not None else ""
            raise ModelConnectionError(f"rollout server {self.index} {why} (stdout: {line[:200]!r}){where}")
        info: dict[str, Any] = json.loads(line.removeprefix(READY_PREFIX))
        self.rebind(str(info["url"]))
        self._version = int(info["version"])
        self._drainer = asyncio.get_running_loop().create_task(_drain(process))
        self._up = True

    async def _watch(self) -> None:
        """Restart the process whenever it dies, from the newest published weights."""
        while not self._stopping:
            process = self._process
            if process is None:
                return
            code = await process.wait()
            self._up = False
            if self._stopping:
                return
            if self.restarts >= self.max_restarts:
                logger.error(
                    "rollout server %d died (exit %s) and was restarted %d times: left dead",
                    self.index,
                    code,
                    self.restarts,
                )
                return
            self.restarts += 1
            publisher = self.publisher
            newest = (await anyio.to_thread.run_sync(publisher.versions)) if publisher is not None else []
            weights = publisher.path(newest[-1]) if publisher is not None and newest else None
            version = newest[-1] if newest else self._initial_version
            logger.warning(
                "rollout server %d died (exit %s); restarting it at version %d", self.index, code, version
            )
            try:
                await self._launch(weights, version)
                await self._catch_up()
            except ModelError:
                logger.exception("restarting rollout server %d failed", self.index)

    async def _catch_up(self) -> None:
        """Load the newest published version if one appeared while the server restarted (its update failed)."""
        publisher = self.publisher
        if publisher is None:
            return
        newest = await anyio.to_thread.run_sync(publisher.versions)
        if newest and newest[-1] > self._version:
            await self._request(
                "POST",
                "/weights",
                json={"version": newest[-1], "path": str(publisher.path(newest[-1]))},
                allow=(409,),
            )
            self._version = newest[-1]

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

    def stats(self) -> dict[str, float]:
        """The server's stats, plus ``rollout/server_restarts``."""
        stats = super().stats()
        stats["rollout/server_restarts"] = float(self.restarts)
        return stats


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
