"""Plan notebook: plans with ordered subtasks that an agent makes, follows and finishes through tools.

>>> notebook = PlanNotebook()
>>> notebook.attach(agent)  # the plan tools, the plan before each model call, the plan saved with the session

See :class:`PlanNotebook` and docs/plan.md.
"""

from agentscope.plan._model import Plan, PlanState, SubTask, SubTaskSpec, SubTaskState
from agentscope.plan._notebook import DEFAULT_NO_PLAN_HINT, PLAN_SPAN, PlanNotebook

__all__ = [
    "DEFAULT_NO_PLAN_HINT",
    "PLAN_SPAN",
    "Plan",
    "PlanNotebook",
    "PlanState",
    "SubTask",
    "SubTaskSpec",
    "SubTaskState",
]
