"""The MiniWoB++ suite in Debian's Chromium: the page's own problem (seeded as the benchmark seeds it), reward and
done; the compact observation; the expert solving every wired task and the random policy playing any task,
through the real environment cluster and ReActAgent; errors and crash recovery. One Chromium for the module;
only 127.0.0.1 is contacted (the suite's own HTML server)."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest
import pytest_asyncio

from agentscope.message import ImageBlock, Msg, ToolResultBlock, ToolUseBlock
from agentscope.rl import Task, Trajectory
from agentscope.rl.envs import (
    EnvCluster,
    EnvFactory,
    ScriptedPolicy,
    ScriptedRollout,
    play_scripted,
    react_agent_factory,
)
from agentscope.rl.tasks import (
    MINIWOB_DEFAULT_TASKS,
    MiniWoBEnv,
    get_task_set,
    load_tasks,
    miniwob_expert,
    miniwob_random_policy,
    miniwob_task_names,
    miniwob_tasks,
    overlapping,
    split_of,
)
from agentscope.rl.tasks._miniwob._experts import read_page
from agentscope.rl.tasks._miniwob._render import render_snapshot
from agentscope.rl.tasks._miniwob._spec import FEW_PROBLEM_TASKS, SEED_INVARIANT_TASKS
from agentscope.sandbox import Browser
from agentscope.testing import ScriptItem, tool_call

if TYPE_CHECKING:
    from playwright.async_api import Page

_F = TypeVar("_F", bound=Callable[..., Any])

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("miniwob") is None, reason="pip install -e '.[miniwob]'"
)
_CHROMIUM = (
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed"),
)


def in_chromium(test: _F) -> _F:
    """An async test on the module's event loop (and its Chromium)."""
    for mark in _CHROMIUM:
        test = mark(test)
    return test


MAX_ITERS = 16  # the longest wired task (click-checkboxes-large) needs 13 actions and an answer
SERVER = re.compile(r"^http://127\.0\.0\.1:\d+$")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with Browser(warm_sessions=3) as b:
        yield b


SEARCHES = ("click-tab-2-hard", "click-collapsible-2", "navigate-tree", "click-menu-2", "use-autocomplete")
"""Tasks whose pages vary most from seed to seed (the expert explores them): two seeds each in CI."""


@pytest.fixture(scope="module")
def expert_tasks() -> list[Task]:
    """A seed of every wired task and one more of each search task, 39 episodes (the CI short version: the
    benchmark plays 20 seeds of each). Built here, off the event loop (it lists the package's folder)."""
    every = miniwob_tasks(tasks="default", n=len(MINIWOB_DEFAULT_TASKS), seed=7)
    return every + miniwob_tasks(tasks="|".join(SEARCHES), n=len(SEARCHES), seed=8)


async def play(
    env_factory: EnvFactory, policy: ScriptedPolicy, tasks: Sequence[Task], *, slots: int = 3
) -> list[Trajectory]:
    """Play every task once through EnvCluster and ReActAgent; the trajectories in task order."""
    return await play_scripted(env_factory, policy, tasks, slots=slots, max_iters=MAX_ITERS)


def live_page(env: MiniWoBEnv) -> Page:
    """The page of the environment's running episode."""
    assert env._session is not None
    return env._session.page


def episode(name: str, seed: int) -> Task:
    return Task(id=f"{name}-{seed}", prompt="", metadata={"task": name, "seed": seed})


# ---------------------------------------------------------------------- task lists


def test_spec_seeds_content_keys_and_splits() -> None:
    tasks = load_tasks("miniwob:tasks=click-button|click-link,n=10,seed=3")
    assert [t.metadata["task"] for t in tasks] == ["click-button", "click-link"] * 5
    assert tasks == load_tasks("miniwob:tasks=click-button|click-link,n=10,seed=3")
    assert {t.content_key for t in tasks} == {
        f"miniwob/{t.metadata['task']}/{t.metadata['seed']}" for t in tasks
    }
    assert len({t.content_key for t in tasks}) == 10
    # a task's seeds do not depend on the other tasks of the list
    alone = load_tasks("miniwob:tasks=click-link,n=5,seed=3")
    assert [t.metadata["seed"] for t in alone] == [t.metadata["seed"] for t in tasks[1::2]]
    train = load_tasks("miniwob:tasks=click-button,n=40,seed=0,split=train")
    held_out = load_tasks("miniwob:tasks=click-button,n=20,seed=1,split=eval")
    assert len(train) == 40
    assert len(held_out) == 20
    assert overlapping(train, held_out) == []
    default = load_tasks(f"miniwob:n={len(MINIWOB_DEFAULT_TASKS)}")
    assert sorted(str(t.metadata["task"]) for t in default) == sorted(MINIWOB_DEFAULT_TASKS)
    assert len(MINIWOB_DEFAULT_TASKS) >= 20
    assert len(miniwob_task_names()) == 130  # miniwob 1.1
    everything = load_tasks("miniwob:tasks=all,n=130")
    assert {str(t.metadata["task"]) for t in everything} == set(miniwob_task_names())
    task_set = get_task_set("miniwob")
    assert task_set.expert is not None
    assert task_set.random_policy is not None


def test_a_task_whose_seeds_share_their_problem_falls_in_one_split() -> None:
    """click-test shows the same page whatever the seed: keyed by task and seed, its held-out episodes were the
    very problems it trained on. Keyed by task, each such task is in one split, once."""
    splits = {
        split: load_tasks(f"miniwob:tasks=default,n=1000,seed={i},split={split}")
        for i, split in enumerate(("train", "warm", "eval"))
    }
    for name in sorted(SEED_INVARIANT_TASKS | set(FEW_PROBLEM_TASKS)):
        assert name in MINIWOB_DEFAULT_TASKS
        holding = {split: [t for t in tasks if t.metadata["task"] == name] for split, tasks in splits.items()}
        assert sorted(len(found) for found in holding.values()) == [0, 0, 1], name
    assert {t.content_key for t in miniwob_tasks(tasks="click-test|focus-text-2", n=6)} == {
        "miniwob/click-test",
        "miniwob/focus-text-2",
    }


def test_a_split_deals_n_evenly_over_the_tasks() -> None:
    """n counts the split's episodes, dealt round-robin over the tasks that have episodes in it: the per-task
    breakdown of a held-out evaluation rests on it (a prefix of a per-seed coin flip gave 1-9 episodes a task)."""
    keyed = SEED_INVARIANT_TASKS | set(FEW_PROBLEM_TASKS)
    for names, n, seed, split in [
        ("default", 136, 1, "eval"),  # examples/rl/miniwob.yaml's held-out tasks
        ("default", 340, 0, "warm"),  # and its demonstrations
        ("click-button|click-link|enter-text", 12, 2, "train"),
    ]:
        tasks = load_tasks(f"miniwob:tasks={names},n={n},seed={seed},split={split}")
        assert len(tasks) == n
        assert {split_of(t) for t in tasks} == {split}
        counts = Counter(str(t.metadata["task"]) for t in tasks)
        listed = MINIWOB_DEFAULT_TASKS if names == "default" else names.split("|")
        assert set(counts) >= {
            name for name in listed if name not in keyed
        }  # each varying task is in each split
        assert {counts[name] for name in keyed & set(counts)} <= {1}  # one problem, one episode
        varying = [counts[name] for name in counts if name not in keyed]
        assert max(varying) - min(varying) <= 1, (names, split, counts)
        for name in ("click-button", "enter-text"):  # a task's episodes are its first seeds in the split
            drawn = [t for t in miniwob_tasks(tasks=name, n=200, seed=seed) if split_of(t) == split]
            assert [t for t in tasks if t.metadata["task"] == name] == drawn[: counts[name]]
    even = load_tasks("miniwob:tasks=click-button|enter-text,n=8,split=eval")
    assert Counter(t.metadata["task"] for t in even) == {"click-button": 4, "enter-text": 4}
    with pytest.raises(ValueError, match=r"the eval split holds only 0 distinct"):
        load_tasks("miniwob:tasks=click-test|focus-text,n=1,split=eval")  # both are in train
    with pytest.raises(ValueError, match="split must be one of"):
        miniwob_tasks(tasks="click-button", split="test")


def test_the_rendering_keeps_the_task_and_drops_the_rest() -> None:
    snapshot = """- generic [active] [ref=e1]:
  - generic [ref=e2]:
    - generic [aria-hidden] [ref=e3]: Select B and click Submit.
    - generic [ref=e4]:
      - generic [ref=e5]:
        - checkbox "A" [ref=e6]
        - text: A
        - checkbox "B" [checked] [ref=e7]
        - text: B
      - 'link "Tab #2" [ref=e9] [cursor=pointer]':
        - /url: "#tabs-2"
      - textbox "Name" [ref=e10]: "Ada: 1"
      - button "Submit" [ref=e8]
  - generic [aria-hidden] [ref=e11]:
    - generic [ref=e12]: "Last reward: -"
  - status [ref=e13]:
    - generic [ref=e14]: 1 result is available"""
    text, _nodes = render_snapshot(snapshot)
    assert text == (
        '- checkbox "A" [ref=e6]\n'
        '- checkbox "B" [checked] [ref=e7]\n'
        '- link "Tab #2" [ref=e9]\n'
        '- textbox "Name" [ref=e10]: Ada: 1\n'
        '- button "Submit" [ref=e8]'
    )
    # a control character in the page (unicode-test has some) is not YAML: replaced, not fatal
    assert render_snapshot('- button "OK\x8f" [ref=e5]')[0] == '- button "OK\ufffd" [ref=e5]'
    page = read_page("Task: Select B and click Submit.\n" + text)
    assert page is not None
    assert page.utterance == "Select B and click Submit."
    assert [(e.role, e.label, e.ref, e.has("checked")) for e in page.elements][:2] == [
        ("checkbox", "A", "e6", False),
        ("checkbox", "B", "e7", True),
    ]
    assert page.elements[3].text == "Ada: 1"


def test_the_random_policy_acts_on_the_refs_shown_reproducibly() -> None:
    page = (
        'Task: Enter "x" and click Submit.\n- textbox [ref=e5]\n- button "Submit" [ref=e6]\n'
        '- combobox [ref=e7]:\n  - option "a"\n  - option "b"\n- link "go" [ref=e8]'
    )

    def moves(policy: ScriptedPolicy) -> list[tuple[str, dict[str, object]]]:
        messages = [Msg(role="user", name="user", content=page)]
        out: list[tuple[str, dict[str, object]]] = []
        for _ in range(12):
            item = policy(messages)
            assert isinstance(item, ToolUseBlock)
            out.append((item.name, dict(item.input)))
            result = ToolResultBlock(id=item.id, name=item.name, output=page)
            messages += [Msg(role="assistant", content=[item]), Msg(role="tool", content=[result])]
        return out

    policy = miniwob_random_policy(3)
    seen = moves(policy)
    assert seen == moves(miniwob_random_policy(3))  # reproducible
    assert seen != moves(miniwob_random_policy(4))
    assert moves(policy) != seen  # a second episode that looks the same still gets draws of its own
    assert {name for name, _ in seen} >= {"click", "type", "select"}
    for name, args in seen:
        if name != "press":
            assert args["ref"] in {"e5", "e6", "e7", "e8"}
        if name == "select":
            assert (args["ref"], args["option"] in {"a", "b"}) == ("e7", True)
        if name == "type":
            assert args["ref"] == "e5"
    over = Msg(
        role="tool", content=[ToolResultBlock(id="1", name="click", output="The episode is over (...)")]
    )
    assert miniwob_random_policy(3)([over]) == "Done."


def test_unknown_task_names_are_clear_errors() -> None:
    with pytest.raises(
        ValueError, match=r"unknown MiniWoB\+\+ task 'click-buton'; did you mean click-button"
    ):
        load_tasks("miniwob:tasks=click-buton,n=4")
    with pytest.raises(ValueError, match="names no task"):
        miniwob_tasks(tasks="|")
    with pytest.raises(ValueError, match="miniwob"):
        load_tasks("miniwob:n=4,level=2")  # not an argument of this task set


def test_importing_the_suite_loads_neither_playwright_nor_the_miniwob_package() -> None:
    code = (
        "import sys, agentscope.rl.envs, agentscope.rl.tasks\n"
        "from agentscope.rl.tasks import load_tasks\n"
        "load_tasks('miniwob:n=3')\n"
        "print(sorted(m for m in ('playwright', 'miniwob', 'gymnasium', 'selenium') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- the page decides


@in_chromium
async def test_the_problem_is_the_benchmarks_for_the_seed(browser: Browser) -> None:
    """The same seed gives the same problem as the benchmark's own start sequence (Selenium's set_seed, set_mode,
    startEpisodeReal, replayed here as plain scripts on a page of the same server); other seeds give others."""
    env = MiniWoBEnv(browser=browser)
    try:
        utterances: list[str] = []
        for seed in (11, 12):
            observation = await env.reset(episode("click-button", seed))
            utterances.append(observation.msg.text.split("Task: ", 1)[1].splitlines()[0])
            assert env._session is not None
            origin = next(iter(env._session.allowed_origins))
            assert SERVER.match(origin)
            async with browser.session(allowed_origins=[origin]) as reference:
                await reference.page.goto(f"{origin}/miniwob/click-button.html")
                await reference.page.wait_for_function("core.cover_div !== null")
                await reference.page.evaluate(f"Math.seedrandom({seed!r});")  # selenium_instance.set_seed
                await reference.page.evaluate('core.setDataMode("train");')
                await reference.page.evaluate("core.startEpisodeReal();")
                assert await reference.page.evaluate("core.getUtterance()") == utterances[-1]
        assert len(set(utterances)) > 1
    finally:
        await env.close()


@in_chromium
async def test_the_seed_invariant_tasks_are_those_whose_page_ignores_the_seed(browser: Browser) -> None:
    """Measured in Chromium, the set the content keys rely on: the wired tasks whose first observation (the
    instruction and the tree, refs aside) is the same for seeds 0, 1 and 2 (seed 2 is only loaded where 0 and 1
    agree; ~75 page loads in all), and focus-text-2's few problems."""
    seeds: dict[str, list[int]] = {name: [0, 1] for name in MINIWOB_DEFAULT_TASKS}
    seeds["focus-text-2"] = list(range(8))
    seen: dict[str, dict[int, str]] = {name: {} for name in MINIWOB_DEFAULT_TASKS}

    async def observe(jobs: list[tuple[str, int]]) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[str, int]](len(jobs))
        for job in jobs:
            send.send_nowait(job)
        send.close()

        async def worker() -> None:
            env = MiniWoBEnv(browser=browser)
            try:
                async for name, seed in receive:
                    observation = await env.reset(episode(name, seed))
                    seen[name][seed] = re.sub(r"\[ref=e\d+\]", "[ref]", observation.msg.text)
            finally:
                await env.close()

        with receive:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(worker)

    await observe([(name, seed) for name, some in seeds.items() for seed in some])
    await observe([(name, 2) for name, texts in seen.items() if len(set(texts.values())) == 1])
    invariant = {name for name, texts in seen.items() if len(set(texts.values())) == 1}
    assert all(len(seen[name]) == 3 for name in invariant)
    assert invariant == SEED_INVARIANT_TASKS
    assert len(set(seen["focus-text-2"].values())) == FEW_PROBLEM_TASKS["focus-text-2"]


@in_chromium
async def test_reward_and_done_are_the_pages_own(browser: Browser) -> None:
    env = MiniWoBEnv(browser=browser, time_limit_s=60)
    try:
        # a seed whose page has a wrong button to press
        for seed in range(100):
            observation = await env.reset(episode("click-button", seed))
            text = observation.msg.text
            wanted = re.search(r'Click on the "(.+)" button\.', text)
            assert wanted is not None
            wrong = [m for m in re.finditer(r'button "(.+?)" \[ref=(e\d+)\]', text) if m[1] != wanted[1]]
            if wrong:
                break
        else:
            pytest.fail("no click-button page with two different buttons in 100 seeds")
        assert env._session is not None
        page = env._session.page
        assert await page.evaluate("core.EPISODE_MAX_TIME") == 60_000  # set explicitly, not the page's 10 s
        assert await page.evaluate("WOB_DONE_GLOBAL") is False
        result = await env.click(wrong[0][2])
        assert result.metadata["done"] is True
        assert "The episode is over (the page's reward: -1)" in result.text_content
        assert await page.evaluate("[WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL]") == [True, -1]
        again = await env.click(wrong[0][2])  # nothing more happens once the page says done
        assert again.is_error
        assert "episode is over" in again.text_content
        judged = await env.evaluate(Msg(role="assistant", content="Done."))
        assert (judged.reward, judged.success) == (-1.0, False)
        assert judged.info["done"] == 1.0
        assert env._session is None  # the context is closed once judged

        observation = await env.reset(episode("click-button", seed))
        right = re.search(rf'button "{re.escape(wanted[1])}" \[ref=(e\d+)\]', observation.msg.text)
        assert right is not None
        page = live_page(env)
        await env.click(right[1])
        scaled = await page.evaluate("WOB_REWARD_GLOBAL")
        judged = await env.evaluate(Msg(role="assistant", content="Done."))
        assert (judged.reward, judged.success) == (1.0, True)
        assert judged.info["env_reward"] == scaled
        assert isinstance(scaled, float)
        assert 0.9 < scaled < 1.0  # the page's time-scaled reward, against the 60 s limit

        await env.reset(episode("click-button", seed))  # stopping before the page is done: reward 0
        judged = await env.evaluate(Msg(role="assistant", content="I give up."))
        assert (judged.reward, judged.success, judged.info["done"]) == (0.0, False, 0.0)
    finally:
        await env.close()


@in_chromium
async def test_the_page_times_out_on_its_own_clock(browser: Browser) -> None:
    env = MiniWoBEnv(browser=browser, time_limit_s=0.3)
    try:
        await env.reset(episode("click-test", 1))
        await anyio.sleep(0.6)
        judged = await env.evaluate(Msg(role="assistant", content="..."))
        assert (judged.reward, judged.success, judged.info["timed_out"]) == (-1.0, False, 1.0)
    finally:
        await env.close()


@in_chromium
async def test_observation_is_compact_and_screenshots_are_optional(browser: Browser) -> None:
    env = MiniWoBEnv(browser=browser)
    try:
        observation = await env.reset(episode("click-button", 3))
        text = observation.msg.text
        assert "Task: Click on the" in text
        assert re.search(r'- button ".+" \[ref=e\d+\]', text)
        for noise in ("Last reward", "Episodes done", "START", "generic [active]", "/url", "cursor=pointer"):
            assert noise not in text
        assert len(text) < 800, text  # about 200 tokens: small enough for a tiny policy
        assert not any(isinstance(b, ImageBlock) for b in observation.msg.blocks)
        # a clickable word (MiniWoB's <span class="alink">) gets a ref
        observation = await env.reset(episode("click-link", 3))
        link = re.search(r'Click on the link "(.+)"\.', observation.msg.text)
        assert link is not None
        assert f'- link "{link[1]}" [ref=' in observation.msg.text
        await env.evaluate(Msg(role="assistant", content=""))
        # the pages are UTF-8 without saying so: served as UTF-8, unicode-test reads as its author wrote it
        observation = await env.reset(episode("unicode-test", 15464947))
        assert 'Task: Click on the "Cancél" button.' in observation.msg.text
        assert '- button "确定" [ref=' in observation.msg.text
        await env.evaluate(Msg(role="assistant", content=""))
    finally:
        await env.close()
    env = MiniWoBEnv(browser=browser, screenshots=True)
    try:
        observation = await env.reset(episode("click-button", 3))
        images = [b for b in observation.msg.blocks if isinstance(b, ImageBlock)]
        assert len(images) == 1
        box = re.search(r'button "(.+?)" \[ref=(e\d+)\]', observation.msg.text)
        assert box is not None
        result = await env.type("e999", "x")  # a ref that is not on the page: an error the agent sees
        assert result.is_error
    finally:
        await env.close()


# ---------------------------------------------------------------------- policies through the real agent


@in_chromium
async def test_expert_solves_every_wired_task(browser: Browser, expert_tasks: list[Task]) -> None:
    trajectories = await play(lambda: MiniWoBEnv(browser=browser), miniwob_expert(), expert_tasks)
    failed = [
        (t.task_id, t.status, t.reward, t.error) for t in trajectories if not (t.success and t.status == "ok")
    ]
    assert failed == []
    assert {t.task_id.rsplit("-", 1)[0].removeprefix("miniwob-") for t in trajectories} == set(
        MINIWOB_DEFAULT_TASKS
    )
    assert all(t.reward > 0 for t in trajectories)


@in_chromium
async def test_a_task_without_an_expert_still_plays_and_scores(browser: Browser) -> None:
    assert "click-menu" not in MINIWOB_DEFAULT_TASKS
    tasks = [episode("click-menu", seed) for seed in range(3)]
    trajectories = await play(lambda: MiniWoBEnv(browser=browser), miniwob_random_policy(5), tasks)
    assert {t.status for t in trajectories} <= {"ok", "truncated"}
    assert all(t.reward in (-1.0, 0.0, 1.0) for t in trajectories)
    assert any(t.metrics.get("env/done") == 1.0 for t in trajectories)  # random clicks end some episodes
    # the expert does not know the task: it says so and the episode ends unsolved
    expert = await play(lambda: MiniWoBEnv(browser=browser), miniwob_expert(), tasks[:1])
    assert (expert[0].status, expert[0].reward, expert[0].success) == ("ok", 0.0, False)
    assert expert[0].metrics["env/actions"] == 0


@in_chromium
async def test_crashed_page_fails_the_episode_as_infra_and_the_env_recovers(browser: Browser) -> None:
    envs: list[MiniWoBEnv] = []

    def make() -> MiniWoBEnv:
        envs.append(MiniWoBEnv(browser=browser))
        return envs[-1]

    expert = miniwob_expert()
    crashed: list[str] = []

    async def crash_first_episode(messages: list[Msg]) -> ScriptItem:
        if not crashed:
            session = envs[-1]._session
            assert session is not None
            cdp = await session.context.new_cdp_session(session.page)
            async with anyio.create_task_group() as tg:
                tg.start_soon(cdp.send, "Page.crash")  # the renderer dies: this never answers
                await session.page.wait_for_event("crash")
                tg.cancel_scope.cancel()
            crashed.append(session.page.url)
            return tool_call("click", ref="e5")
        move = expert(messages)
        assert not inspect.isawaitable(move)
        return move

    tasks = [episode("click-test", 1), episode("click-test", 2)]
    rollout = ScriptedRollout(crash_first_episode)
    agent_factory = functools.partial(react_agent_factory, max_iters=MAX_ITERS)
    cluster = EnvCluster(
        make, agent_factory, rollout, slots=1, step_timeout_s=60, model_factory=rollout.model
    )
    try:
        first = await cluster.run_episode(tasks[0], "g")
        second = await cluster.run_episode(tasks[1], "g")
        assert cluster.stats()["env/restarts"] == 1
    finally:
        await cluster.aclose()
    assert first.status == "failed_infra"
    assert first.error is not None
    assert "crashed" in first.error
    assert (second.status, second.success) == ("ok", True)
    assert len(envs) == 2  # the broken environment was replaced
    assert envs[0]._session is None  # and closed


@in_chromium
async def test_the_shared_browser_is_started_on_demand_and_relaunched_after_a_crash() -> None:
    first, second = MiniWoBEnv(), MiniWoBEnv()
    try:
        await first.reset(episode("click-test", 1))
        shared = first._shared
        assert shared is not None
        assert shared.browser is not None
        chromium = shared.browser
        await second.reset(episode("click-test", 2))
        assert second._shared is shared  # one Chromium for the loop
        assert chromium._browser is not None
        await chromium._browser.close()  # Chromium goes away under the environments
        with pytest.raises(Exception, match=r"closed|crashed"):
            await first.click("e5")
        await first.close()
        third = MiniWoBEnv()
        try:
            observation = await third.reset(episode("click-test", 3))
            assert "Task: Click the button." in observation.msg.text
            assert shared.browser is not chromium  # relaunched
        finally:
            await third.close()
    finally:
        await first.close()
        await second.close()
    assert shared.users == 0
