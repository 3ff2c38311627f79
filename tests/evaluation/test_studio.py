"""Evaluations in the studio: the store's rows, the JSON API (in process) and the pages in a real browser
(Playwright driving Debian's chromium, ``agentscope studio`` as a subprocess), over two real evaluations of two
agents on the same tasks: one gets subtractions wrong, the other products. The browser test saves the comparison
page as ``docs/studio-eval.png`` (the README shows it)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest

from agentscope.agents import load_agent_factory
from agentscope.evaluation import EvaluationReport, evaluate
from agentscope.rl.tasks import arith_tasks
from agentscope.studio import create_app
from agentscope.tracing import TraceStore

AGENT = Path(__file__).with_name("arith_agent.py")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "studio-eval.png"
SPEC, N, SEED = "arith:n=12,seed=3", 12, 3
EXPECT_MS = 15_000
"""How long each browser assertion waits (the studio renders 24 episodes per evaluation)."""
CHROMIUM = os.environ.get("AGENTSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@dataclass
class Evaluations:
    store: Path
    a: EvaluationReport
    b: EvaluationReport


def operators() -> dict[str, str]:
    """Each task's content key -> its operator."""
    return {t.content_key: str(t.metadata["expression"]).split()[1] for t in arith_tasks(N, SEED)}


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory: pytest.TempPathFactory) -> Evaluations:
    store = tmp_path_factory.mktemp("evals") / "traces.db"

    async def both() -> tuple[EvaluationReport, EvaluationReport]:
        a = await evaluate(
            load_agent_factory(str(AGENT)), SPEC, repeats=2, trace_store=store, name="subtraction-bug"
        )
        b = await evaluate(
            load_agent_factory(f"{AGENT}:build_product_bug"),
            SPEC,
            repeats=2,
            trace_store=store,
            name="product-bug",
        )
        return a, b

    a, b = anyio.run(both)
    assert {"-", "*", "+"} <= set(operators().values()), "the tasks mix all three operators"
    return Evaluations(store, a, b)


def test_rows_are_replaced_not_doubled(tmp_path: Path) -> None:
    row = {"task_key": "k", "repeat": 0, "task_id": "t", "status": "ok", "success": False, "reward": 0.0}
    with TraceStore(tmp_path / "t.db") as store:
        store.write_eval_results("r", [{**row, "trace_id": None, "input_tokens": 5}])
        store.write_eval_results(
            "r", [{**row, "success": True, "reward": 1.0, "trace_id": "x", "input_tokens": 7}]
        )
        assert store.eval_results("r") == [
            {**row, "success": True, "reward": 1.0, "trace_id": "x", "input_tokens": 7}
        ]
        with pytest.raises(ValueError, match="lacks trace_id"):
            store.write_eval_results("r", [row])


@pytest.fixture
async def client(evaluations: Evaluations) -> AsyncIterator[httpx2.AsyncClient]:
    store = await anyio.to_thread.run_sync(TraceStore, evaluations.store)
    app = create_app(store)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        yield c
    await anyio.to_thread.run_sync(store.close)


async def get(client: httpx2.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.anyio
async def test_the_api_lists_shows_and_compares_evaluations(
    client: httpx2.AsyncClient, evaluations: Evaluations
) -> None:
    listed = await get(client, "/api/evaluations")
    assert listed["total"] == 2
    assert [e["name"] for e in listed["evaluations"]] == ["product-bug", "subtraction-bug"], "newest first"
    rates = {e["name"]: e["success_rate"] for e in listed["evaluations"]}
    assert rates["subtraction-bug"] == pytest.approx(evaluations.a.metrics["eval/success_rate"])

    one = await get(client, f"/api/evaluations/{evaluations.a.run_id}")
    assert one["run"]["config"]["evaluation"]["tasks"] == SPEC
    assert one["summary"]["episodes"] == 24
    ops = operators()
    for task in one["tasks"]:
        solved = ops[task["task_key"]] != "-"
        assert (task["successes"], task["episodes"]) == (2 * solved, 2)
        assert [r["repeat"] for r in task["runs"]] == [0, 1]
        assert all(r["trace_id"] for r in task["runs"])

    compared = await get(client, "/api/evaluations/compare", a=evaluations.a.run_id, b=evaluations.b.run_id)
    change = {t["task_key"]: t["change"] for t in compared["tasks"]}
    expected = {k: {"-": "fixed", "*": "broken", "+": "same"}[op] for k, op in ops.items()}
    assert change == expected
    assert compared["counts"]["fixed"] == sum(op == "-" for op in ops.values())
    assert [t["change"] for t in compared["tasks"]][:1] == ["fixed"], "changed tasks first"

    missing = await client.get("/api/evaluations/nosuch")
    assert missing.status_code == 404


@pytest.fixture
def studio(
    evaluations: Evaluations,
    tmp_path: Path,
    studio_server: Callable[[Path, Path], AbstractContextManager[str]],
) -> Iterator[str]:
    with studio_server(evaluations.store, tmp_path) as url:
        yield url


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}")
async def test_the_evaluation_pages_in_a_real_browser(studio: str, evaluations: Evaluations) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    expect = (
        playwright_api.expect
    )  # each assertion gets its timeout: set_options would change it for the session
    ops = operators()
    subtractions = sum(op == "-" for op in ops.values())
    products = sum(op == "*" for op in ops.values())
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))  # pyright: ignore[reportUnknownLambdaType, reportUnknownArgumentType]

            # ---- the list, reached from the top bar
            await page.goto(f"{studio}/#/")
            await page.locator("#nav-evals").click()
            rows = page.locator("#evals-body tr")
            await expect(rows).to_have_count(2, timeout=EXPECT_MS)
            rate = evaluations.a.metrics["eval/success_rate"]
            await expect(
                page.locator("tr", has_text="subtraction-bug").locator(".success-rate")
            ).to_have_text(f"{rate * 100:.1f} %", timeout=EXPECT_MS)

            # ---- one evaluation: the per-task table, each episode a link to its trace
            await page.locator("a.eval-link", has_text="subtraction-bug").click()
            await expect(page.locator("#eval-header")).to_contain_text(SPEC, timeout=EXPECT_MS)
            await expect(page.locator("#eval-success")).to_contain_text("of 24", timeout=EXPECT_MS)
            await expect(page.locator("#eval-tasks tr")).to_have_count(N, timeout=EXPECT_MS)
            await expect(page.locator("#eval-tasks .episode.unsolved")).to_have_count(
                2 * subtractions, timeout=EXPECT_MS
            )
            await page.locator("#only-failed").check()
            await expect(page.locator("#eval-tasks tr")).to_have_count(subtractions, timeout=EXPECT_MS)
            await page.locator("#eval-tasks a.episode").first.click()
            await expect(page.locator(".span-row").first).to_contain_text("episode arith-", timeout=EXPECT_MS)
            await expect(page.locator(".span-row", has_text="execute_tool calculator")).to_have_count(
                1, timeout=EXPECT_MS
            )

            # ---- two evaluations compared: which tasks flipped
            await page.goto(f"{studio}/#/evals")
            await page.get_by_label("select subtraction-bug").check()
            await page.get_by_label("select product-bug").check()
            await page.locator("#eval-compare-button").click()
            await expect(page.locator("#eval-compare-overview")).to_contain_text(
                "A: subtraction-bug", timeout=EXPECT_MS
            )
            await expect(page.locator("#eval-compare-overview")).to_contain_text(
                "B: product-bug", timeout=EXPECT_MS
            )
            tasks = page.locator("#eval-compare-tasks tr")
            await expect(tasks).to_have_count(N, timeout=EXPECT_MS)
            await expect(page.locator("#eval-compare-tasks tr[data-change='fixed']")).to_have_count(
                subtractions, timeout=EXPECT_MS
            )
            await expect(page.locator("#eval-compare-tasks tr[data-change='broken']")).to_have_count(
                products, timeout=EXPECT_MS
            )
            await expect(tasks.first).to_have_attribute("data-change", "fixed", timeout=EXPECT_MS)
            await expect(page.locator("#eval-change-counts")).to_contain_text(
                f"fixed {subtractions}", timeout=EXPECT_MS
            )
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not page_errors, page_errors
        finally:
            await browser.close()
