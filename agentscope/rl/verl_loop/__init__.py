"""An AgentScope agent inside verl's trainer: the ``agentscope_react`` agent loop.

``python -m verl.trainer.main_ppo`` runs its rollouts through agent loops (``verl.experimental.agent_loop``);
this package registers one, :class:`AgentScopeReactLoop`, under the name ``agentscope_react``
(:data:`AGENT_NAME`). It builds the agent named by an agent spec (the same ``path/to/file.py[:NAME]`` or
``module:NAME`` as ``agentscope run`` and ``agentscope rl train``), gives it the policy as a
:class:`~agentscope.rl.rollout.RolloutChatModel` whose engine is verl's LLM server client
(:class:`VerlServerEngine`), lets it reply to the row's prompt with its own tools, and returns verl's
``AgentLoopOutput``: the token ids the model read and wrote, a response mask (1 on generated tokens, 0 on tool
results and chat-format tokens), the rollout log-probs when verl asks for them, and optionally a reward.

Point verl at it with an agent loop config file (``examples/rl/verl/agent_loop.yaml``)::

    - name: agentscope_react
      _target_: agentscope.rl.verl_loop.AgentScopeReactLoop
      agent: examples/calculator.py:build_agent

and ``actor_rollout_ref.rollout.agent.agent_loop_config_path=examples/rl/verl/agent_loop.yaml``, then select it
per row (``agent_name: agentscope_react``) or for all rows
(``actor_rollout_ref.rollout.agent.default_agent_loop=agentscope_react``). The README's reinforcement learning
section has the whole recipe.

Importing this package imports verl (``pip install -e '.[rl]'``, then ``bash scripts/setup.d/30-verl.sh``);
``import agentscope`` and ``import agentscope.rl`` never import it.
"""

from __future__ import annotations

import importlib as _importlib
import warnings as _warnings

try:  # verl, and everything its agent loop imports (datasets, cachetools... beyond the trainer's needs)
    with _warnings.catch_warnings():
        # verl.single_controller.ray imports ray.experimental.state, which Ray deprecates with a warning on import
        _warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
        _importlib.import_module("verl.experimental.agent_loop.agent_loop")
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"agentscope.rl.verl_loop needs verl's agent loop ({exc}): pip install -e '.[rl]', then "
        "bash scripts/setup.d/30-verl.sh (verl==0.9.1 --no-deps and its CPU dependencies)"
    ) from exc

from agentscope.rl.verl_loop._engine import ResponseBudgetSpent, ServerManager, VerlServerEngine
from agentscope.rl.verl_loop._loop import AGENT_NAME, AGENT_SPEC_FIELD, AgentScopeReactLoop

__all__ = [
    "AGENT_NAME",
    "AGENT_SPEC_FIELD",
    "AgentScopeReactLoop",
    "ResponseBudgetSpent",
    "ServerManager",
    "VerlServerEngine",
]
