"""DataManager: group completion, batches, and each DART curation policy switched on and off."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentscope.rl import Trajectory
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.data._manager import trajectory_score, turn_entropy

MakeTraj = Callable[..., Trajectory]


def config(**overrides: object) -> DataConfig:
    """Every policy off unless the test switches it on: each test sees one policy at work."""
    base: dict[str, object] = {
        "group_size": 2,
        "batch_groups": 1,
        "max_staleness": None,
        "drop_zero_variance": False,
        "success_replay": False,
    }
    return DataConfig.model_validate(base | overrides)


async def put_group(
    dm: DataManager, make_traj: MakeTraj, rewards: list[float], *, task_id: str = "t0", **kwargs: object
) -> list[Trajectory]:
    gid, size = dm.open_group(task_id)
    assert size == len(rewards)
    trajs = [make_traj(task_id=task_id, group_id=gid, reward=r, **kwargs) for r in rewards]
    for t in trajs:
        await dm.put(t)
    return trajs


async def statuses(store: TrajectoryStore) -> dict[str, tuple[str, int | None]]:
    return {t.trajectory_id: (t.status, step) async for t, step in store.iter_all()}


def test_config_validates_and_documents_every_field() -> None:
    with pytest.raises(ValueError, match="min_rollouts"):
        DataConfig(min_rollouts=5, max_rollouts=3)
    with pytest.raises(ValueError, match="extra"):
        DataConfig.model_validate({"nope": 1})
    with pytest.raises(ValueError, match="high_entropy_steps"):
        DataConfig(high_entropy_steps=0.0)
    assert all(f.description for f in DataConfig.model_fields.values()), "every field needs a docstring"


def test_score_and_entropy_helpers(make_traj: MakeTraj) -> None:
    traj = make_traj(reward=0.7)
    assert trajectory_score(traj) == 0.7
    per_turn = traj.model_copy(update={"turns": [t.model_copy(update={"reward": 0.5}) for t in traj.turns]})
    assert trajectory_score(per_turn) == 1.0  # the per-turn rewards flatten() places, not the episode reward
    assert turn_entropy([-1.0, -3.0]) == 2.0
    assert turn_entropy([]) == 0.0


async def test_groups_wait_for_every_member_and_batches_use_each_sample_once(
    store: TrajectoryStore, make_traj: MakeTraj
) -> None:
    dm = DataManager(store, config(batch_groups=2))
    gid, size = dm.open_group("t0")
    assert size == 2
    first = make_traj(group_id=gid, reward=1.0)
    await dm.put(first)
    assert (dm.open_groups(), dm.ready_groups()) == (1, 0)
    await dm.put(make_traj(group_id=gid, reward=0.0))
    assert (dm.open_groups(), dm.ready_groups()) == (0, 1)
    assert await dm.next_batch(policy_version=0, step=1) is None  # one group of two: not enough
    assert dm.ready_groups() == 1  # still queued

    second = await put_group(dm, make_traj, [0.0, 1.0])
    batch = await dm.next_batch(policy_version=0, step=1)
    assert batch is not None
    assert len(batch) == 4
    assert batch[0] == first  # oldest group first, members adjacent
    assert [t.trajectory_id for t in batch[2:]] == [t.trajectory_id for t in second]
    assert await dm.next_batch(policy_version=0, step=2) is None  # used once
    stored = await statuses(store)
    assert {step for _, step in stored.values()} == {1}
    stats = dm.stats()
    assert stats["data/trained"] == 4
    assert stats["data/batches"] == 1
    assert stats["data/staleness"] == 0.0
    assert stats["data/ready_groups"] == 0


async def test_failed_members_count_toward_completion_but_are_never_trained(
    store: TrajectoryStore, make_traj: MakeTraj
) -> None:
    dm = DataManager(store, config(group_size=3))
    gid, _ = dm.open_group("t0")
    broken = make_traj(group_id=gid, status="failed_infra")
    await dm.put(broken)
    await dm.put(make_traj(group_id=gid, reward=1.0))
    await dm.put(make_traj(group_id=gid, reward=0.0))
    batch = await dm.next_batch(policy_version=0, step=0)
    assert batch is not None
    assert broken.trajectory_id not in {t.trajectory_id for t in batch}
    assert len(batch) == 2
    assert (await statuses(store))[broken.trajectory_id] == ("failed_infra", None)
    assert dm.stats()["data/failed"] == 1


@pytest.mark.parametrize("once", [True, False])
async def test_use_once(store: TrajectoryStore, make_traj: MakeTraj, once: bool) -> None:
    dm = DataManager(store, config(use_once=once, max_staleness=1))
    first = await put_group(dm, make_traj, [1.0, 0.0], version=0)
    assert await dm.next_batch(policy_version=0, step=1) == first
    second = await dm.next_batch(policy_version=1, step=2)
    stored = await statuses(store)
    if once:
        assert second is None
        assert [stored[t.trajectory_id] for t in first] == [("ok", 1)] * 2
        return
    assert second == first  # trained again, one version later
    assert [stored[t.trajectory_id] for t in first] == [("ok", 2)] * 2
    assert await dm.next_batch(policy_version=2, step=3) is None  # now beyond the staleness bound: dropped
    stored = await statuses(store)
    assert [stored[t.trajectory_id] for t in first] == [("dropped_stale", 2)] * 2


@pytest.mark.parametrize("bound", [None, 2])
async def test_staleness_bound(store: TrajectoryStore, make_traj: MakeTraj, bound: int | None) -> None:
    dm = DataManager(store, config(max_staleness=bound, batch_groups=1))
    stale = await put_group(dm, make_traj, [0.0, 1.0], version=1)
    fresh = await put_group(dm, make_traj, [0.0, 1.0], version=3)
    batch = await dm.next_batch(policy_version=4, step=7)
    assert batch is not None
    if bound is None:
        assert batch == stale  # off: the oldest group is trained however stale
        assert dm.stats()["data/staleness"] == 3.0
        return
    assert batch == fresh  # 4 - 1 > 2: dropped; 4 - 3 <= 2: trained
    stored = await statuses(store)
    assert [stored[t.trajectory_id] for t in stale] == [("dropped_stale", None)] * 2
    assert [stored[t.trajectory_id] for t in fresh] == [("ok", 7)] * 2
    assert dm.stats()["data/dropped_stale"] == 2
    assert dm.stats()["data/staleness"] == 1.0


async def test_staleness_drops_a_group_left_with_one_member(
    store: TrajectoryStore, make_traj: MakeTraj
) -> None:
    dm = DataManager(store, config(max_staleness=1, group_size=3))
    gid, _ = dm.open_group("t0")
    members = [
        make_traj(group_id=gid, reward=1.0, version=0),
        make_traj(group_id=gid, reward=0.0, version=0),
        make_traj(group_id=gid, reward=0.0, version=2),
    ]
    for t in members:
        await dm.put(t)
    assert await dm.next_batch(policy_version=2, step=0) is None
    assert {s for s, _ in (await statuses(store)).values()} == {"dropped_stale"}


@pytest.mark.parametrize("drop", [True, False])
async def test_zero_variance_groups(store: TrajectoryStore, make_traj: MakeTraj, drop: bool) -> None:
    dm = DataManager(store, config(drop_zero_variance=drop))
    flat = await put_group(dm, make_traj, [1.0, 1.0])
    batch = await dm.next_batch(policy_version=0, step=0)
    if not drop:
        assert batch == flat
        return
    assert batch is None
    stored = await statuses(store)
    assert [stored[t.trajectory_id] for t in flat] == [("dropped_zero_variance", None)] * 2
    assert dm.stats()["data/dropped_zero_variance"] == 2


@pytest.mark.parametrize("replay", [True, False])
async def test_success_replay_into_an_all_failure_group(
    store: TrajectoryStore, make_traj: MakeTraj, replay: bool
) -> None:
    dm = DataManager(store, config(success_replay=replay, drop_zero_variance=True, batch_groups=1))
    solved = await put_group(dm, make_traj, [1.0, 0.0], task_id="hard", version=0)
    assert await dm.next_batch(policy_version=0, step=1) == solved
    failures = await put_group(dm, make_traj, [0.0, 0.0], task_id="hard", version=1)
    batch = await dm.next_batch(policy_version=1, step=2)
    stored = await statuses(store)
    if not replay:
        assert batch is None
        assert [stored[t.trajectory_id][0] for t in failures] == ["dropped_zero_variance"] * 2
        return
    assert batch is not None
    assert len(batch) == 2
    kept, copy = batch
    assert kept == failures[0]
    assert copy.trajectory_id not in {t.trajectory_id for t in [*solved, *failures]}
    assert copy.group_id == failures[0].group_id  # same uid: compared within the failing group
    assert copy.turns == solved[0].turns  # the success's exact tokens
    assert copy.success
    assert copy.metrics["data/replayed"] == 1.0
    assert stored[failures[1].trajectory_id] == ("dropped_zero_variance", None)
    assert stored[copy.trajectory_id] == ("ok", 2)
    assert stored[solved[0].trajectory_id] == ("ok", 1)  # the original was trained once, at its own step
    assert dm.stats()["data/replayed"] == 1


async def test_replays_obey_the_staleness_bound(store: TrajectoryStore, make_traj: MakeTraj) -> None:
    """A success too old to train is not copied; a copy that grew too old before its batch is dropped."""
    dm = DataManager(store, config(success_replay=True, drop_zero_variance=True, max_staleness=1))
    await dm.put(make_traj(group_id="broken", status="failed_infra", turns=0))  # no versions: no harm
    old = await put_group(dm, make_traj, [1.0, 0.0], version=0)
    assert await dm.next_batch(policy_version=0, step=1) == old
    # Version 5: the version-0 success is 5 versions behind (bound 1): no copy, the group has no signal.
    await put_group(dm, make_traj, [0.0, 0.0], version=5)
    assert await dm.next_batch(policy_version=5, step=2) is None
    assert dm.stats()["data/replayed"] == 0

    recent = await put_group(dm, make_traj, [0.0, 1.0], version=5)
    assert await dm.next_batch(policy_version=5, step=2) == recent
    failures = await put_group(dm, make_traj, [0.0, 0.0], version=6)  # copies the version-5 success
    assert dm.stats()["data/replayed"] == 1
    # Two more updates before the group is batched: the copy (version 5) is 2 behind 7, the failure 1.
    assert await dm.next_batch(policy_version=7, step=3) is None
    stored = await statuses(store)
    copies = [t async for t, _ in store.iter_all() if t.metrics.get("data/replayed")]
    assert [c.min_version for c in copies] == [5]
    assert stored[copies[0].trajectory_id] == ("dropped_stale", None)  # no exemption for a copy
    assert stored[failures[0].trajectory_id] == ("dropped_stale", None)  # a group of one left: no signal
    assert stored[failures[1].trajectory_id] == ("dropped_zero_variance", None)  # replaced by the copy
    assert dm.stats()["data/trained_replayed"] == 0


async def test_replays_are_capped_per_task_and_counted_apart(
    store: TrajectoryStore, make_traj: MakeTraj
) -> None:
    dm = DataManager(
        store, config(success_replay=True, drop_zero_variance=True, max_staleness=2, max_replays_per_task=1)
    )
    solved = await put_group(dm, make_traj, [1.0, 0.0], task_id="hard", completion=5)
    assert await dm.next_batch(policy_version=0, step=1) == solved
    first = await put_group(dm, make_traj, [0.0, 0.0], task_id="hard", completion=3)
    batch = await dm.next_batch(policy_version=1, step=2)
    assert batch is not None
    assert [t.metrics.get("data/replayed") for t in batch] == [None, 1.0]
    assert batch[1].turns == solved[0].turns
    # The task had its one copy: the next all-failure group gets none, though the success is still fresh.
    second = await put_group(dm, make_traj, [0.0, 0.0], task_id="hard")
    assert await dm.next_batch(policy_version=1, step=3) is None
    stored = await statuses(store)
    assert [stored[t.trajectory_id][0] for t in second] == ["dropped_zero_variance"] * 2
    assert stored[first[1].trajectory_id][0] == "dropped_zero_variance"  # replaced by the copy
    stats = dm.stats()
    assert stats["data/replayed"] == 1
    assert stats["data/trained"] == 4
    assert stats["data/trained_replayed"] == 1
    assert stats["data/trained_fresh"] == 3
    # Tokens of fresh episodes only: the copy's 2 x 5 tokens are counted apart.
    assert stats["data/trained_tokens"] == 2 * (2 * 5) + 2 * 3
    assert stats["data/trained_replayed_tokens"] == 2 * 5
    assert stats["data/batch_replayed"] == 1
    # Another task is not capped by this one's copies.
    await put_group(dm, make_traj, [1.0, 0.0], task_id="other")
    assert await dm.next_batch(policy_version=1, step=3) is not None
    await put_group(dm, make_traj, [0.0, 0.0], task_id="other")
    assert dm.stats()["data/replayed"] == 2


@pytest.mark.parametrize("adaptive", [True, False])
async def test_adaptive_rollouts_by_success_rate(
    store: TrajectoryStore, make_traj: MakeTraj, adaptive: bool
) -> None:
    dm = DataManager(
        store,
        config(
            adaptive_rollouts=adaptive,
            group_size=4,
            min_rollouts=2,
            max_rollouts=8,
            adaptive_min_episodes=4,
            adaptive_window=8,
        ),
    )
    assert dm.group_size_for("easy") == 4  # unseen: the default
    for reward in [1.0, 1.0, 1.0, 1.0]:
        await dm.put(make_traj(task_id="easy", group_id="ge", reward=reward))
    for reward in [0.0, 0.0, 0.0, 0.0]:
        await dm.put(make_traj(task_id="hard", group_id="gh", reward=reward))
    for reward in [1.0, 0.0, 1.0, 0.0]:
        await dm.put(make_traj(task_id="half", group_id="gm", reward=reward))
    await dm.put(make_traj(task_id="new", group_id="gn", reward=1.0))
    sizes = {task: dm.group_size_for(task) for task in ["easy", "hard", "half", "new"]}
    if not adaptive:
        assert sizes == dict.fromkeys(sizes, 4)
        return
    assert sizes == {"easy": 2, "hard": 8, "half": 5, "new": 4}
    assert dm.success_rate("half") == 0.5
    gid, size = dm.open_group("hard")
    assert size == 8
    # The window follows the improving policy: eight straight successes make "hard" easy.
    for _ in range(8):
        await dm.put(make_traj(task_id="hard", group_id=gid, reward=1.0))
    assert dm.group_size_for("hard") == 2


@pytest.mark.parametrize("fraction", [None, 0.5])
async def test_high_entropy_step_selection(
    store: TrajectoryStore, make_traj: MakeTraj, fraction: float | None
) -> None:
    dm = DataManager(store, config(high_entropy_steps=fraction))
    gid, _ = dm.open_group("t0")
    confident = make_traj(group_id=gid, reward=1.0, turns=2, logprob=-0.1)
    unsure = make_traj(group_id=gid, reward=0.0, turns=2, logprob=-2.0)
    await dm.put(confident)
    await dm.put(unsure)
    batch = await dm.next_batch(policy_version=0, step=0)
    assert batch is not None
    if fraction is None:
        assert batch == [confident, unsure]
        return
    got_confident, got_unsure = batch
    assert [t.trainable for t in got_confident.turns] == [False, False]
    assert [t.trainable for t in got_unsure.turns] == [True, True]
    assert set(got_confident.flatten()[0].response_mask) == {0}
    mask = got_unsure.flatten()[0].response_mask
    assert mask == unsure.flatten()[0].response_mask  # kept turns: the usual mask (tool tokens 0)
    assert (await store.get(confident.trajectory_id)).turns[0].trainable  # the stored copy is untouched
    assert dm.stats()["data/entropy_kept_fraction"] == 0.5


async def test_resume_requeues_untrained_groups_and_never_trains_twice(
    store: TrajectoryStore, make_traj: MakeTraj
) -> None:
    cfg = config(batch_groups=1, drop_zero_variance=True, adaptive_rollouts=True, adaptive_min_episodes=1)
    dm = DataManager(store, cfg)
    g1 = await put_group(dm, make_traj, [1.0, 0.0])
    assert await dm.next_batch(policy_version=0, step=1) == g1
    cursor = dm.state_dict()  # checkpoint of step 1
    g2 = await put_group(dm, make_traj, [0.0, 1.0], task_id="t1")
    assert (
        await dm.next_batch(policy_version=1, step=2) == g2
    )  # trained, but step 2's checkpoint never happened
    g3 = await put_group(dm, make_traj, [1.0, 0.0], task_id="t2")
    gid, _ = dm.open_group("t3")
    half = make_traj(task_id="t3", group_id=gid, reward=1.0)  # its partner was running when the process died
    await dm.put(half)
    flat = await put_group(dm, make_traj, [0.0, 0.0], task_id="t4")  # dropped for zero variance

    # The process is killed. A new one resumes from the checkpoint of step 1 (policy version 1).
    resumed = DataManager(store, cfg)
    report = await resumed.resume(cursor, step=1, version=1)
    assert (report.untrained, report.requeued_groups, report.lost_versions) == (2, 2, None)
    assert report.version == 1  # every stored trajectory came from version 0: nothing was lost
    assert report.restored == 2  # the flat group's drop happened after the checkpoint: undone, then redone
    assert resumed.stats()["data/trained"] == 2
    assert resumed.success_rate("t0") == 0.5
    first = await resumed.next_batch(policy_version=1, step=2)
    second = await resumed.next_batch(policy_version=2, step=3)
    assert first == g2
    assert second == g3
    assert await resumed.next_batch(policy_version=3, step=4) is None
    stored = await statuses(store)
    assert [stored[t.trajectory_id][1] for t in [*g1, *g2, *g3]] == [1, 1, 2, 2, 3, 3]
    assert stored[half.trajectory_id] == ("dropped_zero_variance", None)
    assert {stored[t.trajectory_id] for t in flat} == {("dropped_zero_variance", None)}
    assert len(stored) == 9  # nothing lost
    assert resumed.stats()["data/dropped_zero_variance"] == 3  # flat and half, each counted once

    # A member that arrives for a group closed by the recovery is stored but never trained.
    late = make_traj(task_id="t3", group_id=gid, reward=0.0)
    await resumed.put(late)
    assert (await store.get(late.trajectory_id)).status == "aborted"


async def test_resume_undoes_curation_after_the_checkpoint_and_keeps_versions_monotonic(
    store: TrajectoryStore, make_traj: MakeTraj
) -> None:
    """A run checkpoints step 1 (version 1), goes on to version 3 and dies. Resumed from the checkpoint, every
    decision made after it is undone, versions 2 and 3 are lost (their weights are gone), and the restored
    weights are served as version 4."""
    cfg = config(batch_groups=1, max_staleness=1, drop_zero_variance=True, success_replay=True)
    dm = DataManager(store, cfg)
    g1 = await put_group(dm, make_traj, [1.0, 0.0], task_id="t0", version=0)
    assert await dm.next_batch(policy_version=0, step=1) == g1
    cursor = dm.state_dict()  # saved with the checkpoint of step 1, whose weights are version 1

    trained_late = await put_group(dm, make_traj, [1.0, 0.0], task_id="a", version=1)
    dropped_late = await put_group(dm, make_traj, [1.0, 0.0], task_id="s", version=1)
    replayed = await put_group(dm, make_traj, [0.0, 0.0], task_id="t0", version=1)  # copies g1's success
    assert await dm.next_batch(policy_version=1, step=2) == trained_late
    lost = await put_group(dm, make_traj, [1.0, 0.0], task_id="l", version=2)
    # Version 3: the version-1 groups are 2 updates behind (bound 1): dropped; the version-2 group trains.
    assert await dm.next_batch(policy_version=3, step=3) == lost
    lost_pending = await put_group(dm, make_traj, [0.0, 1.0], task_id="x", version=3)
    stored = await statuses(store)
    assert {stored[t.trajectory_id][0] for t in [*dropped_late, replayed[0]]} == {"dropped_stale"}
    assert stored[replayed[1].trajectory_id][0] == "dropped_zero_variance"  # replaced by the copy
    [first_copy] = [t async for t, _ in store.iter_all() if t.metrics.get("data/replayed")]

    # The process is killed; a new one resumes from the checkpoint of step 1.
    resumed = DataManager(store, cfg)
    report = await resumed.resume(cursor, step=1, version=1)
    assert report.lost_versions == (2, 3)
    assert report.version == 4  # above every version ever stored: a version number never means two policies
    assert report.untrained == 4  # trained_late and lost
    assert report.restored == 4  # dropped_late and replayed's two failures (one was replaced by the copy)
    assert report.removed_replays == 1
    assert report.dropped_lost == 4  # lost and lost_pending: made by weights that no longer exist
    assert report.requeued_groups == 3
    assert "versions 2..3 lost" in report.describe()
    stored = await statuses(store)
    assert first_copy.trajectory_id not in stored
    assert {stored[t.trajectory_id] for t in [*lost, *lost_pending]} == {("dropped_stale", None)}

    # Staleness counts updates along the resumed history: version 1's trajectories are 0 behind version 4
    # (the same weights), so the group dropped as stale after the checkpoint is trained now.
    assert await resumed.next_batch(policy_version=4, step=2) == trained_late
    assert resumed.stats()["data/staleness"] == 0.0
    assert await resumed.next_batch(policy_version=4, step=3) == dropped_late
    batch = await resumed.next_batch(policy_version=4, step=4)
    assert batch is not None
    assert batch[0] == replayed[0]
    assert batch[1].metrics["data/replayed"] == 1.0  # a new copy of g1's success (1 update behind)
    assert batch[1].trajectory_id != first_copy.trajectory_id
    assert resumed.stats()["data/staleness_max"] == 1.0
    fresh = await put_group(resumed, make_traj, [0.0, 1.0], task_id="n", version=4)
    assert await resumed.next_batch(policy_version=5, step=5) == fresh
    stats = resumed.stats()
    assert stats["data/staleness"] == 1.0
    assert stats["data/dropped_lost_version"] == 4
    assert stats["data/trained"] == 2 + 2 + 2 + 2 + 2

    # The version history is part of the cursor: a second crash and resume keeps it.
    again = DataManager(store, cfg)
    second = await again.resume(resumed.state_dict(), step=5, version=5)
    assert (second.version, second.lost_versions) == (5, None)
    assert again.staleness(g1[0], 5) == 2  # 0 -> 1 -> (4 = 1) -> 5
    assert again.staleness(lost[0], 5) is None


def test_state_dict_rejects_garbage(store: TrajectoryStore) -> None:
    dm = DataManager(store, config())
    with pytest.raises(ValueError, match="version"):
        dm.load_state_dict({"version": 99})
    with pytest.raises(ValueError, match="outcomes"):
        dm.load_state_dict({"version": 1})
    with pytest.raises(ValueError, match="version_gaps"):
        dm.load_state_dict({"version": 2, "outcomes": {}, "counters": {}, "version_gaps": [[1]]})
    dm.load_state_dict(
        {"version": 1, "outcomes": {"t": [1]}, "counters": {"trained": 3}}
    )  # older cursors load
    assert dm.stats()["data/trained"] == 3
