"""Task suites for RL on real agent tasks, each played by an :class:`~agentscope.rl.envs.Environment` and
selected by a task-set spec (``load_tasks("lookup:n=200,level=1")``).

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

from agentscope.rl.tasks._files import FilesEnv, files_expert, files_random_policy, files_tasks
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
    "FilesEnv",
    "LookupEnv",
    "MiniWoBEnv",
    "files_expert",
    "files_random_policy",
    "files_tasks",
    "lookup_expert",
    "lookup_random_policy",
    "lookup_tasks",
    "miniwob_expert",
    "miniwob_random_policy",
    "miniwob_task_names",
    "miniwob_tasks",
]
