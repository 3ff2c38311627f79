"""``trainer.backend: verl_fsdp`` with ``placement: ray``: verl's FSDP actor on two ranks, each a Ray actor in a
verl ``RayWorkerGroup`` (gloo on CPU), driven from the test process as verl's ``RayPPOTrainer`` drives them.

The strongest check is equivalence with the single-process torch backend: two data-parallel ranks, each holding
half of every batch and a shard of the parameters and of AdamW's state, must make the same updates. Then: the
full optimizer state gathered from two ranks resumes on one; a rank that dies is a lost trainer, at once.
"""

from __future__ import annotations

import copy
import os
import signal
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import pytest
import ray
import torch
from ray.exceptions import RayActorError
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from agentscope.rl import Trajectory
from agentscope.rl.trainer import Trainer, TrainerConfig, TrainerLostError
from agentscope.rl.trainer._verl_fsdp import VerlFSDPTrainer
from agentscope.rl.trainer._verl_hydra import compose_verl_config, verl_overrides

from .test_verl_fsdp import ALGORITHMS, EXACT_METRICS, batches

if TYPE_CHECKING:  # imported by the code under test when it runs: importing it loads verl's engines
    from agentscope.rl.trainer._verl_ranks import RayRanks

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

Sample = Callable[..., Trajectory]

PER_RANK_MEANS = ("train/approx_kl", "train/clipfrac", "train/clipfrac_lower")
"""verl reports these as the unweighted mean of each rank's micro-batch values, where the torch backend weights
them by tokens: equal while every ratio is 1 (one epoch), not in a second epoch. The update does not use them."""


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """A local Ray cluster for the module: 2 CPUs, one per rank (the reference policy's ranks share them)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def on_ranks(config: TrainerConfig, ranks: int = 2) -> TrainerConfig:
    return config.model_copy(update={"backend": "verl_fsdp", "placement": "ray", "ranks": ranks})


@pytest.mark.parametrize("name", ["defaults", "kl-entropy-epochs"])
def test_two_ranks_update_as_the_torch_backend_does(
    name: str, model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: Sample
) -> None:
    """Three steps of 5 rows (padded to 6: 3 per rank) from the same weights: the same metrics (but
    :data:`PER_RANK_MEANS` after the first epoch) and parameters as the torch backend in one process. ``kl-entropy-epochs`` adds the reference policy's two ranks, colocated with
    the actor's, and two epochs."""
    config, _ = ALGORITHMS[name]
    reference = Trainer(copy.deepcopy(policy), tokenizer, config)
    under_test = VerlFSDPTrainer(
        copy.deepcopy(policy), tokenizer, on_ranks(config), model_dir=model_dir, threads=1
    )
    try:
        assert under_test.ranks.world_size == 2
        pids = cast("RayRanks", under_test.ranks).pids
        assert len(set(pids)) == 2  # two processes of their own
        assert os.getpid() not in pids
        assert (under_test.ref_ranks is not None) == (config.kl_coef > 0)
        for i, batch in enumerate(batches(policy, sample, 3, lone=True)):
            expected = reference.step(batch, step=i)
            got = under_test.step(batch, step=i)
            for key in EXACT_METRICS:
                if key in PER_RANK_MEANS and config.epochs > 1:
                    continue
                assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (i, key)
            assert got["train/samples"] == 5.0  # the padding rows are not counted
            if config.kl_coef > 0:
                assert got["train/kl_loss"] == pytest.approx(expected["train/kl_loss"], rel=1e-4, abs=1e-7)
        moved = 0.0
        for (key, want), (_, have) in zip(
            reference.model.state_dict().items(), under_test.model.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(have, want, rtol=1e-5, atol=5e-5, msg=key)
            moved = max(moved, float((want - policy.state_dict()[key]).abs().max()))
        assert moved > 1e-3
    finally:
        under_test.close()


def test_state_from_two_ranks_resumes_on_two_and_on_one(
    tmp_path: Path,
    model_dir: Path,
    policy: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    sample: Sample,
) -> None:
    """The optimizer state is saved full (keyed by parameter name), so a checkpoint of two ranks loads into two new
    ranks on Ray and into one rank in this process, and each one's next step equals the two ranks' next step."""
    config = TrainerConfig(lr=1e-2)
    first, second = batches(policy, sample, 2)
    two = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, on_ranks(config), model_dir=model_dir, threads=1)
    try:
        two.step(first)
        saved = tmp_path / "checkpoint"
        two.model.save_pretrained(saved)  # pyright: ignore[reportCallIssue]
        tokenizer.save_pretrained(saved)
        torch.save(two.state_dict(), saved / "trainer_state.pt")
        expected = two.step(second)
    finally:
        two.close()
    state = torch.load(saved / "trainer_state.pt", weights_only=True)
    assert state["optimizer"]["state"]
    for resumed_config in (on_ranks(config), config):
        resumed = VerlFSDPTrainer(
            Qwen2ForCausalLM.from_pretrained(saved), tokenizer, resumed_config, model_dir=saved, threads=1
        )
        try:
            resumed.load_state_dict(state)
            got = resumed.step(second)
        finally:
            resumed.close()
        assert got["train/policy_loss"] == pytest.approx(expected["train/policy_loss"], rel=1e-5, abs=1e-7)
        assert got["train/grad_norm"] == pytest.approx(expected["train/grad_norm"], rel=1e-5)
        for (key, want), (_, have) in zip(
            two.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6, msg=key)


def test_several_mini_batches_on_two_ranks_step_each(
    model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: Sample
) -> None:
    """Each rank shuffles and splits its own chunk into the mini-batches (as in verl's RayPPOTrainer), so these
    are not one rank's mini-batches row for row: the step runs, with one optimizer step per mini-batch and epoch."""
    config = on_ranks(TrainerConfig(lr=1e-3, mini_batches=2, epochs=2, micro_batch_size=1))
    trainer = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, config, model_dir=model_dir, threads=1)
    try:
        metrics = trainer.step(batches(policy, sample, 1, lone=True)[0])  # 5 rows, padded to 8: 2 × 2 × 2
    finally:
        trainer.close()
    assert metrics["train/optimizer_steps"] == 4.0
    assert metrics["train/samples"] == 5.0
    assert metrics["train/grad_norm"] > 0.0


def test_ranks_that_cannot_be_placed_fail_promptly_and_free_what_they_held(tmp_path: Path) -> None:
    from agentscope.rl.trainer._verl_ranks import RayRanks

    config = compose_verl_config(verl_overrides(TrainerConfig(backend="verl_fsdp"), model_path=tmp_path))
    with pytest.raises(TrainerLostError, match=r"the 3 ranks of the verl actor were not placed within 2 s"):
        RayRanks(config.actor_rollout_ref, ranks=3, place_timeout_s=2)  # 3 CPUs wanted, 2 in the cluster
    table = cast(dict[str, dict[str, Any]], ray.util.placement_group_table())  # pyright: ignore[reportUnknownMemberType]
    states = [group["state"] for group in table.values()]
    assert states == ["REMOVED"] * len(states)  # an unplaced group holds no CPU: removed, not left waiting
    wait_for_free_cpus()


@ray.remote
class _Rank:
    """A stand-in rank for the liveness probe: ``pid`` answers at once, or only after ``busy_s``."""

    def __init__(self, busy_s: float) -> None:
        self.busy_s = busy_s

    def pid(self) -> int:
        time.sleep(self.busy_s)
        return os.getpid()


def wait_until_dead(actor: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.pid.remote(), timeout=10)
        except RayActorError:
            return
    raise AssertionError("the killed actor still answers")


def test_a_busy_rank_is_alive_and_a_killed_one_dead() -> None:
    """The probe behind "a rank died": a rank that answers late (busy in a collective, say) is alive, so its
    peer's own error is what the step raises; a killed one is dead."""
    from agentscope.rl.trainer._verl_ranks import RayRanks

    ranks: list[Any] = [_Rank.remote(0.0), _Rank.remote(30.0)]  # pyright: ignore[reportAttributeAccessIssue]
    probe = RayRanks.__new__(RayRanks)  # the probe reads only the workers
    probe._workers = types.SimpleNamespace(workers=ranks)  # pyright: ignore[reportPrivateUsage]
    try:
        ray.get(ranks[0].pid.remote())
        began = time.monotonic()
        assert not probe._dead()  # pyright: ignore[reportPrivateUsage]
        assert time.monotonic() - began < 10
        ray.kill(ranks[0], no_restart=True)  # asynchronous: a call sent just after may still be answered
        wait_until_dead(ranks[0])
        assert probe._dead()  # pyright: ignore[reportPrivateUsage]
    finally:
        for rank in ranks:
            ray.kill(rank, no_restart=True)


def wait_for_free_cpus(timeout_s: float = 20.0) -> None:
    """Every CPU of the test cluster is free again (placement groups removed, actors gone)."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0.0) < 2.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)


def test_a_rank_that_dies_is_a_lost_trainer_at_once(
    model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: Sample
) -> None:
    """SIGKILL one rank's process: the watch raises TrainerLostError within seconds (while no step runs), and so
    does the next step (the other rank's collectives fail instead of waiting), naming the ranks."""
    trainer = VerlFSDPTrainer(
        copy.deepcopy(policy), tokenizer, on_ranks(TrainerConfig(lr=1e-2)), model_dir=model_dir, threads=1
    )
    try:
        batch = batches(policy, sample, 1)[0]
        trainer.step(batch)
        victim = cast("RayRanks", trainer.ranks).pids[1]

        async def watch_while_killing() -> None:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    group.start_soon(trainer.watch)
                    await anyio.sleep(0.5)
                    os.kill(victim, signal.SIGKILL)
                    await anyio.sleep_forever()  # the watch's error ends the group

        with pytest.raises(BaseException) as raised:
            anyio.run(watch_while_killing)
        lost: BaseException = raised.value
        while isinstance(lost, BaseExceptionGroup):
            group = cast(BaseExceptionGroup[BaseException], lost)
            assert len(group.exceptions) == 1, group
            lost = group.exceptions[0]
        assert isinstance(lost, TrainerLostError), lost
        assert "verl actor" in str(lost)
        assert str(victim) in str(lost)
        with pytest.raises(TrainerLostError, match="--resume"):
            trainer.step(batch)
    finally:
        trainer.close()
    wait_for_free_cpus()


def test_closing_frees_the_ranks_and_ends_a_running_watch_quietly(
    model_dir: Path, policy: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast
) -> None:
    """With the reference policy's ranks too: close() while watch() runs ends the watch without an error, and
    the cluster's CPUs are free again."""
    config = on_ranks(TrainerConfig(lr=1e-2, kl_coef=0.1))
    trainer = VerlFSDPTrainer(copy.deepcopy(policy), tokenizer, config, model_dir=model_dir, threads=1)
    try:

        async def close_while_watching() -> None:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    group.start_soon(trainer.watch)
                    await anyio.sleep(0.5)
                    await anyio.to_thread.run_sync(trainer.close)

        anyio.run(close_while_watching)
    finally:
        trainer.close()  # idempotent
    wait_for_free_cpus()
