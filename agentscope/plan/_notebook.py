"""PlanNotebook: the agent's plan, changed only through tools the agent calls, shown to it before each model call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from agentscope import tracing
from agentscope.exceptions import UsageError
from agentscope.message import Msg
from agentscope.plan._model import Plan, SubTask, SubTaskSpec
from agentscope.tools import Toolkit, ToolResponse
from agentscope.tracing import switch

if TYPE_CHECKING:
    from agentscope.agents import ReActAgent

__all__ = ["DEFAULT_NO_PLAN_HINT", "PLAN_SPAN", "PlanNotebook"]

PLAN_SPAN = "update_plan"
"""Name of the span recorded for every change of a plan (attributes ``agentscope.plan.*``)."""

DEFAULT_NO_PLAN_HINT = (
    "You have no plan. If the task takes several steps, make one first with create_plan, then work through its "
    "subtasks in order, recording each one's state and outcome with the plan tools."
)

_TOOL_NAMES = (
    "create_plan",
    "revise_plan",
    "update_subtask_state",
    "finish_subtask",
    "finish_plan",
    "view_plan",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error(text: str) -> ToolResponse:
    return ToolResponse.text(text, is_error=True)


class PlanNotebook:
    """A plan with ordered subtasks that an agent makes and keeps up to date through tools.

    :meth:`attach` gives an agent the tools (``create_plan``, ``revise_plan``, ``update_subtask_state``,
    ``finish_subtask``, ``finish_plan``, ``view_plan``), shows it the current plan before every model call (added
    to the system prompt of that request only: memory never holds it, and no tool call is split from its result)
    and saves the notebook with the agent's :meth:`~agentscope.agents.AgentBase.state_dict`, so a session served
    by ``agentscope serve`` keeps its plan across requests and restarts.

    One plan is open at a time; finished plans (done or abandoned) stay in :attr:`history`. Every tool checks its
    input and answers a tool error naming the problem (no plan open, no such subtask, a subtask out of order...)
    without changing anything. With tracing on, each change is an ``update_plan`` span holding the whole plan as
    JSON (``agentscope.plan``), which the studio shows next to the trace.

    Args:
        no_plan_hint: What the model is told while no plan is open (None: nothing).
        max_subtasks: Most subtasks a plan may have.
    """

    def __init__(self, *, no_plan_hint: str | None = DEFAULT_NO_PLAN_HINT, max_subtasks: int = 50) -> None:
        if max_subtasks < 1:
            raise ValueError(f"max_subtasks must be at least 1, got {max_subtasks}")
        self.plan: Plan | None = None
        """The open plan, if any."""
        self.history: list[Plan] = []
        """Finished plans, oldest first."""
        self.no_plan_hint = no_plan_hint
        self.max_subtasks = max_subtasks
        self._hint_cache: tuple[str, str, Msg] | None = None

    # ------------------------------------------------------------------ attaching

    def register_tools(self, toolkit: Toolkit) -> None:
        """Register the plan tools into ``toolkit``.

        Raises:
            UsageError: one of their names is taken (nothing is registered then).
        """
        taken = [name for name in _TOOL_NAMES if name in toolkit]
        if taken:
            raise UsageError(
                f"the toolkit already has tools named {', '.join(taken)}: a plan notebook is attached already, "
                "or remove those tools first"
            )
        for name in _TOOL_NAMES:
            toolkit.register(getattr(self, name), inline=True)

    def attach(self, agent: ReActAgent) -> None:
        """Give ``agent`` the plan tools, the plan hint before each model call, and the notebook in its state."""
        self.register_tools(agent.toolkit)
        agent.register_hook("pre_reasoning", "plan_notebook", self._inject_hint)
        agent.register_state("plan_notebook", self)

    def hint(self) -> str | None:
        """The text shown to the model before it reasons: the current plan, or the no-plan hint."""
        if self.plan is None:
            return self.no_plan_hint
        return (
            "Your current plan (change it only with the plan tools; finish the subtask in progress, marked ->, "
            f"before the next one):\n{self.plan.to_hint()}"
        )

    def _inject_hint(self, agent: ReActAgent, messages: list[Msg]) -> list[Msg]:
        """The request with the hint appended to its system message (a new one: the agent's stays as it is)."""
        hint = self.hint()
        if not hint:
            return messages
        base = messages[0] if messages and messages[0].role == "system" else None
        base_key = base.id if base is not None else ""
        cached = self._hint_cache
        if cached is not None and cached[0] == base_key and cached[1] == hint:
            system = cached[2]
        else:
            text = f"{base.text}\n\n{hint}" if base is not None else hint
            system = Msg(role="system", name=agent.name, content=text)
            self._hint_cache = (base_key, hint, system)
        return [system, *messages[1:]] if base is not None else [system, *messages]

    # ------------------------------------------------------------------ tools

    def create_plan(
        self, name: str, description: str, expected_outcome: str, subtasks: list[SubTaskSpec]
    ) -> ToolResponse:
        """Make a plan for the task: what it achieves and the ordered subtasks that get there.

        Only one plan is open at a time: finish or abandon the open one first (finish_plan).

        Args:
            name: A short name for the plan.
            description: The task the plan solves.
            expected_outcome: What is true when the plan is done.
            subtasks: The steps in order, each with a name and a description.
        """
        if self.plan is not None:
            return _error(
                f"A plan is already open: {self.plan.name!r}. Finish or abandon it with finish_plan before "
                "creating another, or change it with revise_plan."
            )
        if not name.strip():
            return _error("The plan needs a non-empty name.")
        if len(subtasks) > self.max_subtasks:
            return _error(f"A plan has at most {self.max_subtasks} subtasks; you gave {len(subtasks)}.")
        self.plan = Plan(
            name=name,
            description=description,
            expected_outcome=expected_outcome,
            subtasks=[SubTask(name=s.name, description=s.description) for s in subtasks],
        )
        self._changed("create_plan")
        return self._answer(f"Plan {name!r} created with {len(subtasks)} subtasks.")

    def revise_plan(
        self,
        action: Literal["add", "revise", "delete"],
        subtask_index: int,
        name: str = "",
        description: str = "",
    ) -> ToolResponse:
        """Change the open plan: add a subtask, revise one that has not started, or delete one.

        Args:
            action: "add" inserts a new subtask at subtask_index (the number of subtasks appends it); "revise"
                replaces the name and/or description of a subtask still to do; "delete" removes a subtask that
                is not in progress or done.
            subtask_index: Position of the subtask, counted from 0.
            name: The subtask's name (needed to add; to revise, empty keeps the old one).
            description: The subtask's description (to revise, empty keeps the old one).
        """
        plan = self.plan
        if plan is None:
            return _error("There is no open plan to revise; create one with create_plan.")
        count = len(plan.subtasks)
        if action == "add":
            if not 0 <= subtask_index <= count:
                return _error(
                    f"Cannot add at subtask_index {subtask_index}: use 0 to {count} ({count} appends)."
                )
            if not name.strip():
                return _error("A new subtask needs a non-empty name.")
            if count >= self.max_subtasks:
                return _error(f"The plan already has the most subtasks allowed ({self.max_subtasks}).")
            plan.subtasks.insert(subtask_index, SubTask(name=name, description=description))
            summary = f"Subtask {subtask_index} {name!r} added."
        else:
            problem = self._index_problem(plan, subtask_index)
            if problem:
                return _error(problem)
            sub = plan.subtasks[subtask_index]
            if action == "revise":
                if sub.state != "todo":
                    return _error(
                        f"Subtask {subtask_index} {sub.name!r} is {sub.state}; only a subtask still to do can be "
                        "revised (add a new one instead)."
                    )
                if not name.strip() and not description:
                    return _error("Give a new name or description to revise the subtask with.")
                plan.subtasks[subtask_index] = sub.model_copy(
                    update={"name": name.strip() or sub.name, "description": description or sub.description}
                )
                summary = f"Subtask {subtask_index} revised."
            else:
                if sub.state in ("in_progress", "done"):
                    return _error(
                        f"Subtask {subtask_index} {sub.name!r} is {sub.state} and cannot be deleted; abandon it "
                        "with update_subtask_state instead."
                    )
                del plan.subtasks[subtask_index]
                summary = f"Subtask {subtask_index} {sub.name!r} deleted."
        self._changed(f"revise_plan:{action}")
        return self._answer(summary)

    def update_subtask_state(
        self, subtask_index: int, state: Literal["todo", "in_progress", "abandoned"], reason: str = ""
    ) -> ToolResponse:
        """Start a subtask (in_progress), put it back (todo) or give it up (abandoned).

        Subtasks run in order, one at a time: a subtask starts only when every earlier one is done or abandoned.
        Mark a subtask done with finish_subtask.

        Args:
            subtask_index: Position of the subtask, counted from 0.
            state: The new state.
            reason: Why, when abandoning it.
        """
        plan = self.plan
        if plan is None:
            return _error("There is no open plan; create one with create_plan.")
        problem = self._index_problem(plan, subtask_index)
        if problem:
            return _error(problem)
        sub = plan.subtasks[subtask_index]
        if sub.state in ("done", "abandoned"):
            return _error(f"Subtask {subtask_index} {sub.name!r} is already {sub.state}; its state is final.")
        if state == "in_progress":
            for i, earlier in enumerate(plan.subtasks[:subtask_index]):
                if earlier.state not in ("done", "abandoned"):
                    return _error(
                        f"Subtask {subtask_index} {sub.name!r} cannot start: subtask {i} {earlier.name!r} is "
                        f"{earlier.state}. Finish or abandon it first."
                    )
            sub.state = "in_progress"
            plan.state = "in_progress"
        elif state == "abandoned":
            sub.state = "abandoned"
            sub.outcome = reason or None
            sub.finished_at = _now()
        else:
            sub.state = "todo"
        self._changed("update_subtask_state")
        return self._answer(f"Subtask {subtask_index} {sub.name!r} is now {state}.")

    def finish_subtask(self, subtask_index: int, outcome: str) -> ToolResponse:
        """Mark a subtask done with what came of it; the next subtask still to do starts.

        Args:
            subtask_index: Position of the subtask, counted from 0.
            outcome: What the subtask produced or found (the next steps rely on it).
        """
        plan = self.plan
        if plan is None:
            return _error("There is no open plan; create one with create_plan.")
        problem = self._index_problem(plan, subtask_index)
        if problem:
            return _error(problem)
        sub = plan.subtasks[subtask_index]
        if sub.state != "in_progress":
            return _error(
                f"Subtask {subtask_index} {sub.name!r} is {sub.state}, not in progress; only the subtask in "
                "progress can be finished (start it with update_subtask_state)."
            )
        if not outcome.strip():
            return _error("Give the subtask's outcome: what it produced or found.")
        sub.state = "done"
        sub.outcome = outcome
        sub.finished_at = _now()
        following = next(
            (i for i in range(subtask_index + 1, len(plan.subtasks)) if plan.subtasks[i].state == "todo"),
            None,
        )
        summary = f"Subtask {subtask_index} {sub.name!r} done."
        if following is not None:
            plan.subtasks[following].state = "in_progress"
            summary += f" Subtask {following} {plan.subtasks[following].name!r} is now in progress."
        else:
            summary += " No subtask is left to do: finish the plan with finish_plan."
        self._changed("finish_subtask")
        return self._answer(summary)

    def finish_plan(self, state: Literal["done", "abandoned"], outcome: str) -> ToolResponse:
        """Close the open plan, done or abandoned, with its outcome; it is kept in the plan history.

        Args:
            state: "done" when every subtask is done or abandoned and the goal is reached; "abandoned" to give up.
            outcome: What came of the plan (for "abandoned": why it was given up).
        """
        plan = self.plan
        if plan is None:
            return _error("There is no open plan to finish.")
        if not outcome.strip():
            return _error("Give the plan's outcome.")
        if state == "done":
            open_ = [
                f"{i} {s.name!r} ({s.state})"
                for i, s in enumerate(plan.subtasks)
                if s.state in ("todo", "in_progress")
            ]
            if open_:
                return _error(
                    "The plan cannot be done while subtasks are open: "
                    f"{', '.join(open_)}. Finish or abandon them, or abandon the plan."
                )
        plan.state = state
        plan.outcome = outcome
        plan.finished_at = _now()
        self._changed("finish_plan")
        self.plan = None
        self.history.append(plan)
        return ToolResponse(
            content=ToolResponse.text(f"Plan {plan.name!r} is {state}.").content,
            structured=plan.model_dump(mode="json"),
        )

    def view_plan(self, include_history: bool = False) -> ToolResponse:
        """Show the open plan with every subtask's state and outcome.

        Args:
            include_history: Also list the finished plans with their outcomes.
        """
        lines = [self.plan.to_hint() if self.plan is not None else "There is no open plan."]
        if include_history:
            lines.append(f"Finished plans ({len(self.history)}):")
            lines.extend(f"- {p.name} [{p.state}]: {p.outcome}" for p in self.history)
        return ToolResponse.text("\n".join(lines))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The open plan and the history as JSON-compatible data."""
        return {
            "plan": self.plan.model_dump(mode="json") if self.plan is not None else None,
            "history": [p.model_dump(mode="json") for p in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state saved by :meth:`state_dict`."""
        plan = state.get("plan")
        self.plan = Plan.model_validate(plan) if plan is not None else None
        self.history = [Plan.model_validate(p) for p in state.get("history", [])]
        self._hint_cache = None

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _index_problem(plan: Plan, index: int) -> str | None:
        count = len(plan.subtasks)
        if 0 <= index < count:
            return None
        if count == 0:
            return f"The plan has no subtasks, so there is no subtask {index}; add one with revise_plan."
        return f"There is no subtask {index}: the plan has {count} subtasks, numbered 0 to {count - 1}."

    def _answer(self, summary: str) -> ToolResponse:
        plan = self.plan
        text = f"{summary}\n{plan.to_hint()}" if plan is not None else summary
        return ToolResponse(
            content=ToolResponse.text(text).content,
            structured=plan.model_dump(mode="json") if plan is not None else None,
        )

    def _changed(self, change: str) -> None:
        """Record the change as an ``update_plan`` span with the whole plan (when tracing is on)."""
        if not switch.ON or self.plan is None:
            return
        plan = self.plan
        attributes: dict[str, object] = {
            "agentscope.plan.change": change,
            "agentscope.plan.id": plan.id,
            "agentscope.plan.name": plan.name,
            "agentscope.plan.state": plan.state,
            "agentscope.plan": tracing.Json(plan.model_dump(mode="json")),
        }
        with tracing.span(PLAN_SPAN, "tool", attributes):
            pass
