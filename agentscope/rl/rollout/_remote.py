"""RemoteRolloutServer: a rollout server in another process, driven over its HTTP app as if it were local.

It is what a :class:`~agentscope.rl.rollout.RolloutRouter` and the scheduler see of a server they do not hold in
memory (a subprocess, a Ray actor, another machine): chat, sessions, weights and stats, over the routes of
:func:`~agentscope.rl.rollout.create_rollout_app`.

The turns of a session are collected here, from each answer's token fields (prompt and completion ids, log-probs,
policy versions, exactly the server's own record), so :meth:`close_session` returns them without a round trip
and the server's copy is dropped in the background. A chat is sent once, never retried: the server records the
turn as it answers, and a retry would record it twice; a failure reaches the episode as a
:class:`~agentscope.exceptions.ModelError` (the environment cluster marks it ``failed_infra``), except a prompt the
server's context cannot hold (a 400 with code ``context_length_exceeded``), which comes back as
:class:`~agentscope.exceptions.ContextLengthExceeded` (the cluster truncates the episode).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx2

from agentscope._json import error_code
from agentscope.context import INVALID_ARGUMENTS_KEY
from agentscope.exceptions import (
    ContextLengthExceeded,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelResponseError,
    ModelTimeoutError,
    SessionError,
)
from agentscope.formatters import format_openai_request, parse_openai_response
from agentscope.message import Msg, ToolUseBlock, new_id
from agentscope.models import ChatResponse, ModelSettings, ToolSchema
from agentscope.rl._types import Turn
from agentscope.rl.rollout._answers import error_message, json_object
from agentscope.rl.rollout._service import count_prompt_tokens
from agentscope.rl.rollout._weights import WeightPublisher

if TYPE_CHECKING:
    import torch

    from agentscope.rl.policy import ChatTokenizer, TokenizerLike

__all__ = ["RemoteRolloutServer"]

logger = logging.getLogger(__name__)

_STATS_EVERY_S = 1.0
"""Least time between two refreshes of the cached stats."""

_DROP_DELAY_S = 0.2
"""How long a closed session waits to be dropped on the server, together with the others closed meanwhile: one
request for many episodes instead of one each (an episode of three turns made a quarter of all requests)."""


class RemoteRolloutServer:
    """A rollout server served elsewhere (:class:`RolloutHTTPServer`, ``create_rollout_app`` under any ASGI
    server), as a router's server and the scheduler's weight receiver.

    :meth:`update_weights` publishes the version once through ``publisher`` (every server of a run shares one)
    and asks the server to load it: by path when the server reads the same disk (the default), or by uploading
    the file (``upload=True``). It returns once the new weights serve there.

    Subclasses that own the server (a process, a Ray actor) replace it when it dies: they :meth:`rebind` to the
    replacement, count it in :attr:`restarts` and :meth:`catch_up` with the newest published weights.

    Args:
        base_url: The app's address (``http://host:port``; a trailing ``/v1`` is accepted).
        publisher: Where versions are written (needed for :meth:`update_weights` only).
        tokenizer: The policy's tokenizer, for :meth:`count_tokens` (a context budget); None: not available.
        version: The version the server starts with (until an answer or :meth:`refresh` says otherwise).
        upload: Send weight files' bytes instead of their paths.
        timeout_s: Longest a chat or weight update may take.
        model_name: Reported as ``model`` in responses.
        token: The server's bearer token (``AGENTSCOPE_ROLLOUT_TOKEN`` where it runs), sent with every request.
        max_connections: Requests in flight to the server at once.
    """

    def __init__(
        self,
        base_url: str,
        publisher: WeightPublisher | None = None,
        *,
        tokenizer: TokenizerLike | None = None,
        version: int = 0,
        upload: bool = False,
        timeout_s: float = 300.0,
        model_name: str = "policy",
        token: str | None = None,
        max_connections: int = 512,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        """The app's root address."""
        self.publisher = publisher
        self.upload = upload
        self.model_name = model_name
        self.restarts = 0
        """How many times the server was replaced (a restarted process or actor)."""
        self._token = token
        self._tokenizer = tokenizer
        self._counter: ChatTokenizer | None = None
        self._version = version
        self._reachable = True
        self._client = httpx2.AsyncClient(
            timeout=timeout_s,
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=64),
            headers={"authorization": f"Bearer {token}"} if token else None,
        )
        self._sessions: dict[str, list[Turn]] = {}
        self._to_drop: list[str] = []
        self._dropper: asyncio.Task[None] | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        self._stats: dict[str, float] = {}
        self._stats_at = -1e9

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, version={self._version})"

    async def __aenter__(self) -> RemoteRolloutServer:
        try:
            await self.refresh()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send the session drops still waiting, wait for the background requests (stats) and close the HTTP
        client. Sessions closed after this are not dropped on the server (logged)."""
        self._closed = True
        if self._dropper is None:  # else it sends what waits, and aclose waits for it below
            await self._send_drops()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._client.aclose()

    def rebind(self, base_url: str) -> None:
        """Talk to a replacement server at ``base_url`` from now on. The old one's sessions are gone: an episode
        that recorded a turn there fails at its next call (the server answers 404 for a session it does not
        hold), so no episode goes on on a server that did not see its beginning."""
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._reachable = True

    def connection(self) -> tuple[str, str | None]:
        """The server's address now and its bearer token: what another process (an environment actor) needs to
        talk to it. The token is a secret: never log it."""
        return self.base_url, self._token

    @property
    def available(self) -> bool:
        """Whether new episodes should come here: False after a refused connection, until the server answers
        again (a router gives new sessions to available servers first)."""
        return self._reachable

    async def catch_up(self) -> None:
        """Load the newest published version when it is newer than the one serving (after a restart: updates
        made while the server was down were left to this).

        Raises:
            ModelError: the server could not be reached or refused the weights.
        """
        publisher = self.publisher
        if publisher is None:
            return
        found = await anyio.to_thread.run_sync(publisher.newest)
        if found is not None and found[0] > self._version:
            await self._request(
                "POST", "/weights", json={"version": found[0], "path": str(found[1])}, allow=(409,)
            )
            self._version = found[0]

    # ------------------------------------------------------------------ sessions

    def open_session(self, session_id: str | None = None) -> str:
        """Start recording a conversation (the server opens it with the first chat); returns its id."""
        sid = session_id or new_id()
        self._sessions.setdefault(sid, [])
        return sid

    def close_session(self, session_id: str) -> list[Turn]:
        """Stop recording and return the session's turns in order; the server drops its copy in the background.

        Raises:
            SessionError: no such session.
        """
        turns = self._sessions.pop(session_id, None)
        if turns is None:
            raise SessionError(f"no rollout session {session_id!r}")
        # Always: a first call cut short (an aborted episode) may have opened it there without a turn here.
        self._drop_soon(session_id)
        return turns

    def session_turns(self, session_id: str) -> list[Turn]:
        """The turns recorded so far (the session stays open)."""
        turns = self._sessions.get(session_id)
        if turns is None:
            raise SessionError(f"no rollout session {session_id!r}; open it with open_session()")
        return list(turns)

    @property
    def sessions(self) -> list[str]:
        """Ids of the open sessions."""
        return list(self._sessions)

    async def drop_session(self, session_id: str) -> None:
        """Have the server forget a session it may hold (its copy of the turns), best effort: for a session whose
        recorder is gone (an environment actor that died). Sent within about 0.2 s, in one request with the other
        sessions closed meanwhile; :meth:`aclose` sends what is left."""
        self._drop_soon(session_id)

    def _drop_soon(self, session_id: str) -> None:
        if self._closed:
            logger.debug("session %s closed after its client: not dropped on %s", session_id, self.base_url)
            return
        self._to_drop.append(session_id)
        if self._dropper is None:
            self._dropper = self._spawn(self._drop_after_delay())

    async def _drop_after_delay(self) -> None:
        try:
            await asyncio.sleep(_DROP_DELAY_S)
        finally:  # cancelled too: what waits goes now
            self._dropper = None  # a session closed from now on starts the next batch
            await asyncio.shield(self._send_drops())

    async def _send_drops(self) -> None:
        ids, self._to_drop = self._to_drop, []
        if not ids:
            return
        url = f"{self.base_url}/sessions/drop"
        try:
            answer = await self._client.post(url, json={"session_ids": ids})
            if answer.status_code in (404, 405):  # a server from before POST /sessions/drop
                for session_id in ids:
                    await self._client.delete(f"{self.base_url}/sessions/{session_id}")
            elif answer.status_code >= 400:
                logger.warning(
                    "the rollout server at %s refused to drop %d sessions (HTTP %d): they stay in its memory",
                    self.base_url,
                    len(ids),
                    answer.status_code,
                )
        except httpx2.HTTPError as exc:  # the server is gone: so are its sessions
            logger.debug("dropping %d sessions on %s failed: %r", len(ids), self.base_url, exc)

    # ------------------------------------------------------------------ chat

    async def chat(
        self,
        session_id: str | None,
        messages: Sequence[Msg],
        *,
        tools: Sequence[ToolSchema] | None = None,
        settings: ModelSettings | None = None,
    ) -> ChatResponse:
        """Generate the policy's next message on the server, recording the turn in the session (as
        :meth:`RolloutService.chat`).

        Raises:
            SessionError: the session is not open here.
            ModelError: the server could not be reached, answered an error, or no longer holds the session (a
                replacement server).
        """
        turns: list[Turn] | None = None
        if session_id is not None:
            turns = self._sessions.get(session_id)
            if turns is None:
                raise SessionError(f"no rollout session {session_id!r}; open it with open_session()")
        body = format_openai_request(
            self.model_name, _verbatim_calls(messages), tools=tools, settings=settings
        )
        if session_id is not None:
            body["session_id"] = session_id
            if turns:
                body["session_continues"] = (
                    True  # the server must hold it: not a replacement that never saw it
                )
        data = json_object(await self._request("POST", "/v1/chat/completions", json=body))
        try:
            response = parse_openai_response(data)
        except (ModelError, ValueError, TypeError, KeyError) as exc:
            raise ModelResponseError(
                f"rollout server {self.base_url} answered {str(data)[:300]!r}: {exc}"
            ) from exc
        head = data.get("version_head")
        tail = response.policy_version
        if not isinstance(head, int) or tail is None or response.prompt_token_ids is None:
            raise ModelResponseError(
                f"rollout server {self.base_url} answered without token fields: {str(data)[:300]!r}"
            )
        self._version = max(self._version, tail)
        response.metadata.update({"version_head": head, "session_id": session_id})
        if turns is not None:
            turns.append(
                Turn(
                    prompt_ids=response.prompt_token_ids,
                    completion_ids=response.completion_token_ids or [],
                    logprobs=response.logprobs or [],
                    version_head=head,
                    version_tail=tail,
                    finish_reason=response.finish_reason,
                )
            )
        return response

    def count_tokens(self, messages: Sequence[Msg], tools: Sequence[ToolSchema] | None = None) -> int:
        """How many token ids the prompt of a call has (needs the ``tokenizer`` given at construction)."""
        if self._tokenizer is None:
            raise ModelError(
                "count_tokens needs the policy's tokenizer: pass tokenizer= to RemoteRolloutServer"
            )
        if self._counter is None:
            from agentscope.rl.policy import ChatTokenizer

            self._counter = ChatTokenizer(self._tokenizer)
        return count_prompt_tokens(self._counter, messages, tools)

    # ------------------------------------------------------------------ weights and stats

    @property
    def version(self) -> int:
        """The newest version this server is known to serve."""
        return self._version

    def note_version(self, version: int) -> None:
        """Learn that the server serves ``version`` (or a newer one), from whoever updated it: a client in another
        process (an environment actor) hears of updates only this way or from its own answers."""
        self._version = max(self._version, version)

    async def refresh(self) -> None:
        """Read the server's version and stats now.

        Raises:
            ModelError: the server could not be reached or answered an error.
        """
        answer = json_object(await self._request("GET", "/weights"))
        version = answer.get("version")
        if not isinstance(version, int):
            raise ModelResponseError(f"rollout server {self.base_url} answered {answer!r} for its version")
        self._version = max(self._version, version)
        await self._refresh_stats()

    async def _refresh_stats(self) -> None:
        self._stats_at = time.monotonic()
        try:
            answer = await self._client.get(f"{self.base_url}/stats")
            if answer.status_code == 200:
                self._stats = {k: float(v) for k, v in answer.json().items()}
        except (httpx2.HTTPError, ValueError, TypeError, AttributeError) as exc:
            logger.debug("reading the stats of %s failed: %r", self.base_url, exc)

    def stats(self) -> dict[str, float]:
        """The server's stats as last read (refreshed in the background at most every second), with
        ``rollout/sessions`` and ``rollout/policy_version`` as this side knows them and
        ``rollout/server_restarts``."""
        if time.monotonic() - self._stats_at >= _STATS_EVERY_S:
            self._stats_at = time.monotonic()
            self._spawn(self._refresh_stats())
        stats = dict(self._stats)
        stats["rollout/sessions"] = float(len(self._sessions))
        stats["rollout/policy_version"] = float(self._version)
        stats["rollout/server_restarts"] = float(self.restarts)
        return stats

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Serve ``state_dict`` as ``version`` there. A server already serving this version or a newer one keeps
        it (a late update never rolls it back).

        Raises:
            ModelError: the server could not be reached or refused the weights (its message included).
        """
        if self.publisher is None:
            raise ModelError(f"{self!r} has no WeightPublisher: pass publisher= to update its weights")
        path = await anyio.to_thread.run_sync(self.publisher.publish, state_dict, version)
        if self.upload:
            content = await anyio.to_thread.run_sync(Path(path).read_bytes)
            answer = await self._request(
                "POST",
                "/weights",
                params={"version": version},
                content=content,
                headers={"content-type": "application/octet-stream"},
                allow=(409,),
            )
        else:
            answer = await self._request(
                "POST", "/weights", json={"version": version, "path": str(path)}, allow=(409,)
            )
        if answer.status_code == 409:
            logger.debug("%s already serves version %d or newer: %s", self.base_url, version, answer.text)
        self._version = max(self._version, version)

    async def _request(
        self, method: str, url: str, *, allow: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx2.Response:
        try:
            answer = await self._client.request(method, f"{self.base_url}{url}", **kwargs)
        except httpx2.TimeoutException as exc:
            raise ModelTimeoutError(
                f"rollout server {self.base_url} did not answer in time: {exc!r}"
            ) from exc
        except httpx2.HTTPError as exc:
            self._reachable = False
            raise ModelConnectionError(f"rollout server {self.base_url} unreachable: {exc!r}") from exc
        self._reachable = True
        if answer.status_code >= 400 and answer.status_code not in allow:
            if answer.status_code == 400 and error_code(answer.text) == ContextLengthExceeded.OPENAI_CODE:
                raise ContextLengthExceeded(f"rollout server {self.base_url}: {error_message(answer)}")
            raise ModelHTTPError(
                f"rollout server {self.base_url} answered {answer.status_code}: {error_message(answer)}",
                status_code=answer.status_code,
            )
        return answer

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _verbatim_calls(messages: Sequence[Msg]) -> Sequence[Msg]:
    """``messages`` with each repaired call's arguments as the policy wrote them.

    An agent's history keeps a malformed call as ``{}`` with the text beside it in the metadata (hosted providers
    reject malformed arguments); the rollout server is ours and takes them, so the prompt it renders is the
    tokens the policy generated, as in process (else the session could not extend its ids)."""
    if not any(INVALID_ARGUMENTS_KEY in m.metadata for m in messages):
        return messages
    out: list[Msg] = []
    for msg in messages:
        raw = msg.metadata.get(INVALID_ARGUMENTS_KEY)
        if isinstance(raw, dict):
            blocks = [
                b.model_copy(update={"raw_input": text})
                if isinstance(b, ToolUseBlock) and not b.input and isinstance(text := raw.get(b.id), str)
                else b
                for b in msg.blocks
            ]
            msg = msg.model_copy(update={"content": blocks})
        out.append(msg)
    return out
