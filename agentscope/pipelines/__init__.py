"""Multi-agent orchestration: pipelines and the MsgHub group chat."""

from agentscope.pipelines._msghub import MsgHub
from agentscope.pipelines._pipelines import fanout_pipeline, sequential_pipeline

__all__ = ["MsgHub", "fanout_pipeline", "sequential_pipeline"]
