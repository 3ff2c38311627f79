"""The RL data model: tasks, turns captured at the model boundary, and trajectories."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from agentscope.message import new_id

__all__ = ["FlatSample", "Task", "Trajectory", "TrajectoryStatus", "Turn"]

TrajectoryStatus: TypeAlias = Literal[
    "ok",
    "truncated",
    "failed_infra",
    "failed_agent",
    "dropped_stale",
    "dropped_zero_variance",
    "aborted",
]
"""What became of an episode.

``ok``: finished with a reward. ``truncated``: hit a length or step limit (still trainable, reward as given).
``failed_infra``: the environment, sandbox or rollout service failed; never trained on. ``failed_agent``: the agent
raised; never trained on. ``dropped_stale``: older than ``max_staleness`` policy versions when a batch was formed.
``dropped_zero_variance``: its group had identical rewards, so its advantage is zero. ``aborted``: stopped by the
scheduler because it could no longer be trained on.
"""


class Task(BaseModel):
    """One task an environment can be reset with."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Stable identifier (task statistics and adaptive rollouts are keyed by it)."""
    prompt: str
    """What the agent is asked."""
    answer: JsonValue = None
    """Reference answer the environment's verifier uses, if any."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])
    """Anything else the environment needs. A string ``content_key`` here overrides :attr:`content_key`."""

    @property
    def content_key(self) -> str:
        """What the task *is*, independent of its id: two tasks with the same key are the same problem.

        ``metadata["content_key"]`` when the task set sets one (e.g. a GUI task's name and seed), else a hash of
        the prompt, the answer and the metadata. Train, warm-start and evaluation sets are kept disjoint by it
        (``split=`` in a task spec, and the overlap check when a config loads).
        """
        explicit = self.metadata.get("content_key")
        if isinstance(explicit, str) and explicit:
            return explicit
        content = json.dumps([self.prompt, self.answer, self.metadata], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(content.encode()).hexdigest()[:24]


class Turn(BaseModel):
    """One model call of an episode, exactly as the policy saw and produced it."""

    prompt_ids: list[int]
    """The full prompt, token ids. Turn t+1's prompt begins with turn t's ``prompt_ids + completion_ids``."""
    completion_ids: list[int]
    """Tokens the policy generated."""
    logprobs: list[float]
    """Log-probability of each completion token under the policy that sampled it (same length)."""
    version_head: int
    """Policy version that generated the first completion token."""
    version_tail: int
    """Policy version that generated the last completion token (differs when weights changed mid-request)."""
    reward: float | None = None
    """Optional per-turn reward (the episode reward is broadcast when None)."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``tool_calls``."""
    trainable: bool = True
    """Whether the trainer learns from this turn's tokens. Data curation may switch it off (high-entropy step
    selection keeps only the most uncertain turns); :meth:`Trajectory.flatten` then masks them with 0."""


class FlatSample(BaseModel):
    """An episode flattened into one sequence, in verl's layout."""

    prompt_ids: list[int]
    """The first turn's prompt."""
    response_ids: list[int]
    """Everything after the prompt: generated tokens and, between turns, tool/environment tokens."""
    response_mask: list[int]
    """1 on tokens the policy generated, 0 on tool and environment tokens."""
    response_logprobs: list[float]
    """Rollout log-probs on policy tokens, 0.0 elsewhere (same length as ``response_ids``)."""
    token_rewards: list[float] | None = None
    """Per-token reward placement when turns carry their own rewards (reward at each turn's last token)."""


class Trajectory(BaseModel):
    """An episode: its turns, its reward, and what became of it."""

    trajectory_id: str = Field(default_factory=new_id)
    """Unique id."""
    task_id: str
    """The task played."""
    group_id: str
    """Episodes of one task sampled together share a group (verl's ``uid``); advantages are computed per group."""
    turns: list[Turn] = Field(default_factory=list[Turn])
    """Model calls in order."""
    reward: float = 0.0
    """Final episode reward."""
    success: bool = False
    """Whether the verifier judged the task solved."""
    status: TrajectoryStatus = "ok"
    """What became of the episode."""
    error: str | None = None
    """Why it failed, for failed statuses; for a ``truncated`` one, why it was cut short when that was not the turn
    limit (the conversation outgrew the context window)."""
    trace_id: str | None = None
    """The episode's trace in the trace store."""
    created_at: float = Field(default_factory=time.time)
    """When the episode finished."""
    metrics: dict[str, float] = Field(default_factory=dict[str, float])
    """Episode measurements: ``env/steps``, ``env/episode_s``, ..."""

    @property
    def policy_versions(self) -> list[int]:
        """Distinct policy versions that generated this episode, ascending."""
        return sorted({v for t in self.turns for v in (t.version_head, t.version_tail)})

    @property
    def min_version(self) -> int:
        """Oldest policy version in the episode (staleness is measured from it); -1 when there are no turns."""
        return min((t.version_head for t in self.turns), default=-1)

    @property
    def num_generated_tokens(self) -> int:
        """Tokens the policy generated over all turns."""
        return sum(len(t.completion_ids) for t in self.turns)

    def flatten(self) -> list[FlatSample]:
        """The episode as verl samples: one per run of turns whose prompts extend each other.

        Token-in/token-out makes every turn's prompt begin with the previous prompt and completion, so an episode
        normally becomes one sample: the first prompt, then generated tokens (mask 1) interleaved with the
        tool/environment tokens added between turns (mask 0). When a prompt does not extend the previous turn (the
        agent rewrote its history), a new sample starts there.
        """
        samples: list[FlatSample] = []
        current: FlatSample | None = None
        context: list[int] = []
        per_turn_rewards = any(t.reward is not None for t in self.turns)
        for turn in self.turns:
            extends = current is not None and turn.prompt_ids[: len(context)] == context
            if current is None or not extends:
                current = FlatSample(
                    prompt_ids=list(turn.prompt_ids),
                    response_ids=[],
                    response_mask=[],
                    response_logprobs=[],
                    token_rewards=[] if per_turn_rewards else None,
                )
                samples.append(current)
                observation: list[int] = []
            else:
                observation = turn.prompt_ids[len(context) :]
            current.response_ids += observation + turn.completion_ids
            current.response_mask += [0] * len(observation) + [int(turn.trainable)] * len(turn.completion_ids)
            current.response_logprobs += [0.0] * len(observation) + list(turn.logprobs)
            if current.token_rewards is not None:
                rewards = [0.0] * (len(observation) + len(turn.completion_ids))
                if rewards:
                    rewards[-1] = turn.reward or 0.0
                current.token_rewards += rewards
            context = turn.prompt_ids + turn.completion_ids
        return samples
