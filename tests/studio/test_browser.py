"""The studio in a real browser (Playwright driving Debian's chromium) over traces of real agent runs.

Starts ``agentscope studio`` as a subprocess on 127.0.0.1, checks the runs list, the trace tree and timeline, the
span detail, the conversation view and live updates (a new run and new spans appear without a reload), an RL run's
metrics page (the headline charts first, then a collapsible section per service, live, against step or wall-clock
time), and saves the screenshots the README shows (``docs/studio.png``, ``docs/studio-rl.png``). Skipped when
chromium or Playwright is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

import agentscope
from agentscope import tracing
from agentscope.agents import ReActAgent
from agentscope.message import Msg
from agentscope.testing import ModelRequest, ScriptedModel, tool_call
from agentscope.tools import Toolkit

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "studio.png"
SCREENSHOT_RL = ROOT / "docs" / "studio-rl.png"
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def studio(
    tmp_path: Path, helpers: Any, studio_server: Callable[[Path, Path], AbstractContextManager[str]]
) -> Iterator[tuple[str, Path]]:
    """A store with a calculator run and an RL run, served by ``agentscope studio`` on 127.0.0.1."""
    store = tmp_path / "traces.db"
    helpers.populate(store)
    with studio_server(store, tmp_path) as url:
        yield url, store


class SlowRun:
    """An agent run in its own thread whose second model call waits until :meth:`release`."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.gate = threading.Event()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            agentscope.init(
                self.store, project="demo", run_name="live-run", sample_rate=1.0, capture_content=False
            )

            async def answer_later(_: ModelRequest) -> str:
                self.started.set()
                await anyio.to_thread.run_sync(self.gate.wait)
                return "All done: 2 + 2 = 4."

            def add(a: int, b: int) -> int:
                """Add two integers.

                Args:
                    a: The first number.
                    b: The second number.
                """
                return a + b

            toolkit = Toolkit()
            toolkit.register(add)
            model = ScriptedModel([tool_call("add", a=2, b=2), answer_later])
            agent = ReActAgent("slowpoke", "You add slowly.", model, toolkit=toolkit)
            asyncio.run(agent(Msg(role="user", name="user", content="What is 2 + 2?")))
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc
        finally:
            tracing.shutdown()

    def start(self) -> None:
        self.thread.start()

    def release(self) -> None:
        self.gate.set()
        self.thread.join(30)
        assert self.error is None, self.error


async def test_the_studio_in_a_real_browser(studio: tuple[str, Path]) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    url, store = studio
    slow = SlowRun(store)
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            expect = playwright_api.expect
            expect.set_options(timeout=15_000)

            # ---- runs list, then a new run appears live (no reload)
            await page.goto(f"{url}/#/")
            await expect(page.locator("a.run-link", has_text="calculator")).to_be_visible()
            await expect(page.locator("a.run-link", has_text="grpo-tiny")).to_be_visible()
            await expect(page.locator("#live.on")).to_be_visible()
            await page.evaluate("window.__sameDocument = true")
            await expect(page.locator("#live.on")).to_be_visible()
            await anyio.to_thread.run_sync(slow.start)
            await anyio.to_thread.run_sync(slow.started.wait, 30)
            await expect(page.locator("a.run-link", has_text="live-run")).to_be_visible()

            # ---- the running trace shows its finished spans; the rest arrive live
            await page.locator("a.run-link", has_text="live-run").click()
            await expect(page.locator("#run-recording")).to_have_text("every trace, without content")
            await page.locator("a.trace-link").first.click()
            await expect(page.locator(".span-row")).to_have_count(
                2
            )  # chat + execute_tool; the agent still runs
            await expect(page.locator(".span-row", has_text="execute_tool add")).to_be_visible()
            await expect(page.locator("#live.on")).to_be_visible()
            await anyio.to_thread.run_sync(slow.release)
            await expect(page.locator(".span-row")).to_have_count(4)
            await expect(page.locator(".span-row").first).to_contain_text("invoke_agent slowpoke")
            await expect(page.locator("#tree-count")).to_have_text("4 spans")
            assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"

            # ---- the calculator trace: tree, collapse, error highlighted, span detail
            await page.goto(f"{url}/#/")
            await page.locator("a.run-link", has_text="calculator").click()
            await page.locator("a.trace-link").first.click()
            rows = page.locator(".span-row")
            await expect(rows).to_have_count(7)
            await expect(rows.first).to_contain_text("invoke_agent calculator")
            await expect(page.locator(".span-row.error")).to_have_count(1)
            await expect(page.locator(".span-row.error")).to_contain_text("execute_tool lookup_rate")
            await expect(page.locator(".span-row .bar")).to_have_count(7)  # the timeline waterfall
            await rows.first.locator("button.toggle").click()
            await expect(rows).to_have_count(1)
            await rows.first.locator("button.toggle").click()
            await expect(rows).to_have_count(7)
            await page.locator(".span-row", has_text="chat scripted").first.click()
            detail = page.locator("#span-detail")
            await expect(detail).to_contain_text("120 in / 18 out")
            await expect(detail.locator(".bubble.role-user")).to_contain_text("What is 2 + 3")
            await page.locator(".span-row.error").click()
            await expect(page.locator("#span-error")).to_contain_text("no tax rate on file for Paris")
            await expect(detail).to_contain_text('"city": "Paris"')
            await page.screenshot(path=str(SCREENSHOT))

            # ---- the conversation, tool calls folded inside the assistant's bubbles
            await page.locator("#tab-chat").click()
            chat = page.locator("#chat")
            await expect(chat.locator(".bubble.role-user")).to_contain_text("sales tax rate in Paris")
            calls = chat.locator("details.tool-call")
            await expect(calls).to_have_count(3)
            await expect(calls.nth(0)).not_to_have_attribute("open", "")
            await expect(calls.nth(0).locator("summary")).to_contain_text("add(a=2, b=3) → 5")
            await expect(chat.locator("details.tool-call.error")).to_contain_text("lookup_rate")
            await calls.nth(0).locator("summary").click()
            await expect(calls.nth(0).locator("pre").first).to_be_visible()
            await expect(chat.locator(".bubble.role-assistant").last).to_contain_text(
                "I could not find the Paris rate"
            )

            # ---- the RL run's metric curves, and comparing two runs
            await page.goto(f"{url}/#/")
            await page.locator("a.run-link", has_text="grpo-tiny").click()
            await page.locator("nav.tabs a", has_text="Metrics").click()
            await expect(
                page.locator("figure[data-metric='train/policy_loss'] svg path.line")
            ).to_be_visible()
            await expect(page.locator("figure[data-metric='rollout/tokens_per_s']")).to_contain_text(
                "last 1290"
            )
            await page.goto(f"{url}/#/")
            await page.get_by_label("select calculator").check()
            await page.get_by_label("select grpo-tiny").check()
            await page.locator("#compare-button").click()
            await expect(page.locator("#compare-overview")).to_contain_text("calculator")
            await expect(page.locator("#compare-overview")).to_contain_text("grpo-tiny")
            assert not page_errors, page_errors
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


HEADLINE = [
    "heldout-success",
    "training-success",
    "reward",
    "loss",
    "kl",
    "tokens-per-s",
    "episodes-per-s",
    "staleness",
]
"""The charts an RL run's page leads with, in order (eval/success_rate is recorded in this run)."""
GROUPS = [
    "Trainer",
    "Data manager",
    "Environment cluster",
    "Rollout service",
    "Schedule",
    "Checkpoints",
    "Other",
]


async def test_an_rl_run_leads_with_what_a_user_watches(studio: tuple[str, Path], helpers: Any) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    url, store = studio
    tracer = await anyio.to_thread.run_sync(helpers.start_rl_run, store)
    try:
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                page_errors: list[str] = []
                page.on("pageerror", lambda e: page_errors.append(str(e)))
                expect = playwright_api.expect
                expect.set_options(timeout=15_000)

                # ---- the runs list: the run has lasted since its command began (95 s before tracing), and counts on
                row = page.locator("tr", has=page.locator("a.run-link", has_text="grpo-arith"))
                await page.goto(f"{url}/#/")
                await expect(row.locator(".duration.ticking")).to_have_text(re.compile(r"^1m [3-5]\ds$"))
                await row.locator("a.run-link").click()

                # ---- a run with metrics and no traces opens on its metrics: the headline first, in order
                await expect(page.locator("#run-duration")).to_have_text(re.compile(r"^1m [3-5]\ds$"))
                charts = page.locator("#charts figure.chart-box")
                await expect(charts).to_have_count(
                    len(HEADLINE) + 26 - 9
                )  # 26 names, 9 of them in the headline
                headline = page.locator("#metric-headline figure")
                assert await headline.evaluate_all("fs => fs.map(f => f.dataset.chart)") == HEADLINE
                assert (await charts.first.get_attribute("data-chart")) == HEADLINE[0]
                await expect(headline.nth(1)).to_contain_text("data/batch_success_rate")
                await expect(headline.nth(1).locator("path.line")).to_have_count(2)
                await expect(headline.nth(2)).to_contain_text("last 0.85")  # train/reward_mean at step 30
                await expect(headline.nth(6)).to_contain_text("last 6.4")  # 16 episodes in the last 2.5 s
                await expect(headline.nth(6)).to_contain_text("Δ env/episodes ÷ Δ env/wall_s")
                await page.screenshot(  # the headline and the first section
                    path=str(SCREENSHOT_RL),
                    full_page=True,
                    clip={"x": 0, "y": 0, "width": 1440, "height": 1220},
                )

                # ---- then one collapsible section per service, in order, without the headline's metrics
                groups = page.locator("#charts details.metric-group")
                assert await groups.locator("summary h2").all_inner_texts() == GROUPS
                trainer = groups.nth(0)
                await expect(trainer.locator("figure")).to_have_count(3)  # entropy, grad_norm, lr
                await expect(trainer.locator("figure[data-metric='train/reward_mean']")).to_have_count(0)
                await expect(groups.nth(6).locator("figure[data-metric='time/wall_s']")).to_have_count(1)
                checkpoints = groups.nth(5)
                await checkpoints.locator("summary").click()
                await expect(checkpoints).not_to_have_attribute("open", "")
                await expect(checkpoints.locator("figure").first).to_be_hidden()

                # ---- live: new points and a new metric arrive without a reload
                await page.evaluate("window.__sameDocument = true")
                await expect(page.locator("#live.on")).to_be_visible()
                helpers.log_rl_steps(31, 32)
                tracing.log_metrics({"train/reward_mean": 0.97, "train/clip_ratio": 0.1}, step=33)
                await tracer.aflush()
                await expect(headline.nth(2)).to_contain_text("last 0.97")
                new_chart = trainer.locator("figure[data-metric='train/clip_ratio']")
                await expect(new_chart).to_contain_text("last 0.1")
                await expect(trainer.locator("figure")).to_have_count(4)
                await expect(checkpoints).not_to_have_attribute(
                    "open", ""
                )  # what the user closed stays closed

                # ---- against wall-clock time (time/wall_s), and back
                ticks = headline.nth(2).locator(
                    "text.tick"
                )  # five on the y axis, then the x axis's first and last
                await expect(ticks.last).to_have_text("step 33")
                await page.locator("#metric-toolbar button[data-x='wall']").click()
                await expect(ticks.last).to_have_text("1m 40s")  # 20 s of warm start + 32 steps of 2.5 s
                await expect(ticks.nth(5)).to_have_text("22.5 s")
                await page.locator("#metric-toolbar button[data-x='step']").click()
                await expect(ticks.last).to_have_text("step 33")

                # ---- the run ends: its header says so and its duration stops
                await anyio.to_thread.run_sync(tracing.shutdown)
                await expect(page.locator("#run-header .badge")).to_have_text("finished")
                await expect(page.locator("#run-duration .duration.ticking")).to_have_count(0)
                assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"
                assert not page_errors, page_errors
            finally:
                await browser.close()
    finally:
        await anyio.to_thread.run_sync(tracing.shutdown)
    assert SCREENSHOT_RL.stat().st_size > 10_000


async def test_a_studio_with_a_token_asks_for_it(tmp_path: Path, helpers: Any) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    store = tmp_path / "traces.db"
    await anyio.to_thread.run_sync(helpers.populate, store)
    port = _free_port()
    token = "a-test-token-0123456789"
    process = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "agentscope.cli",
            "studio",
            "--store",
            str(store),
            "--port",
            str(port),
            "--token",
            token,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{url}/api/auth")).status_code == 200:
                        break
                except httpx2.HTTPError:
                    await anyio.sleep(0.1)
            assert (await client.get(f"{url}/api/runs")).status_code == 401
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{url}/#/")
                dialog = page.locator("#token-dialog")
                await playwright_api.expect(dialog).to_be_visible()
                await page.fill("#token-input", "wrong-token")
                await page.click("#token-form button")
                await playwright_api.expect(page.locator("#token-error")).to_contain_text("not accepted")
                await page.fill("#token-input", token)
                await page.click("#token-form button")
                await playwright_api.expect(page.locator("a.run-link", has_text="calculator")).to_be_visible()
            finally:
                await browser.close()
    finally:
        process.terminate()
        with anyio.move_on_after(10):
            await process.wait()
        await process.aclose()


def test_a_public_host_without_a_token_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentscope.cli",
            "studio",
            "--store",
            str(tmp_path / "t.db"),
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--token" in done.stderr
    assert not (tmp_path / "t.db").exists()
