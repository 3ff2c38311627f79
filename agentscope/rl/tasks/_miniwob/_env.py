"""MiniWoBEnv: one MiniWoB++ episode at a time, in a fresh context of a shared Chromium, judged by the page itself.

An episode, as the benchmark's own runner (``miniwob.selenium_instance``) plays it, but in Playwright::

    open html/miniwob/<task>.html from this process's loopback server, in a new browser context (a warm one)
    Math.seedrandom(seed); core.setDataMode(mode); core.EPISODE_MAX_TIME = limit; core.startEpisodeReal()
    wait for WOB_TASK_READY
    ... the agent clicks, types, presses keys and selects options through the tools ...
    read WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL, WOB_REWARD_GLOBAL, WOB_REWARD_REASON

**Reward.** The episode's reward is the page's raw reward (``WOB_RAW_REWARD_GLOBAL``: 1 for a solved task, -1 for a
wrong action, partial credit in a few tasks) once the page says it is done, and 0 when the agent stops before
that (as the benchmark's gymnasium environment gives 0 until the episode is done). Success is a raw reward above
0. The time-scaled reward (``WOB_REWARD_GLOBAL``) is kept in the result's ``info`` as ``env_reward``.

**Time limit.** The benchmark gives each episode ``core.EPISODE_MAX_TIME`` of wall-clock time (10 s by default,
up to 20 s in some tasks) and ends it with reward -1 when it runs out; the clock runs while the policy thinks, and a
policy generating tokens on a CPU takes seconds per step, so those limits would fail episodes for the machine's
speed, not the agent's actions. The limit is therefore set explicitly, before every episode, to ``time_limit_s``
(default 300 s): far above any honest episode, so what bounds an episode is its step budget (the agent's
``max_iters`` and the cluster's ``max_turns``), plus the cluster's ``episode_timeout_s`` for wall time. Should
the page's limit still run out, the page ends the episode itself (raw reward -1, ``info['timed_out'] = 1``), as
in the benchmark. The time-scaled ``env_reward`` is computed by the page against this limit.

**Failures.** A page that crashes or closes (the renderer died, the context was closed) makes the environment
call :meth:`~agentscope.rl.envs.Environment.fail`: the episode ends as ``failed_infra`` and the cluster replaces
the environment. A Chromium process that died is relaunched by the next environment that needs it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from agentscope.exceptions import SandboxError
from agentscope.message import Base64Source, ImageBlock, Msg, TextBlock
from agentscope.rl._types import Task
from agentscope.rl.envs import Environment, EnvResult, Observation
from agentscope.rl.tasks._miniwob._render import PREPARE_JS, render_snapshot
from agentscope.rl.tasks._miniwob._server import serve_html, task_url, validate_task_names
from agentscope.sandbox import Browser, BrowserSession
from agentscope.tools import Toolkit, ToolResponse

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from playwright.async_api import Page

__all__ = ["INSTRUCTIONS", "MiniWoBEnv", "episode_of"]

INSTRUCTIONS = (
    "Do the web task below with the tools click, type, press and select, using the [ref=eN] of the page. "
    "When the episode is over, answer in a few words."
)
"""The line that opens every episode's first message."""

_LOADED_JS = (
    "() => typeof core !== 'undefined' && typeof genProblem === 'function' && core.cover_div !== null"
)
_START_JS = """([seed, mode, limit]) => {
  Math.seedrandom(seed);
  core.setDataMode(mode);
  core.EPISODE_MAX_TIME = limit;
  core.startEpisodeReal();
}"""
_TRACK_TIMERS_JS = """(() => {
  const pending = new Set();
  const setTimeout_ = window.setTimeout, clearTimeout_ = window.clearTimeout;
  Object.defineProperty(window, '__agentscopePendingTimers', {value: pending});
  window.setTimeout = function (callback, delay, ...rest) {
    if (typeof callback !== 'function' || Number(delay || 0) > 1000) {
      return setTimeout_.call(window, callback, delay, ...rest);
    }
    const id = setTimeout_.call(window, function (...args) {
      pending.delete(id);
      return callback.apply(this, args);
    }, delay, ...rest);
    pending.add(id);
    return id;
  };
  window.clearTimeout = function (id) {
    pending.delete(id);
    return clearTimeout_.call(window, id);
  };
})();"""
"""Installed in every task page before its scripts run: counts the page's pending short timers (up to 1 s), so
that an observation waits for what an action set in motion (a menu that opens on a hover delay, a search run
300 ms after typing). It changes no timer; the episode's own time-out (longer) is not counted."""
_SETTLED_JS = """() => WOB_DONE_GLOBAL || (
  !(window.__agentscopePendingTimers && window.__agentscopePendingTimers.size)
  && !(window.jQuery && window.jQuery.timers && window.jQuery.timers.length))"""
_SETTLE_MS = 1500
_BROKEN_WORDS = ("crashed", "has been closed", "Target closed", "browser has disconnected")


def episode_of(task: Task) -> tuple[str, int]:
    """The MiniWoB++ task name and seed of ``task`` (from its metadata ``task`` and ``seed``)."""
    name = task.metadata.get("task")
    seed = task.metadata.get("seed")
    if not isinstance(name, str) or not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(
            f"task {task.id!r} is not a MiniWoB++ episode: its metadata needs 'task' (a name) and 'seed' (an int); "
            "build tasks with miniwob_tasks() or the miniwob:... spec"
        )
    return name, seed


_SNAPSHOT_TIMEOUT_MS = 30_000


@dataclass(eq=False)
class _Shared:
    """The Chromium shared by the MiniWoB++ environments of one event loop."""

    warm_sessions: int
    browser: Browser | None = None
    users: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class _PageState:
    utterance: str = ""
    done: bool = False
    reward: float = 0.0
    raw: float = 0.0
    reason: str | None = None


class MiniWoBEnv(Environment):
    """A MiniWoB++ task played in Chromium through the browser sandbox (see the module docstring for the rules).

    Each episode opens a fresh context (its own cookies and storage) of one shared Chromium process: by default
    the process's shared :class:`~agentscope.sandbox.Browser`, started by the first environment that needs it
    (with ``warm_sessions`` contexts kept ready), closed when the last one closes; or ``browser``, which the caller
    owns. The page may reach the MiniWoB++ server's origin and nothing else.

    The agent sees the instruction and a compact accessibility tree of the task area with element refs
    (``agentscope.rl.tasks._miniwob._render``), plus a screenshot of the task area when ``screenshots`` is set,
    and acts with four tools: ``click(ref)``, ``type(ref, text)``, ``press(key)`` and ``select(ref, option)``.
    Each returns the next observation, or says that the episode is over (and refuses to act after that).

    Args:
        browser: A started Browser to open the episodes' contexts in (default: the shared one).
        screenshots: Add a PNG of the task area to every observation (for vision policies).
        time_limit_s: The page's episode time limit (``core.EPISODE_MAX_TIME``), set before every episode.
        action_timeout_s: Longest an action waits for its element (to be visible, enabled and unobscured).
        load_timeout_s: Longest the task page may take to load and start.
        data_mode: The benchmark's data mode (``core.setDataMode``), ``train`` or ``test``; only the
            ``*-transfer`` tasks read it.
        warm_sessions: Contexts the shared Browser keeps ready (used when ``browser`` is None).
    """

    def __init__(
        self,
        *,
        browser: Browser | None = None,
        screenshots: bool = False,
        time_limit_s: float = 300.0,
        action_timeout_s: float = 2.0,
        load_timeout_s: float = 15.0,
        data_mode: str = "train",
        warm_sessions: int = 2,
    ) -> None:
        super().__init__()
        for label, value in (
            ("time_limit_s", time_limit_s),
            ("action_timeout_s", action_timeout_s),
            ("load_timeout_s", load_timeout_s),
        ):
            if value <= 0:
                raise ValueError(f"MiniWoBEnv: {label} must be positive, got {value}")
        if data_mode not in ("train", "test"):
            raise ValueError(f"MiniWoBEnv: data_mode must be 'train' or 'test', got {data_mode!r}")
        self.screenshots = screenshots
        """Whether observations carry a screenshot."""
        self.time_limit_s = time_limit_s
        """The page's episode time limit, in seconds."""
        self.action_timeout_s = action_timeout_s
        """Longest an action waits for its element."""
        self.load_timeout_s = load_timeout_s
        """Longest a task page may take to start."""
        self.data_mode = data_mode
        """The benchmark's data mode."""
        self._own_browser = browser
        self._warm_sessions = warm_sessions
        self._shared: _Shared | None = None
        self._shared_loop: asyncio.AbstractEventLoop | None = None
        self._session: BrowserSession | None = None
        self._state = _PageState()
        self._broken: str | None = None
        self._task: tuple[str, int] | None = None
        self._steps = 0

    # ------------------------------------------------------------------ the browser

    async def _browser(self) -> Browser:
        if self._own_browser is not None:
            if not self._own_browser.is_running:
                raise SandboxError("the Browser given to MiniWoBEnv is not running (start it, or pass none)")
            return self._own_browser
        if self._shared is None:
            loop = asyncio.get_running_loop()
            shared = _SHARED.get(loop)
            if shared is None:
                shared = _SHARED[loop] = _Shared(self._warm_sessions)
            shared.users += 1
            self._shared, self._shared_loop = shared, loop
        shared = self._shared
        async with shared.lock:
            if shared.browser is None or not shared.browser.is_running:
                if shared.browser is not None:  # Chromium died: relaunch it
                    await shared.browser.aclose()
                    shared.browser = None
                browser = Browser(warm_sessions=shared.warm_sessions)
                await browser.start()
                shared.browser = browser
            return shared.browser

    async def _release_shared(self) -> None:
        shared, loop = self._shared, self._shared_loop
        self._shared = self._shared_loop = None
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        if loop is not None and _SHARED.get(loop) is shared:
            del _SHARED[loop]
        if shared.browser is not None:
            await shared.browser.aclose()

    # ------------------------------------------------------------------ episodes

    async def reset(self, task: Task) -> Observation:
        name, seed = episode_of(task)
        await anyio.to_thread.run_sync(validate_task_names, [name])
        await self._end_session()
        origin = await serve_html()
        browser = await self._browser()
        session = await browser.new_session(allowed_origins=[origin])
        self._session, self._broken, self._task = session, None, (name, seed)
        self._state, self._steps = _PageState(), 0
        page = session.page
        page.on("crash", lambda _page: self._mark_broken(session, "the task page crashed"))
        page.on("close", lambda _page: self._mark_broken(session, "the task page was closed"))
        page.set_default_timeout(self.action_timeout_s * 1000)
        await session.context.add_init_script(_TRACK_TIMERS_JS)
        load_ms = self.load_timeout_s * 1000
        await page.goto(task_url(origin, name), wait_until="load", timeout=load_ms)
        await page.wait_for_function(_LOADED_JS, timeout=load_ms)
        await page.evaluate(_START_JS, [seed, self.data_mode, round(self.time_limit_s * 1000)])
        await page.wait_for_function("() => WOB_TASK_READY", timeout=load_ms)
        await self._settle(page)
        first = await self._observe()
        blocks = [TextBlock(text=f"{INSTRUCTIONS}\n{first.text_content}")]
        blocks += [b for b in first.content if isinstance(b, ImageBlock)]
        toolkit = Toolkit()
        for tool in (self.click, self.type, self.press, self.select):
            toolkit.register(tool)
        return Observation(msg=Msg(role="user", name="user", content=list(blocks)), toolkit=toolkit)

    async def evaluate(self, reply: Msg) -> EnvResult:
        if self._session is None or self._task is None:
            raise RuntimeError("evaluate() before reset()")
        try:
            self._check_page()
            try:
                state = await self._read_state(self._session.page)
            except Exception as exc:
                self._check_page(exc)
                raise
        finally:
            await self._end_session()
        reward = state.raw if state.done else 0.0
        return EnvResult(
            reward=reward,
            success=state.done and state.raw > 0,
            info={
                "task": self._task[0],
                "seed": self._task[1],
                "done": 1.0 if state.done else 0.0,
                "raw_reward": state.raw if state.done else 0.0,
                "env_reward": state.reward if state.done else 0.0,
                "timed_out": 1.0 if state.done and state.reason == "timed out" else 0.0,
                "actions": self._steps,
            },
        )

    async def close(self) -> None:
        await self._end_session()
        await self._release_shared()

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.aclose()

    def _mark_broken(self, session: BrowserSession, reason: str) -> None:
        if self._session is session and self._broken is None:
            self._broken = reason

    def _check_page(self, exc: BaseException | None = None) -> None:
        """Fail the environment when the page is gone (crashed, closed); ``exc`` is the error that showed it."""
        session = self._session
        reason = self._broken
        if reason is None and session is not None and session.page.is_closed():
            reason = "the task page was closed"
        if reason is None and exc is not None and any(w in str(exc) for w in _BROKEN_WORDS):
            reason = f"the browser failed: {str(exc).splitlines()[0]}"
        if reason is None and session is None:
            reason = "no episode is running"
        if reason is not None:
            self.fail(reason)

    # ------------------------------------------------------------------ observations

    async def _read_state(self, page: Page) -> _PageState:
        raw: dict[str, Any] = await page.evaluate(PREPARE_JS)
        self._state = _PageState(
            utterance=str(raw.get("utterance") or ""),
            done=bool(raw.get("done")),
            reward=float(raw.get("reward") or 0.0),
            raw=float(raw.get("raw") or 0.0),
            reason=raw.get("reason"),
        )
        return self._state

    async def _observe(self, note: str = "", *, is_error: bool = False) -> ToolResponse:
        session = self._session
        assert session is not None
        page = session.page
        state = await self._read_state(page)
        head = f"{note}\n" if note else ""
        if state.done:
            return ToolResponse(content=[TextBlock(text=head + self._over())], metadata={"done": True})
        # An observation, not an action waiting for its element: the page's 2 s action timeout is too short for
        # a snapshot on a loaded 2-core machine (it failed tests there with four pages at once).
        snapshot = await page.locator("body").aria_snapshot(mode="ai", timeout=_SNAPSHOT_TIMEOUT_MS)
        tree, _nodes = render_snapshot(snapshot)
        content: list[TextBlock | ImageBlock] = [TextBlock(text=f"{head}Task: {state.utterance}\n{tree}")]
        if self.screenshots:
            png = await page.locator("#wrap").screenshot(type="png")
            data = base64.b64encode(png).decode("ascii")
            content.append(ImageBlock(source=Base64Source(media_type="image/png", data=data)))
        return ToolResponse(content=content, is_error=is_error, metadata={"done": False})

    @staticmethod
    async def _settle(page: Page) -> None:
        """Wait (up to 1.5 s) until the page's short timers have fired and its jQuery animations ended."""
        with contextlib.suppress(Exception):  # a page that never settles is observed as it is
            await page.wait_for_function(_SETTLED_JS, timeout=_SETTLE_MS, polling=20)

    def _over(self) -> str:
        return (
            f"The episode is over (the page's reward: {self._state.raw:g}). "
            "Answer in a few words; do not call more tools."
        )

    async def _act(self, action: Callable[[BrowserSession], Awaitable[str]]) -> ToolResponse:
        self._check_page()
        session = self._session
        assert session is not None
        if self._state.done:
            return ToolResponse.text(self._over(), is_error=True)
        self._steps += 1
        try:
            note, failed = await action(session), False
        except SandboxError as exc:  # a malformed ref, an option that does not exist
            return ToolResponse.text(str(exc), is_error=True)
        except Exception as exc:  # Playwright: the element is hidden, covered, detached; or the page died
            self._check_page(exc)
            note, failed = f"Failed: {str(exc).splitlines()[0]}", True
        try:
            await self._settle(session.page)
            return await self._observe(note, is_error=failed)
        except Exception as exc:
            self._check_page(exc)
            raise

    # ------------------------------------------------------------------ tools

    async def click(self, ref: str) -> ToolResponse:
        """Click an element of the page.

        Args:
            ref: The element's ref from the latest observation, e.g. e12.
        """
        return await self._act(lambda s: s.click(ref))

    async def type(self, ref: str, text: str) -> ToolResponse:
        """Type text into a text field, replacing what it holds.

        Args:
            ref: The field's ref from the latest observation.
            text: The text to enter.
        """
        return await self._act(lambda s: s.type(ref, text))

    async def press(self, key: str) -> ToolResponse:
        """Press a key on the focused element, e.g. Enter, Tab, ArrowDown or Control+A.

        Args:
            key: The key or chord.
        """
        return await self._act(lambda s: s.press(key))

    async def select(self, ref: str, option: str) -> ToolResponse:
        """Choose an option of a drop-down list.

        Args:
            ref: The list's ref from the latest observation.
            option: The option's text as the observation shows it.
        """
        return await self._act(lambda s: s.select(ref, option))
