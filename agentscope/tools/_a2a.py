"""A remote A2A agent, seen from here, and as a tool of a local agent, through the ``a2a-sdk`` client (the ``serve``
extra).

::

    weather = A2AAgent("http://127.0.0.1:8001", api_key="...")
    toolkit.register(weather.as_tool(name="weather", description="Answers weather questions."))
    # the model calls weather(message="...") and gets the remote agent's answer

The agent card (``/.well-known/agent-card.json``) is read on first use; a message goes with ``SendMessage`` (a
blocking call) and the answer's text comes back: a message's text parts, or a finished task's artifacts (else its
status message). The object keeps the A2A context id of its first answer and sends it with later calls, so the
remote agent remembers the earlier calls (an ``agentscope serve`` agent keeps the context as its session). A task
that failed, was rejected or cancelled, or a server that cannot be reached, is a
:class:`~agentscope.exceptions.ModelRetry` naming the agent: a tool error the model sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
from a2a.client import A2ACardResolver, A2AClientError, ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text
from a2a.types import AgentCard, Message, Part, Role, SendMessageRequest, Task, TaskState

from agentscope.exceptions import ModelRetry, UsageError

__all__ = ["A2AAgent"]

_ANSWERED = frozenset({TaskState.TASK_STATE_COMPLETED})
_WAITING = frozenset({TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED})


class A2AAgent:
    """A remote A2A agent, seen from here: :meth:`ask` it something, or give it to a local agent as a tool
    (:meth:`as_tool`).

    Args:
        url: The agent's base URL (where ``/.well-known/agent-card.json`` is).
        api_key: Sent as ``Authorization: Bearer <key>`` (an ``agentscope serve`` API key).
        headers: More HTTP headers for every request.
        timeout_s: Seconds one call may take (the remote agent's whole reply).
        keep_context: Continue the remote conversation across calls (the A2A context id of the first answer);
            ``False``: every call starts a new one.

    Raises:
        UsageError: the URL is not http(s).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 120.0,
        keep_context: bool = True,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"the A2A agent's URL must start with http:// or https://, not {url!r}")
        self.url = url
        self.headers = dict(headers or {})
        if api_key is not None:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self.keep_context = keep_context
        self.context_id: str | None = None
        """The remote conversation this object continues (set by its first answer)."""
        self._task_id: str | None = None  # a task waiting for input, continued by the next call
        self._card: AgentCard | None = None

    def __repr__(self) -> str:
        return f"A2AAgent({self.url!r})"

    async def card(self) -> AgentCard:
        """The remote agent card (read once).

        Raises:
            ModelRetry: the card cannot be read.
        """
        if self._card is None:
            try:
                async with httpx.AsyncClient(headers=self.headers, timeout=self.timeout_s) as http:
                    self._card = await A2ACardResolver(http, self.url).get_agent_card()
            except (A2AClientError, httpx.HTTPError) as exc:
                raise ModelRetry(f"the A2A agent at {self.url} could not be reached: {exc}") from exc
        return self._card

    def as_tool(
        self, *, name: str | None = None, description: str | None = None
    ) -> Callable[[str], Awaitable[str]]:
        """This agent as a function a local agent can call: ``toolkit.register(remote.as_tool(name="..."))``.

        The calling model sends a ``message``; the result is the remote agent's answer (see :meth:`ask`).

        Args:
            name: The tool's name; default ``ask_<the card's name>`` when the card was read (:meth:`card`), else
                ``ask_remote_agent``.
            description: What the model is told; default the card's description, else a line naming the URL.
        """
        card = self._card
        tool_name = name or f"ask_{_identifier(card.name if card is not None else 'remote agent')}"
        doc = (
            description
            or (card.description if card is not None else "")
            or f"Ask the A2A agent at {self.url}."
        )
        remote = self

        async def ask_agent(message: str) -> str:
            return await remote.ask(message)

        ask_agent.__name__ = tool_name
        ask_agent.__qualname__ = tool_name
        ask_agent.__doc__ = f"{doc}\n\nArgs:\n    message: What to ask or tell the agent, in full sentences."
        return ask_agent

    async def ask(self, message: str) -> str:
        """Send ``message`` (in this object's conversation) and return the answer's text.

        Raises:
            ModelRetry: the agent cannot be reached, sent no answer, or its task failed, was rejected or
                cancelled (a tool's caller shows the model the message, which names the agent).
        """
        card = await self.card()
        try:
            async with httpx.AsyncClient(headers=self.headers, timeout=self.timeout_s) as http:
                client = await create_client(card, ClientConfig(httpx_client=http, streaming=False))
                request = SendMessageRequest(
                    message=Message(
                        role=Role.ROLE_USER,
                        message_id=uuid.uuid4().hex,
                        parts=[Part(text=message)],
                        context_id=self.context_id or "",
                        task_id=self._task_id or "",
                    )
                )
                answer: Message | Task | None = None
                async for event in client.send_message(request):
                    if event.HasField("message"):
                        answer = event.message
                    elif event.HasField("task"):
                        answer = event.task
        except (A2AClientError, httpx.HTTPError) as exc:
            raise ModelRetry(f"the agent {card.name!r} at {self.url} could not be reached: {exc}") from exc
        if answer is None:
            raise ModelRetry(f"the agent {card.name!r} sent no answer")
        if self.keep_context and answer.context_id:
            self.context_id = answer.context_id
        if isinstance(answer, Message):
            return get_message_text(answer)
        return self._task_answer(card.name, answer)

    def _task_answer(self, name: str, task: Task) -> str:
        state = task.status.state
        said = get_message_text(task.status.message) if task.status.HasField("message") else ""
        self._task_id = task.id if state in _WAITING else None
        if state in _ANSWERED:
            text = "\n".join(get_artifact_text(artifact) for artifact in task.artifacts)
            return text or said
        if state in _WAITING:
            return said or f"the agent {name!r} needs more input"
        reason = f": {said}" if said else ""
        raise ModelRetry(f"the agent {name!r} ended its task {TaskState.Name(state)}{reason}")


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    return cleaned or "agent"
