"""MiniWoB++ baselines: per wired task, the scripted expert's and the random policy's success over N seeds, every
episode played through the real environment (Chromium, the page's own reward) and a real ReActAgent (EnvCluster +
ScriptedRollout), and the wall time per episode.

For each task of ``--tasks`` (default: the wired tasks), ``--seeds`` episodes of ``miniwob:tasks=TASK,n=N,seed=S``
are played once by the expert and once by the random policy (``random_policy(S)``: its moves depend on the episode
and the step only, so running ``--slots`` episodes at once changes nothing). The agent is
``react_agent_factory(max_iters=--max-iters)``: the expert needs at most 13 actions and an answer; the random
policy acts until the page ends the episode or the agent runs out of steps. Reported per task: success (raw reward
> 0), mean reward, actions per episode, episodes failed by infrastructure, seconds per episode (one episode's wall
time, reset to judgement, ``--slots`` at once, one Chromium), and the size of the first observation in characters
(and, with ``--tokens``, in tokens of the tiny policy's tokenizer trained on the expert transcripts, as ``agentscope
rl sft`` trains it; needs the rl extra).

``--record`` writes the table into ``benchmarks/RESULTS.md`` (section ``## miniwob``) and ``docs/miniwob.md``
(between its ``baselines`` markers), re-reading each file first and replacing only that part; with
``--tasks others`` (the package's tasks that are not wired, which the expert declines), into ``docs/miniwob.md``
only (between its ``others`` markers).

    .venv/bin/python benchmarks/miniwob/baselines.py --seeds 5                # a quick look
    .venv/bin/python benchmarks/miniwob/baselines.py --seeds 20 --tokens --record
    .venv/bin/python benchmarks/miniwob/baselines.py --tasks others --seeds 5 --record
"""

from __future__ import annotations

import argparse
import functools
import inspect
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE.parent))

from rl_tasks.baselines import loadavg, machine  # noqa: E402  (one way to describe the machine)

from agentscope.message import Msg  # noqa: E402
from agentscope.rl import Task, Trajectory  # noqa: E402
from agentscope.rl.envs import (  # noqa: E402
    EnvFactory,
    ScriptedPolicy,
    play_scripted,
)
from agentscope.rl.tasks import (  # noqa: E402
    MINIWOB_DEFAULT_TASKS,
    MiniWoBEnv,
    miniwob_expert,
    miniwob_random_policy,
    miniwob_task_names,
    miniwob_tasks,
)
from agentscope.sandbox import Browser  # noqa: E402
from agentscope.testing import ScriptItem  # noqa: E402

FAMILIES = {
    "click-button": "click",
    "click-button-sequence": "click",
    "click-link": "click",
    "click-test": "click",
    "click-test-2": "click",
    "click-test-transfer": "click",
    "focus-text": "focus",
    "focus-text-2": "focus",
    "enter-text": "enter-text",
    "enter-text-2": "enter-text",
    "enter-text-dynamic": "enter-text",
    "enter-password": "enter-text",
    "enter-date": "enter-text",
    "login-user": "enter-text",
    "click-checkboxes": "checkbox",
    "click-checkboxes-large": "checkbox",
    "click-checkboxes-transfer": "checkbox",
    "click-option": "checkbox",
    "choose-list": "list",
    "use-autocomplete": "list",
    "use-autocomplete-nodelay": "list",
    "click-dialog": "dialog",
    "click-dialog-2": "dialog",
    "click-menu-2": "menu",
    "click-tab": "tab",
    "click-tab-2": "tab",
    "click-tab-2-easy": "tab",
    "click-tab-2-medium": "tab",
    "click-tab-2-hard": "tab",
    "click-collapsible": "collapsible",
    "click-collapsible-nodelay": "collapsible",
    "click-collapsible-2": "collapsible",
    "click-collapsible-2-nodelay": "collapsible",
    "navigate-tree": "navigate-tree",
}
START, END = "<!-- baselines:start -->", "<!-- baselines:end -->"
OTHERS_START, OTHERS_END = "<!-- others:start -->", "<!-- others:end -->"


class Recorder:
    """Wraps a policy and keeps each episode's conversation with its final answer (keyed by the first message)."""

    def __init__(self, policy: ScriptedPolicy) -> None:
        self.policy = policy
        self.transcripts: dict[str, list[Msg]] = {}

    async def __call__(self, messages: list[Msg]) -> ScriptItem:
        step = self.policy(messages)
        if inspect.isawaitable(step):
            step = await step
        if isinstance(step, str):
            first = next(m.text for m in messages if m.role == "user")
            self.transcripts[first] = [*messages, Msg(role="assistant", name="agent", content=step)]
        return step


async def play(
    env_factory: EnvFactory, policy: ScriptedPolicy, tasks: list[Task], slots: int, max_iters: int
) -> list[Trajectory]:
    return await play_scripted(env_factory, policy, tasks, slots=slots, max_iters=max_iters)


def summary(trajectories: list[Trajectory]) -> dict[str, float]:
    n = len(trajectories)
    return {
        "success": sum(t.success for t in trajectories) / n,
        "reward": sum(t.reward for t in trajectories) / n,
        "actions": sum(t.metrics.get("env/actions", 0.0) for t in trajectories) / n,
        "infra": float(sum(t.status == "failed_infra" for t in trajectories)),
        "seconds": statistics.mean(t.metrics["env/episode_s"] for t in trajectories),
    }


def token_counts(transcripts: dict[str, list[list[Msg]]]) -> dict[str, float]:
    """Per task: mean tokens of the first observation, in the tiny tokenizer trained on the expert transcripts."""
    from transformers import AutoTokenizer

    from agentscope.rl.policy import ChatFormat, TinyPolicyConfig, build_tiny_policy

    chat = ChatFormat()
    corpus = [chat.render(t, [], add_generation_prompt=False) for ts in transcripts.values() for t in ts]
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_policy(TinyPolicyConfig(extra_corpus=corpus), tmp)
        tokenizer: Any = cast(Any, AutoTokenizer).from_pretrained(tmp)
    return {
        name: statistics.mean(
            len(tokenizer.encode(next(m.text for m in t if m.role == "user"), add_special_tokens=False))
            for t in ts
        )
        for name, ts in transcripts.items()
        if ts
    }


def render(rows: list[dict[str, Any]], tokens: dict[str, float], meta: dict[str, str]) -> str:
    token_head = " | obs tokens" if tokens else ""
    lines = [
        f"Machine: {meta['machine']}; Debian Chromium {meta['chromium']}, miniwob {meta['miniwob']}; shared with "
        f"other engineers' work (load average {meta['load_before']} before, {meta['load_after']} after). "
        f"Date: {meta['date']}. Total wall time {meta['wall']}.",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"{meta['seeds']} seeds per task (`miniwob:tasks=TASK,n={meta['seeds']},seed={meta['seed']}`), each played "
        f"by the expert and by the random policy through `MiniWoBEnv` and a ReActAgent (`max_iters="
        f"{meta['max_iters']}`), {meta['slots']} episodes at once in one Chromium. Success: the page's raw reward "
        "> 0. Actions: tool calls per episode. s/episode: one episode's wall time, reset to judgement (page load "
        "included). Obs chars: the first observation (instruction line, task and tree).",
        "",
        f"| task | family | expert success | random success | random reward | expert actions | random actions "
        f"| expert s/episode | random s/episode | failed_infra | obs chars{token_head} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if tokens else ""),
    ]
    for row in rows:
        e, r = row["expert"], row["random"]
        token_cell = f" | {tokens[row['task']]:.0f}" if tokens and row["task"] in tokens else ""
        lines.append(
            f"| {row['task']} | {row['family']} | {e['success']:.2f} | {r['success']:.2f} | {r['reward']:+.2f} | "
            f"{e['actions']:.1f} | {r['actions']:.1f} | {e['seconds']:.2f} | {r['seconds']:.2f} | "
            f"{int(e['infra'] + r['infra'])} | {row['chars']:.0f}{token_cell} |"
        )

    def mean(policy: str, key: str) -> float:
        return statistics.mean(row[policy][key] for row in rows)

    token_cell = f" | {statistics.mean(tokens.values()):.0f}" if tokens else ""
    lines.append(
        f"| **all ({len(rows)} tasks)** | | **{mean('expert', 'success'):.2f}** | **{mean('random', 'success'):.2f}** "
        f"| {mean('random', 'reward'):+.2f} | {mean('expert', 'actions'):.1f} | {mean('random', 'actions'):.1f} | "
        f"{mean('expert', 'seconds'):.2f} | {mean('random', 'seconds'):.2f} | "
        f"{int(sum(row['expert']['infra'] + row['random']['infra'] for row in rows))} | "
        f"{statistics.mean(row['chars'] for row in rows):.0f}{token_cell} |"
    )
    return "\n".join(lines) + "\n"


def record(path: Path, begin: str, end: str | None, body: str) -> None:
    """Replace what follows the line ``begin`` up to ``end`` (or the next ``## `` heading, or the end of the file)
    with ``body``, re-reading the file first; append ``begin`` and ``body`` when ``begin`` is not there."""
    text = path.read_text(encoding="utf-8")
    start = text.find(begin + "\n")
    if start == -1:
        text = text.rstrip("\n") + f"\n\n{begin}\n"
        start = text.find(begin + "\n")
    after = start + len(begin) + 1
    stop = text.find(end, after) if end else text.find("\n## ", after)
    rest = "" if stop == -1 else (text[stop:] if end else "\n" + text[stop + 1 :])
    path.write_text(text[:after] + "\n" + body + rest, encoding="utf-8")


def chromium_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return "?"
    return out.stdout.strip().removeprefix("Chromium ").split(" ")[0] or "?"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        default="default",
        help="task names joined by |; default (the wired tasks); others (the rest)",
    )
    parser.add_argument("--seeds", type=int, default=10, help="episodes per task (each played twice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episode seeds and the random policy")
    parser.add_argument("--slots", type=int, default=4, help="episodes at once")
    parser.add_argument("--max-iters", type=int, default=16, help="the agent's reason-act steps per episode")
    parser.add_argument("--tokens", action="store_true", help="count observation tokens (needs the rl extra)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the table into RESULTS.md and the docs (wired tasks only)",
    )
    args = parser.parse_args()
    from importlib.metadata import version

    meta = {
        "machine": machine(),
        "chromium": chromium_version(),
        "miniwob": version("miniwob"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": loadavg(),
        "command": shlex.join([".venv/bin/python", "benchmarks/miniwob/baselines.py", *sys.argv[1:]]),
        "seeds": str(args.seeds),
        "seed": str(args.seed),
        "slots": str(args.slots),
        "max_iters": str(args.max_iters),
    }
    if args.tasks == "default":
        names = list(MINIWOB_DEFAULT_TASKS)
    elif args.tasks == "others":  # the package's tasks that are not wired: the expert declines them
        everything = await anyio.to_thread.run_sync(miniwob_task_names)
        names = [name for name in everything if name not in MINIWOB_DEFAULT_TASKS]
    else:
        names = args.tasks.split("|")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    transcripts: dict[str, list[list[Msg]]] = {}
    async with Browser(warm_sessions=args.slots) as browser:

        def factory() -> MiniWoBEnv:
            return MiniWoBEnv(browser=browser)

        for name in names:
            tasks = await anyio.to_thread.run_sync(
                functools.partial(miniwob_tasks, tasks=name, n=args.seeds, seed=args.seed)
            )
            expert = Recorder(miniwob_expert())
            expert_runs = await play(factory, expert, tasks, args.slots, args.max_iters)
            random_runs = await play(
                factory, miniwob_random_policy(args.seed), tasks, args.slots, args.max_iters
            )
            firsts = [next(m.text for m in t if m.role == "user") for t in expert.transcripts.values()]
            row: dict[str, Any] = {
                "task": name,
                "family": FAMILIES.get(name, "-"),
                "expert": summary(expert_runs),
                "random": summary(random_runs),
                "chars": statistics.mean(len(text) for text in firsts) if firsts else 0.0,
            }
            rows.append(row)
            transcripts[name] = list(expert.transcripts.values())
            e, r = summary(expert_runs), summary(random_runs)
            print(
                f"{name:30s} expert {e['success']:.2f} ({e['actions']:.1f} actions, {e['seconds']:.2f} s)  "
                f"random {r['success']:.2f} ({r['actions']:.1f} actions, {r['seconds']:.2f} s)  "
                f"infra {int(e['infra'] + r['infra'])}",
                flush=True,
            )
    tokens = await anyio.to_thread.run_sync(token_counts, transcripts) if args.tokens else {}
    meta["load_after"] = loadavg()
    meta["wall"] = f"{(time.perf_counter() - started) / 60:.1f} min"
    table = render(rows, tokens, meta)
    print()
    print(table)
    if args.record and args.tasks == "others":
        record(ROOT / "docs" / "miniwob.md", OTHERS_START, OTHERS_END, table)
        print("recorded in docs/miniwob.md (the tasks that are not wired)")
    elif args.record:
        record(ROOT / "benchmarks" / "RESULTS.md", "## miniwob", None, table)
        record(ROOT / "docs" / "miniwob.md", START, END, table)
        print("recorded in benchmarks/RESULTS.md (## miniwob) and docs/miniwob.md")


if __name__ == "__main__":
    anyio.run(main)
