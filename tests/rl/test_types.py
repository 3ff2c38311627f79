"""Trajectories flatten into verl samples with exact token continuity and loss masks."""

from __future__ import annotations

from agentscope.rl import Trajectory, Turn


def turn(prompt: list[int], completion: list[int], version: int = 0, reward: float | None = None) -> Turn:
    return Turn(
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=[-0.5] * len(completion),
        version_head=version,
        version_tail=version,
        reward=reward,
    )


def test_multi_turn_episode_flattens_to_one_sample_with_observation_tokens_masked() -> None:
    t1 = turn([1, 2, 3], [10, 11])
    t2 = turn([1, 2, 3, 10, 11, 20, 21], [12], version=1)  # 20, 21: the tool result
    traj = Trajectory(task_id="t", group_id="g", turns=[t1, t2], reward=1.0)
    [sample] = traj.flatten()
    assert sample.prompt_ids == [1, 2, 3]
    assert sample.response_ids == [10, 11, 20, 21, 12]
    assert sample.response_mask == [1, 1, 0, 0, 1]
    assert sample.response_logprobs == [-0.5, -0.5, 0.0, 0.0, -0.5]
    assert sample.token_rewards is None
    assert traj.policy_versions == [0, 1]
    assert traj.min_version == 0
    assert traj.num_generated_tokens == 3


def test_history_rewrite_starts_a_new_sample() -> None:
    t1 = turn([1, 2], [10])
    t2 = turn([1, 9, 9], [11])  # does not extend [1, 2, 10]
    samples = Trajectory(task_id="t", group_id="g", turns=[t1, t2]).flatten()
    assert [s.prompt_ids for s in samples] == [[1, 2], [1, 9, 9]]
    assert [s.response_mask for s in samples] == [[1], [1]]


def test_per_turn_rewards_land_on_each_turns_last_token() -> None:
    t1 = turn([1], [10, 11], reward=0.5)
    t2 = turn([1, 10, 11, 30], [12], reward=1.0)
    [sample] = Trajectory(task_id="t", group_id="g", turns=[t1, t2]).flatten()
    assert sample.token_rewards == [0.0, 0.5, 0.0, 1.0]


def test_json_round_trip() -> None:
    traj = Trajectory(task_id="t", group_id="g", turns=[turn([1], [2])], reward=0.25, status="truncated")
    assert Trajectory.model_validate_json(traj.model_dump_json()) == traj
