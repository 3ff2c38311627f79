"""The plan in the studio, in a real browser (Playwright driving Debian's chromium): a scripted agent creates a
plan, revises it, finishes its subtasks and the plan; the trace page shows the final plan next to the trace, and
each change, chosen in the list, shows the plan as it stood then and selects its span. Skipped when chromium or
Playwright is missing."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg
from agentscope.testing import ModelRequest, ScriptedModel

CHROMIUM = os.environ.get("AGENTSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]


def populate(store: Path, plan_run: Any) -> None:
    """A run whose agent plans (project trips), and one whose agent has no plan."""
    agentscope.init(store, project="trips", run_name="lisbon-plan")
    try:
        asyncio.run(plan_run.run_plan())
    finally:
        tracing.shutdown()
    agentscope.init(store, project="trips", run_name="no-plan")
    try:
        agent = ReActAgent("greeter", "Greet.", ScriptedModel(["Hello!"]))
        asyncio.run(agent(Msg(role="user", name="user", content="hi")))
    finally:
        tracing.shutdown()


@pytest.fixture
def studio(
    tmp_path: Path, plan_run: Any, studio_server: Callable[[Path, Path], AbstractContextManager[str]]
) -> Iterator[str]:
    store = tmp_path / "traces.db"
    populate(store, plan_run)
    with studio_server(store, tmp_path) as url:
        yield url


async def test_the_studio_shows_the_plan_next_to_the_trace(studio: str, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    url = studio
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            page_errors: list[str] = []

            def on_error(error: Any) -> None:
                page_errors.append(str(error))

            page.on("pageerror", on_error)
            expect = playwright_api.expect
            expect.set_options(timeout=15_000)

            # ---- a trace without a plan has no plan panel
            await page.goto(f"{url}/#/")
            await page.locator("a.run-link", has_text="no-plan").click()
            await page.locator("a.trace-link").first.click()
            await expect(page.locator(".span-row").first).to_contain_text("invoke_agent greeter")
            await expect(page.locator("#plan-panel")).to_be_hidden()

            # ---- the planning run: the final plan, next to the trace tree
            await page.goto(f"{url}/#/")
            await page.locator("a.run-link", has_text="lisbon-plan").click()
            await page.locator("a.trace-link").first.click()
            panel = page.locator("#plan-panel")
            await expect(panel).to_be_visible()
            await expect(page.locator(".span-row").first).to_contain_text("invoke_agent planner")
            version = panel.locator(".plan-version")
            await expect(version.locator("h3")).to_contain_text("Lisbon weekend")
            await expect(version.locator("h3 .badge")).to_have_text("done")
            subtasks = version.locator(".plan-subtask")
            await expect(subtasks).to_have_count(3)
            assert await subtasks.evaluate_all("(els) => els.map((e) => e.dataset.state)") == [
                "done",
                "done",
                "abandoned",
            ]
            await expect(subtasks.nth(0)).to_contain_text("Outcome: TP1350 on Friday 18:05, 180 EUR")
            await expect(subtasks.nth(2)).to_contain_text("Outcome: The traveller plans the days")
            await expect(version.locator(".plan-final-outcome")).to_contain_text(
                "Flight TP1350 and Casa Alfama booked"
            )
            changes = panel.locator(".plan-change")
            assert await changes.evaluate_all("(els) => els.map((e) => e.dataset.change)") == [
                "create_plan",
                "revise_plan:add",
                "update_subtask_state",
                "finish_subtask",
                "finish_subtask",
                "update_subtask_state",
                "finish_plan",
            ]
            await expect(changes.last).to_have_class("plan-change active")
            await page.screenshot(path=str(tmp_path / "plan.png"))

            # ---- over time: each change shows the plan as it stood then, and selects its span in the trace
            await changes.nth(1).locator("button").click()
            await expect(subtasks).to_have_count(3)
            await expect(version.locator("h3 .badge")).to_have_text("todo")
            assert await subtasks.evaluate_all("(els) => els.map((e) => e.dataset.state)") == ["todo"] * 3
            await expect(subtasks.nth(2)).to_contain_text("Plan the days")
            await expect(page.locator("#span-detail h2")).to_have_text("update_plan")
            await expect(page.locator("#span-detail")).to_contain_text(
                '"agentscope.plan.change": "revise_plan:add"'
            )

            await changes.nth(3).locator("button").click()
            assert await subtasks.evaluate_all("(els) => els.map((e) => e.dataset.state)") == [
                "done",
                "in_progress",
                "todo",
            ]
            await expect(version.locator("h3 .badge")).to_have_text("in progress")
            await expect(changes.nth(0)).to_contain_text("create_plan")
            await expect(changes.nth(0).locator(".plan-chip")).to_have_count(2)

            # ---- the conversation view keeps the panel
            await page.locator("#tab-chat").click()
            await expect(panel.locator(".plan-version h3 .badge")).to_have_text("done")
            assert not page_errors, page_errors
        finally:
            await browser.close()


class PausedPlanRun:
    """The plan run in its own thread (its own trace store writer), waiting before its fifth model call until
    :meth:`release`: by then the plan was created, revised and its first subtask finished."""

    def __init__(self, store: Path, plan_run: Any) -> None:
        self.store = store
        self.plan_run = plan_run
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            agentscope.init(self.store, project="trips", run_name="live-plan", sample_rate=1.0)
            script: list[Any] = self.plan_run.plan_script()
            held = script[4]

            async def later(_: ModelRequest) -> Any:
                self.waiting.set()
                await anyio.to_thread.run_sync(self.gate.wait)
                return held

            script[4] = later
            asyncio.run(self.plan_run.run_plan(ScriptedModel(script)))
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc
        finally:
            tracing.shutdown()

    def release(self) -> None:
        self.gate.set()
        self.thread.join(30)
        assert self.error is None, self.error


async def test_the_plan_panel_follows_a_running_trace_live(
    studio: str, tmp_path: Path, plan_run: Any
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    run = PausedPlanRun(tmp_path / "traces.db", plan_run)
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            expect = playwright_api.expect
            expect.set_options(timeout=15_000)
            await anyio.to_thread.run_sync(run.thread.start)
            await anyio.to_thread.run_sync(run.waiting.wait, 30)
            await page.goto(f"{studio}/#/")
            await page.locator("a.run-link", has_text="live-plan").click()
            await page.locator("a.trace-link").first.click()
            version = page.locator("#plan-panel .plan-version")
            await expect(version.locator("h3 .badge")).to_have_text("in progress")
            await expect(page.locator("#plan-panel .plan-change")).to_have_count(4)
            await page.evaluate("window.__sameDocument = true")
            await anyio.to_thread.run_sync(run.release)
            await expect(page.locator("#plan-panel .plan-change")).to_have_count(7)
            await expect(version.locator("h3 .badge")).to_have_text("done")
            assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        finally:
            await browser.close()
