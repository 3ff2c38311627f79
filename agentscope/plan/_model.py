"""A plan and its subtasks: plain pydantic data, saved as JSON with the agent's session."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from agentscope.message import new_id

__all__ = ["Plan", "PlanState", "SubTask", "SubTaskSpec", "SubTaskState"]

SubTaskState: TypeAlias = Literal["todo", "in_progress", "done", "abandoned"]
"""Where a subtask stands; ``done`` and ``abandoned`` are final."""

PlanState: TypeAlias = Literal["todo", "in_progress", "done", "abandoned"]
"""Where a plan stands: ``in_progress`` once a subtask started; ``done`` and ``abandoned`` are final."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SubTaskSpec(BaseModel):
    """A subtask as the model writes it when it creates or extends a plan."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    """A short name for the step."""
    description: str = ""
    """What the step does and how it is known to be done."""


class SubTask(BaseModel):
    """One step of a :class:`Plan`."""

    name: str
    """A short name for the step."""
    description: str = ""
    """What the step does and how it is known to be done."""
    state: SubTaskState = "todo"
    """Where it stands."""
    outcome: str | None = None
    """What came of it (set when it is finished or abandoned)."""
    created_at: str = Field(default_factory=_now)
    finished_at: str | None = None


class Plan(BaseModel):
    """A plan: what is to be achieved and the ordered subtasks that get there."""

    id: str = Field(default_factory=new_id)
    name: str
    """A short name."""
    description: str = ""
    """The task the plan solves."""
    expected_outcome: str = ""
    """What is true when the plan is done."""
    subtasks: list[SubTask] = Field(default_factory=list[SubTask])
    """The steps, in the order they are to be done."""
    state: PlanState = "todo"
    """Where it stands."""
    outcome: str | None = None
    """What came of it (set when it is finished)."""
    created_at: str = Field(default_factory=_now)
    finished_at: str | None = None

    @property
    def current(self) -> int | None:
        """The index of the subtask in progress, if one is."""
        return next((i for i, s in enumerate(self.subtasks) if s.state == "in_progress"), None)

    def to_hint(self) -> str:
        """The plan as compact text: one line per subtask with its state, the one in progress marked."""
        lines = [f"Plan: {self.name} [{self.state}]"]
        if self.description:
            lines.append(f"Task: {self.description}")
        if self.expected_outcome:
            lines.append(f"Expected outcome: {self.expected_outcome}")
        lines.append("Subtasks:")
        for i, sub in enumerate(self.subtasks):
            marker = "->" if sub.state == "in_progress" else "  "
            line = f"{marker} {i}. [{sub.state}] {sub.name}"
            if sub.description and sub.state in ("todo", "in_progress"):
                line += f": {sub.description}"
            if sub.outcome:
                line += f" (outcome: {sub.outcome})"
            lines.append(line)
        if not self.subtasks:
            lines.append("   (none yet: add them with revise_plan)")
        return "\n".join(lines)
