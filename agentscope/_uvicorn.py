"""One way to serve an ASGI app with uvicorn in the background: on a socket bound first, in a thread of its own or
as a task of the running event loop, and stopped at once when asked.

Used by the provider test servers (:mod:`agentscope.testing`, each in its own thread) and the rollout service's
HTTP server (a task on the service's event loop, which the app must share). uvicorn is imported when a server
starts, so importing this module stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from agentscope._net import is_loopback_host

if TYPE_CHECKING:
    import uvicorn

__all__ = ["BackgroundServer"]

_START_TIMEOUT_S = 10.0


class _Server(Protocol):
    """The parts of our ``uvicorn.Server`` subclass that :class:`BackgroundServer` uses."""

    started: bool

    def run(self, sockets: list[socket.socket] | None = None) -> None: ...

    async def serve(self, sockets: list[socket.socket] | None = None) -> None: ...

    def request_exit(self) -> None: ...


class BackgroundServer:
    """``app`` served by uvicorn on ``host:port`` (port 0: a free one) while the rest of the program runs.

    Either :meth:`start` / :meth:`stop` (a thread with its own event loop; for apps that share no state with the
    caller's loop) or :meth:`astart` / :meth:`astop` (a task of the running loop; for apps that call objects
    living on that loop). :attr:`port` holds the bound port once started.

    Args:
        app: The ASGI 3 application.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        name: Names the thread and the errors.
        install_hint: What to install when uvicorn is missing, e.g. ``pip install -e '.[serve]'``.
        allow_remote: Bind a host other machines can reach. These servers check no credentials, so this is refused
            unless asked for (where a network policy or a private network protects the port).

    Raises:
        ValueError: ``host`` is not a loopback address and ``allow_remote`` is False.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "uvicorn",
        install_hint: str = "pip install -e '.[serve]'",
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback_host(host):
            raise ValueError(
                f"{name} would listen on {host}, reachable from other machines, and it checks no credentials: "
                "bind 127.0.0.1, or pass allow_remote=True where a network policy protects the port"
            )
        self.app = app
        self.host = host
        self.port = port
        """The bound port once started (the requested one before)."""
        self.name = name
        self._install_hint = install_hint
        self._server: _Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    def _prepare(self, sock: socket.socket) -> _Server:
        self.port = sock.getsockname()[1]
        server = _server_class()(_config(self.app))
        self._server, self._socket = server, sock
        return server

    def _check_startable(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already running")
        try:
            importlib.import_module("uvicorn")
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(f"{self.name} needs uvicorn: {self._install_hint}") from exc

    # -- in a thread ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a new daemon thread; return once the server accepts connections (blocking)."""
        self._check_startable()
        sock = _bind(self.host, self.port)
        server = self._prepare(sock)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"{self.name}:{self.port}", daemon=True
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end (blocking). Safe to call more than once."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.request_exit()
        if thread is not None:
            thread.join(timeout=_START_TIMEOUT_S)
        if sock is not None:
            sock.close()

    # -- on the running event loop -------------------------------------------------------------------------------

    async def astart(self) -> None:
        """Serve as a task of the running event loop; return once the server accepts connections."""
        self._check_startable()
        sock = await anyio.to_thread.run_sync(_bind, self.host, self.port)
        server = self._prepare(sock)
        task = self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                self._task = None  # its outcome is raised here, not by astop
                await self.astop()
                await task
                raise RuntimeError(f"{self.name} did not start")
            await asyncio.sleep(0.005)

    async def astop(self) -> None:
        """Stop serving and wait for the server task to end. Safe to call more than once."""
        server, task, sock = self._server, self._task, self._socket
        self._server = self._task = self._socket = None
        if server is not None:
            server.request_exit()
        if task is not None:
            await task
        if sock is not None:
            sock.close()


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it every
    # response pays a 40 ms delayed-ACK stall.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _config(app: Callable[..., Any]) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        interface="asgi3",
        ws="none",
        loop="asyncio",
        timeout_graceful_shutdown=1,
    )


@functools.cache
def _server_class() -> Callable[[uvicorn.Config], _Server]:
    import uvicorn

    class _FastExitServer(uvicorn.Server):
        """A uvicorn server that stops as soon as asked (the stock one polls ``should_exit`` every 0.1 s)."""

        _loop: asyncio.AbstractEventLoop | None = None
        _wake: asyncio.Event | None = None

        async def main_loop(self) -> None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000  # on_tick refreshes the Date header when counter % 10 == 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

        def request_exit(self) -> None:
            self.should_exit = True
            loop, wake = self._loop, self._wake
            if loop is not None and wake is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(wake.set)

    return _FastExitServer
