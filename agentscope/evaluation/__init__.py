"""Evaluation: any agent, on any task set with verifiers, measured (``agentscope eval AGENT_SPEC TASKS``).

:func:`evaluate` plays an agent factory (the agent spec of every command) on the tasks of a task-set spec (the RL
suites: ``arith``, ``lookup``, ``files``, ``miniwob``, or your own registered set), ``repeats`` times each,
``concurrency`` at once, and returns an :class:`EvaluationReport`: success, reward, steps (model and tool calls),
tokens, latency and cost per episode (:class:`EpisodeResult`), per task and aggregated under stable
``eval/...`` names. The model is the factory's own, any API model, or a trained checkpoint on the embedded rollout
engine (:func:`checkpoint_model`). Episodes are appended to a results log as they finish, so a killed evaluation resumes
without counting anything twice; with a trace store the evaluation is a run the studio shows and compares::

    from agentscope.agents import load_agent_factory
    from agentscope.evaluation import evaluate

    report = await evaluate(load_agent_factory("my_agent.py"), "arith:n=20,seed=1", repeats=3,
                            out="results.json", trace_store=".agentscope/traces.db")
    print(report.metrics["eval/success_rate"])

See docs/evaluation.md.
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports

if _typing.TYPE_CHECKING:
    from agentscope.evaluation._checkpoint import checkpoint_model
    from agentscope.evaluation._play import Price
    from agentscope.evaluation._results import EpisodeResult, EvaluationHeader, EvaluationReport, TaskSummary
    from agentscope.evaluation._run import EpisodeCallback, evaluate

__all__ = [
    "EpisodeCallback",
    "EpisodeResult",
    "EvaluationHeader",
    "EvaluationReport",
    "Price",
    "TaskSummary",
    "checkpoint_model",
    "evaluate",
]

# The runner imports the environment cluster and the task registry: load on use, so that `agentscope --help`
# (which mounts this package's command) stays light.
__getattr__ = _lazy_exports(
    __name__,
    {
        **dict.fromkeys(["EpisodeResult", "EvaluationHeader", "EvaluationReport", "TaskSummary"], "_results"),
        **dict.fromkeys(["EpisodeCallback", "evaluate"], "_run"),
        "Price": "_play",
        "checkpoint_model": "_checkpoint",
    },
)
