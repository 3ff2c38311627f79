"""The data manager: a SQLite trajectory store and DART-style curation into training batches.

Light to import (SQLite and pydantic only): the trainer, not the data manager, needs torch.
"""

from agentscope.rl.data._config import DataConfig
from agentscope.rl.data._manager import DataManager, ResumeReport
from agentscope.rl.data._store import Rollback, TrajectoryStore

__all__ = ["DataConfig", "DataManager", "ResumeReport", "Rollback", "TrajectoryStore"]
