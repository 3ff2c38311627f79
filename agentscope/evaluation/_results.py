"""What an evaluation records: one :class:`EpisodeResult` per (task, repeat), the append-only results log that
makes it resumable, and the :class:`EvaluationReport` aggregated from it.

The log (``results.jsonl`` beside ``results.json``) starts with a header line naming the evaluation (its agent,
task set, model and run id); every finished episode is appended as one line the moment it ends. Reading it back
keeps the last line of each ``(task_key, repeat)`` and ignores a last line cut short by a kill, so an evaluation
continues where it stopped and counts nothing twice.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, JsonValue, ValidationError

from agentscope.exceptions import UsageError

__all__ = [
    "EpisodeResult",
    "EvaluationHeader",
    "EvaluationReport",
    "TaskSummary",
    "log_path",
    "read_log",
    "summarise",
    "write_json_atomically",
]

LOG_FORMAT = 1
"""Version of the results log's format (in its header)."""


class EpisodeResult(BaseModel):
    """One episode of an evaluation: a task played once, judged by its verifier."""

    task_key: str
    """The task's content key (what the task *is*: the same problem has the same key in every run)."""
    repeat: int
    """Which repeat of the task this is (0 to ``repeats - 1``)."""
    task_id: str
    """The task's id in its task set."""
    status: str
    """How the episode ended: ``ok``, ``truncated`` (step limit; still judged), ``failed_agent`` (the agent
    raised), ``failed_infra`` (the environment or the model endpoint failed; played again on resume)."""
    success: bool
    """The verifier's verdict."""
    reward: float
    """The verifier's reward."""
    model_calls: int = 0
    """Model calls the agent made (its reasoning steps)."""
    tool_calls: int = 0
    """Tool calls the agent made."""
    input_tokens: int = 0
    """Prompt tokens over the episode's model calls, as the model reported them (0 when it reports none)."""
    output_tokens: int = 0
    """Generated tokens over the episode's model calls."""
    latency_s: float = 0.0
    """Wall-clock time of the episode, from the environment's reset to the verifier's verdict."""
    cost: float | None = None
    """What the episode's tokens cost (``price``), or None when no price is known."""
    trace_id: str | None = None
    """The episode's trace in the trace store (None when not traced)."""
    error: str | None = None
    """Why the episode failed, for ``failed_*`` statuses."""
    info: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """The verifier's numeric details (``env/tool_calls``, ``env/correct``...)."""

    @property
    def key(self) -> tuple[str, int]:
        """``(task_key, repeat)``: what identifies the episode in the log and the trace store."""
        return self.task_key, self.repeat


class EvaluationHeader(BaseModel):
    """The first line of a results log: which evaluation the episodes belong to."""

    format: int = LOG_FORMAT
    """The log format's version."""
    name: str
    """The evaluation's name (the run's name in the trace store)."""
    agent: str
    """The agent spec (or the factory's name when called from Python)."""
    tasks: str
    """The task-set spec (or a digest of the tasks' content keys when given as a list)."""
    model: str | None = None
    """The model handed to the factory (``PROVIDER:MODEL``), or None for the factory's own."""
    run_id: str
    """The evaluation's run id in the trace store (kept across resumes)."""


class TaskSummary(BaseModel):
    """One task over its repeats."""

    task_key: str
    """The task's content key."""
    task_id: str
    """The task's id."""
    episodes: int
    """Episodes played."""
    successes: int
    """Episodes the verifier judged solved."""
    success_rate: float
    """``successes / episodes``."""
    reward_mean: float
    """Mean reward over its episodes."""


class EvaluationReport(BaseModel):
    """An evaluation's results: metrics over all episodes, per task, and every episode (``results.json``)."""

    name: str
    """The evaluation's name."""
    agent: str
    """The agent spec."""
    tasks: str
    """The task-set spec."""
    model: str | None
    """The model handed to the factory, if any."""
    run_id: str
    """Its run in the trace store."""
    repeats: int
    """Episodes per task."""
    expected_episodes: int
    """Tasks times repeats."""
    complete: bool
    """Every (task, repeat) has a result that is not an infrastructure failure."""
    metrics: dict[str, float]
    """Aggregates under stable names: ``eval/success_rate``, ``eval/reward_mean``, ``eval/task_success_rate``
    (mean over tasks of their success rate), ``eval/episodes``, ``eval/model_calls_mean``,
    ``eval/tool_calls_mean``, ``eval/input_tokens``, ``eval/output_tokens`` (totals), ``eval/latency_s_mean``,
    ``eval/latency_s_p50``, ``eval/latency_s_p95``, and ``eval/cost`` (total) when a price is known."""
    statuses: dict[str, int]
    """Episodes by status."""
    per_task: list[TaskSummary]
    """Each task over its repeats, in task order."""
    episodes: list[EpisodeResult]
    """Every episode, by task then repeat."""


def log_path(out: Path) -> Path:
    """The results log beside ``out`` (``results.json`` -> ``results.jsonl``)."""
    if out.suffix == ".jsonl":
        raise UsageError(
            f"--out {out} names the results log itself; give the JSON file (e.g. {out.stem}.json)"
        )
    return out.with_suffix(".jsonl")


def read_log(path: Path) -> tuple[EvaluationHeader | None, dict[tuple[str, int], EpisodeResult], int]:
    """The header and the episodes of a results log (the last line of each key wins), and how many bytes of it
    are whole lines. Whatever follows the last newline is a line a kill cut short: it is not read (that episode
    is played again), and the caller truncates it away before appending. Blocking.

    Raises:
        UsageError: the file is not a results log (a line does not parse, or there is no header).
    """
    if not path.exists():
        return None, {}, 0
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    header: EvaluationHeader | None = None
    episodes: dict[tuple[str, int], EpisodeResult] = {}
    for number, line in enumerate(data[:whole].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if header is None:
                header = EvaluationHeader.model_validate(record["header"])
            else:
                episode = EpisodeResult.model_validate(record)
                episodes[episode.key] = episode
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise UsageError(
                f"{path} line {number} is not part of an evaluation's results log: {exc}"
            ) from None
    return header, episodes, whole


def summarise(
    header: EvaluationHeader,
    tasks: Sequence[tuple[str, str]],
    repeats: int,
    episodes: Iterable[EpisodeResult],
) -> EvaluationReport:
    """The report of ``episodes`` of the ``(task_key, task_id)`` pairs ``tasks`` played ``repeats`` times each
    (episodes of other keys or repeats, from an earlier run with other settings, are left out)."""
    order = {key: index for index, (key, _) in enumerate(tasks)}
    kept = sorted(
        (e for e in episodes if e.task_key in order and 0 <= e.repeat < repeats),
        key=lambda e: (order[e.task_key], e.repeat),
    )
    statuses: dict[str, int] = {}
    for e in kept:
        statuses[e.status] = statuses.get(e.status, 0) + 1
    by_task: dict[str, list[EpisodeResult]] = {}
    for e in kept:
        by_task.setdefault(e.task_key, []).append(e)
    per_task = [
        TaskSummary(
            task_key=key,
            task_id=task_id,
            episodes=len(group),
            successes=sum(e.success for e in group),
            success_rate=sum(e.success for e in group) / len(group),
            reward_mean=statistics.fmean(e.reward for e in group),
        )
        for key, task_id in tasks
        if (group := by_task.get(key))
    ]
    done = sum(1 for e in kept if e.status != "failed_infra")
    return EvaluationReport(
        name=header.name,
        agent=header.agent,
        tasks=header.tasks,
        model=header.model,
        run_id=header.run_id,
        repeats=repeats,
        expected_episodes=len(tasks) * repeats,
        complete=done == len(tasks) * repeats,
        metrics=metrics_of(kept, per_task),
        statuses=dict(sorted(statuses.items())),
        per_task=per_task,
        episodes=kept,
    )


def metrics_of(episodes: Sequence[EpisodeResult], per_task: Sequence[TaskSummary] = ()) -> dict[str, float]:
    """The ``eval/...`` aggregates of ``episodes`` (see :attr:`EvaluationReport.metrics`); empty for none."""
    if not episodes:
        return {"eval/episodes": 0.0}
    latencies = sorted(e.latency_s for e in episodes)
    metrics = {
        "eval/episodes": float(len(episodes)),
        "eval/success_rate": sum(e.success for e in episodes) / len(episodes),
        "eval/reward_mean": statistics.fmean(e.reward for e in episodes),
        "eval/model_calls_mean": statistics.fmean(e.model_calls for e in episodes),
        "eval/tool_calls_mean": statistics.fmean(e.tool_calls for e in episodes),
        "eval/input_tokens": float(sum(e.input_tokens for e in episodes)),
        "eval/output_tokens": float(sum(e.output_tokens for e in episodes)),
        "eval/latency_s_mean": statistics.fmean(latencies),
        "eval/latency_s_p50": _quantile(latencies, 0.5),
        "eval/latency_s_p95": _quantile(latencies, 0.95),
    }
    if per_task:
        metrics["eval/task_success_rate"] = statistics.fmean(t.success_rate for t in per_task)
    costs = [e.cost for e in episodes]
    if all(c is not None for c in costs):
        metrics["eval/cost"] = math.fsum(c for c in costs if c is not None)
    return metrics


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def append_line(path: Path, record: Any) -> None:
    """Append one JSON line to ``path`` (one write, flushed to the OS: a killed process loses nothing written).
    Blocking."""
    with path.open("ab") as file:
        file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")


def write_json_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
