"""Baselines of the multi-step tool suites: the scripted expert's and the random policy's success per task set and
level, every episode played through the real environment and a real ReActAgent (EnvCluster + ScriptedRollout).

For each task set (``lookup``, ``files``) and level (1, 2, 3), N tasks of ``NAME:n=N,seed=SEED,level=L`` are played
once by the expert and once by the random policy (``random_policy(SEED)``, one episode at a time so that its moves
do not depend on scheduling). Reported: success rate, tool calls per episode, episodes that failed by
infrastructure, seconds per episode (wall clock, ``--slots`` episodes at once). With ``--tokens``, the length of
an expert episode as the tiny policy sees it: the whole last prompt plus the answer (system prompt and tool
schemas included), in tokens of the tiny tokenizer trained on the transcripts (as ``agentscope rl sft`` trains
it), and the part that is the system prompt and the tool schemas alone.

``--record`` writes the table into ``benchmarks/RESULTS.md`` under ``## rl_tasks`` (re-reading the file first and
replacing only that section).

    .venv/bin/python benchmarks/rl_tasks/baselines.py                       # 100 episodes per level
    .venv/bin/python benchmarks/rl_tasks/baselines.py --episodes 300 --tokens --record
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import platform
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

from agentscope.message import Msg  # noqa: E402
from agentscope.models import ToolSchema  # noqa: E402
from agentscope.rl import Task, Trajectory  # noqa: E402
from agentscope.rl.envs import EnvFactory, ScriptedPolicy, play_scripted  # noqa: E402
from agentscope.rl.tasks import get_task_set, load_tasks  # noqa: E402
from agentscope.testing import ScriptItem  # noqa: E402

SETS = ("lookup", "files")
LEVELS = (1, 2, 3)


class Recorder:
    """Wraps a policy and keeps, per task prompt, the conversation of its last episode with the final answer."""

    def __init__(self, policy: ScriptedPolicy) -> None:
        self.policy = policy
        self.transcripts: dict[str, list[Msg]] = {}

    async def __call__(self, messages: list[Msg]) -> ScriptItem:
        step = self.policy(messages)
        if inspect.isawaitable(step):
            step = await step
        if isinstance(step, str):
            task = next(m.text for m in messages if m.role == "user")
            self.transcripts[task] = [*messages, Msg(role="assistant", name="agent", content=step)]
        return step


async def play(
    env_factory: EnvFactory, policy: ScriptedPolicy, tasks: list[Task], slots: int
) -> list[Trajectory]:
    return await play_scripted(env_factory, policy, tasks, slots=slots)


def summary(trajectories: list[Trajectory], seconds: float) -> dict[str, float]:
    n = len(trajectories)
    return {
        "success": sum(t.success for t in trajectories) / n,
        "calls": sum(t.metrics.get("env/steps", 0.0) for t in trajectories) / n,
        "infra": float(sum(t.status == "failed_infra" for t in trajectories)),
        "s_per_episode": seconds / n,
    }


async def tool_schemas(env_factory: EnvFactory, task: Task) -> tuple[list[ToolSchema], str | None]:
    """The tools an episode offers, and the backend of its sandbox (None when it has none)."""
    env = env_factory()
    if inspect.isawaitable(env):
        env = await env
    try:
        schemas = (await env.reset(task)).toolkit.schemas()
        sandbox = getattr(env, "sandbox", None)
        return schemas, getattr(sandbox, "backend", None)
    finally:
        await env.close()


def token_lengths(corpus: dict[str, tuple[list[list[Msg]], list[ToolSchema]]]) -> dict[str, dict[str, float]]:
    """Per task set: mean and max tokens of an expert episode, and of the system prompt plus tool schemas."""
    from transformers import AutoTokenizer

    from agentscope.rl.policy import ChatFormat, TinyPolicyConfig, build_tiny_policy

    chat = ChatFormat()
    texts = {
        name: [chat.render(t, tools, add_generation_prompt=False) for t in ts]
        for name, (ts, tools) in corpus.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_policy(TinyPolicyConfig(extra_corpus=[x for xs in texts.values() for x in xs]), tmp)
        tokenizer: Any = cast(Any, AutoTokenizer).from_pretrained(tmp)

    def count(text: str) -> int:
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
        return len(ids)

    out: dict[str, dict[str, float]] = {}
    for name, (transcripts, tools) in corpus.items():
        lengths = [count(text) for text in texts[name]]
        prefix = chat.render([transcripts[0][0]], tools, add_generation_prompt=False)
        out[name] = {
            "mean": statistics.mean(lengths),
            "max": max(lengths),
            "prefix": count(prefix),
        }
    return out


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return f"{cpu}, {os.cpu_count()} vCPUs, {mem:.1f} GiB, Python {platform.python_version()}"


def loadavg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def render(rows: list[dict[str, Any]], tokens: dict[str, dict[str, float]], meta: dict[str, str]) -> str:
    lines = [
        "## rl_tasks",
        "",
        f"Machine: {meta['machine']}; shared with other engineers' work (load average {meta['load_before']} "
        f"before, {meta['load_after']} after). Date: {meta['date']}. Sandbox backend of `files`: {meta['backend']}.",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        "The multi-step tool suites (`agentscope.rl.tasks`): every episode is played through the real environment "
        "(SQLite for `lookup`, a sandbox per episode for `files`) and a real ReActAgent (`react_agent_factory`, "
        "`max_iters=4`) by a scripted policy that reads only the conversation. The expert proves the tools "
        "suffice; the random policy calls random tools with arguments drawn from what the conversation shows "
        "(names, ids, values, file names, text spans seen) and then answers something seen: the baseline every "
        "success rate is read against.",
        "",
        "| task set | level | episodes | expert success | random success | expert calls | random calls "
        "| failed_infra | expert s/episode |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        e, r = row["expert"], row["random"]
        lines.append(
            f"| {row['set']} | {row['level']} | {row['episodes']} | {e['success']:.2f} | {r['success']:.3f} | "
            f"{e['calls']:.2f} | {r['calls']:.2f} | {int(e['infra'] + r['infra'])} | {e['s_per_episode']:.3f} |"
        )
    if tokens:
        lines += [
            "",
            "Length of an expert episode as the tiny policy sees it (the last prompt plus the answer, in tokens of "
            "the tiny tokenizer trained on these transcripts, as `agentscope rl sft` trains it), all levels:",
            "",
            "| task set | mean tokens | max tokens | of which system prompt + tool schemas |",
            "|---|---:|---:|---:|",
        ]
        for name, t in tokens.items():
            lines.append(f"| {name} | {t['mean']:.0f} | {t['max']:.0f} | {t['prefix']:.0f} |")
    level1 = ", ".join(f"{r['set']} {r['random']['success']:.1%}" for r in rows if r["level"] == 1)
    hard = max((r["random"]["success"] for r in rows if r["level"] > 1), default=0.0)
    lines += [
        "",
        "Reading: the expert needs exactly the calls each level names (lookup 2, 3, 3; files 1, 2, 3): the tools "
        "suffice and the conversation carries everything the task needs. The random policy acts but almost never "
        f"succeeds: at level 1 ({level1}) it takes one or two right copies by luck, at levels 2 and 3 (three or "
        f"more copies that must all be right) at most {hard:.1%}; that is the room RL has to show a gain.",
    ]
    if tokens:
        lines[-1] += (
            " Most of an episode is the system prompt and the tool schemas (the Qwen2.5 tool block), the same in "
            "every episode and every turn; what the policy reads and writes for the task itself is the rest, "
            f"{min(t['mean'] - t['prefix'] for t in tokens.values()):.0f}-"
            f"{max(t['mean'] - t['prefix'] for t in tokens.values()):.0f} tokens on average."
        )
    return "\n".join(lines) + "\n"


def record(section: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    start = text.find("\n## rl_tasks\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + ("" if end == -1 else "\n" + text[end + 1 :])
    path.write_text(text)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--episodes", type=int, default=100, help="tasks per task set and level (each played twice)"
    )
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the tasks and of the random policy")
    parser.add_argument("--slots", type=int, default=4, help="expert episodes at once")
    parser.add_argument("--backend", default="auto", help="sandbox backend of the files suite")
    parser.add_argument("--tokens", action="store_true", help="measure episode lengths (needs the rl extra)")
    parser.add_argument("--record", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    meta = {
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": loadavg(),
        "command": ".venv/bin/python " + " ".join(["benchmarks/rl_tasks/baselines.py", *sys.argv[1:]]),
        "backend": args.backend,
    }
    rows: list[dict[str, Any]] = []
    corpus: dict[str, tuple[list[list[Msg]], list[ToolSchema]]] = {}
    for name in args.sets.split(","):
        task_set = get_task_set(name)
        assert task_set.expert is not None
        assert task_set.random_policy is not None
        factory: EnvFactory = (
            functools.partial(task_set.env, backend=args.backend) if name == "files" else task_set.env
        )
        transcripts: list[list[Msg]] = []
        tools: list[ToolSchema] = []
        for level in LEVELS:
            tasks = load_tasks(f"{name}:n={args.episodes},seed={args.seed},level={level}")
            expert = Recorder(task_set.expert())
            started = time.perf_counter()
            expert_runs = await play(factory, expert, tasks, args.slots)
            expert_s = time.perf_counter() - started
            started = time.perf_counter()
            random_runs = await play(factory, task_set.random_policy(args.seed), tasks, 1)
            random_s = time.perf_counter() - started
            row = {
                "set": name,
                "level": level,
                "episodes": len(tasks),
                "expert": summary(expert_runs, expert_s),
                "random": summary(random_runs, random_s),
            }
            rows.append(row)
            print(name, level, {k: v for k, v in row.items() if k in ("expert", "random")}, flush=True)
            transcripts += list(expert.transcripts.values())
            if not tools:
                tools, backend = await tool_schemas(factory, tasks[0])
                if backend is not None:
                    meta["backend"] = (
                        f"{args.backend} ({backend} here)" if args.backend == "auto" else backend
                    )
        corpus[name] = (transcripts, tools)
    tokens = await anyio.to_thread.run_sync(token_lengths, corpus) if args.tokens else {}
    meta["load_after"] = loadavg()
    section = render(rows, tokens, meta)
    print()
    print(section)
    if args.record:
        record(section)
        print("recorded in benchmarks/RESULTS.md (## rl_tasks)")


if __name__ == "__main__":
    anyio.run(main)
