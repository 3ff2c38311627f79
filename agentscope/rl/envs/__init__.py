"""Environments and the environment cluster: where episodes are played.

- :class:`Environment`: reset with a :class:`~agentscope.rl.Task` to get the first message and the tools it
  offers (:class:`Observation`); a verifiable reward at the end (:class:`EnvResult`); optional per-step rewards.
- :class:`EnvCluster`: up to E episodes at once, scheduled per trajectory, with step and episode timeouts and
  restart of crashed environments.
- :func:`react_agent_factory`: the default agent (a plain :class:`~agentscope.agents.ReActAgent`).
- :class:`ScriptedRollout`: a rollout service playing a Python policy (experts and baselines through
  :func:`play_scripted`; tests without torch).
"""

from agentscope.rl.envs._agent import DEFAULT_SYS_PROMPT, AgentFactory, react_agent_factory
from agentscope.rl.envs._base import Environment, EnvironmentCrashed, EnvResult, Observation
from agentscope.rl.envs._cluster import (
    EnvCluster,
    EnvFactory,
    LiveEpisode,
    ModelFactory,
    RolloutClient,
    TrajectorySink,
)
from agentscope.rl.envs._play import play_scripted
from agentscope.rl.envs._scripted import ScriptedPolicy, ScriptedRollout

__all__ = [
    "DEFAULT_SYS_PROMPT",
    "AgentFactory",
    "EnvCluster",
    "EnvFactory",
    "EnvResult",
    "Environment",
    "EnvironmentCrashed",
    "LiveEpisode",
    "ModelFactory",
    "Observation",
    "RolloutClient",
    "ScriptedPolicy",
    "ScriptedRollout",
    "TrajectorySink",
    "play_scripted",
    "react_agent_factory",
]
