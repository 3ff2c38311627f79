"""MiniWoB++ in Chromium: the benchmark's 130 web tasks as an RL environment, driven through the browser sandbox.

- :func:`miniwob_tasks`: episodes by task name and seed (spec ``miniwob:tasks=click-button|click-link,n=200,seed=0``;
  ``tasks=default`` is :data:`MINIWOB_DEFAULT_TASKS`, the wired tasks; ``tasks=all`` every task of the package).
- :class:`MiniWoBEnv`: plays one episode at a time in a fresh context of a shared Chromium; the page's own
  JavaScript sets the problem (seeded) and the reward; the agent acts with ``click``, ``type``, ``press`` and
  ``select`` on the refs of a compact accessibility tree.
- :func:`miniwob_expert` and :func:`miniwob_random_policy`: scripted policies over the conversation.

The HTML comes from the ``miniwob`` package (``pip install -e '.[miniwob]'``), served from 127.0.0.1.
Importing this package imports neither Playwright nor the ``miniwob`` package.
"""

from agentscope.rl.tasks._miniwob._env import MiniWoBEnv
from agentscope.rl.tasks._miniwob._experts import miniwob_expert, miniwob_random_policy
from agentscope.rl.tasks._miniwob._server import miniwob_task_names
from agentscope.rl.tasks._miniwob._spec import MINIWOB_DEFAULT_TASKS, miniwob_tasks

__all__ = [
    "MINIWOB_DEFAULT_TASKS",
    "MiniWoBEnv",
    "miniwob_expert",
    "miniwob_random_policy",
    "miniwob_task_names",
    "miniwob_tasks",
]
