"""Task sets for RL, each played by an :class:`~agentscope.rl.envs.Environment` and selected by a spec.

:func:`load_tasks` builds tasks from a spec (``load_tasks("lookup:n=200,level=1")``; ``split=train|warm|eval``
keeps disjoint splits by content key, :func:`overlapping` checks any two sets); :func:`get_task_set` gives a
set's environment, expert and random policy; :func:`register_task_set` adds your own. ``arith``
(:class:`ArithEnv`) is the smoke task: two-operand arithmetic with a calculator tool.

Multi-step tool tasks, generated in code, graded by a verifier, with difficulty levels (``level=1``, ``2``,
``3``, or a mixture such as ``level=1-3``):

- ``lookup`` (:class:`LookupEnv`, :func:`lookup_tasks`): questions answered by a chain of tool calls over a
  small SQLite database made per task (find the id, read the record, follow it, compute).
- ``files`` (:class:`FilesEnv`, :func:`files_tasks`): create or edit files with the built-in file and code
  tools so that a check run in a sandbox passes (bubblewrap, or Docker when an engine answers).

GUI tasks: ``miniwob`` (:class:`MiniWoBEnv`, :func:`miniwob_tasks`): MiniWoB++'s web tasks in Chromium through
the browser sandbox, rewarded by the page's own JavaScript (``miniwob:tasks=click-button|click-link,n=200``;
``pip install -e '.[miniwob]'``; see ``docs/miniwob.md``).

Each comes with a scripted expert (proof that the tools suffice, and demonstrations) and a random policy (the
baseline), both reading only the conversation.
"""

import typing as _typing

from agentscope._lazy import lazy_exports as _lazy_exports
from agentscope.rl.tasks._arith import ArithEnv, arith_demonstrations, arith_tasks
from agentscope.rl.tasks._registry import (
    SPLITS,
    TaskSet,
    get_task_set,
    load_tasks,
    overlapping,
    parse_task_spec,
    register_task_set,
    split_of,
    with_task_spec_args,
)

if _typing.TYPE_CHECKING:
    from agentscope.rl.tasks._files import FilesEnv, files_tasks
    from agentscope.rl.tasks._files_policies import files_expert, files_random_policy
    from agentscope.rl.tasks._lookup import LookupEnv, lookup_expert, lookup_random_policy, lookup_tasks
    from agentscope.rl.tasks._miniwob import (
        MINIWOB_DEFAULT_TASKS,
        MiniWoBEnv,
        miniwob_expert,
        miniwob_random_policy,
        miniwob_task_names,
        miniwob_tasks,
    )

__all__ = [
    "MINIWOB_DEFAULT_TASKS",
    "SPLITS",
    "ArithEnv",
    "FilesEnv",
    "LookupEnv",
    "MiniWoBEnv",
    "TaskSet",
    "arith_demonstrations",
    "arith_tasks",
    "files_expert",
    "files_random_policy",
    "files_tasks",
    "get_task_set",
    "load_tasks",
    "lookup_expert",
    "lookup_random_policy",
    "lookup_tasks",
    "miniwob_expert",
    "miniwob_random_policy",
    "miniwob_task_names",
    "miniwob_tasks",
    "overlapping",
    "parse_task_spec",
    "register_task_set",
    "split_of",
    "with_task_spec_args",
]

# The suites load on first use: a config naming ``arith`` (or only reading the registry) imports no SQLite task
# databases, sandboxes or browser code.
__getattr__ = _lazy_exports(
    __name__,
    {
        **dict.fromkeys(["FilesEnv", "files_tasks"], "_files"),
        **dict.fromkeys(["files_expert", "files_random_policy"], "_files_policies"),
        **dict.fromkeys(["LookupEnv", "lookup_expert", "lookup_random_policy", "lookup_tasks"], "_lookup"),
        **dict.fromkeys(
            [
                "MINIWOB_DEFAULT_TASKS",
                "MiniWoBEnv",
                "miniwob_expert",
                "miniwob_random_policy",
                "miniwob_task_names",
                "miniwob_tasks",
            ],
            "_miniwob",
        ),
    },
)
