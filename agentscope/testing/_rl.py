"""Config overrides that make an RL run small enough to train in seconds on one CPU core, for tests."""

from __future__ import annotations

__all__ = ["TINY_RL_OVERRIDES"]

TINY_RL_OVERRIDES: tuple[str, ...] = (
    "policy.tiny.vocab_size=512",
    "policy.tiny.hidden_size=32",
    "policy.tiny.intermediate_size=64",
    "policy.tiny.num_layers=1",
    "policy.tiny.num_heads=2",
    "policy.tiny.num_kv_heads=1",
    "policy.tiny.max_position_embeddings=512",
    "policy.tiny.corpus_conversations=100",
    "rollout.max_seq_len=512",
    "rollout.max_tokens=16",
    "tasks=arith:n=8,seed=0,max_operand=9",
    "env.max_turns=2",
    "agent.kwargs.max_iters=1",
    "data.group_size=2",
    "data.batch_groups=1",
    "data.drop_zero_variance=false",
    "data.success_replay=false",
    "threads=1",
)
"""``load_config`` overrides (``KEY=VALUE``) for a run that trains in seconds on one core: a one-layer tiny policy
with a 512-token vocabulary, eight arithmetic tasks, one model call per episode, groups of two and batches of one
group, nothing curated away. Add what a test varies after them (``env.slots``, ``schedule.*``): a later override of
the same key wins."""
