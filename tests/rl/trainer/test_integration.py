"""Store → data manager → trainer → checkpoint → resume, driven from an event loop as the runner drives them.

torch runs in worker threads (BlockBuster fails the test if anything blocks the loop); after a simulated crash,
the resumed run trains every sample exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio.to_thread
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2ForCausalLM

from agentscope.rl import Trajectory
from agentscope.rl.data import DataConfig, DataManager, TrajectoryStore
from agentscope.rl.trainer import AsyncCheckpointer, Trainer, TrainerConfig

MakeModel = Callable[..., Qwen2ForCausalLM]
Sample = Callable[..., Trajectory]


async def test_train_checkpoint_crash_resume(
    tmp_path: Path, make_model: MakeModel, sample: Sample, tokenizer: PreTrainedTokenizerFast
) -> None:
    data_config = DataConfig(group_size=2, batch_groups=2, max_staleness=4)
    trainer_config = TrainerConfig(lr=1e-2, micro_batch_size=4)
    model = make_model()
    store = TrajectoryStore(tmp_path / "trajectories.db")
    data = DataManager(store, data_config)
    trainer = Trainer(model, tokenizer, trainer_config)
    checkpointer = AsyncCheckpointer(tmp_path)

    async def produce(n_groups: int, seed: int) -> None:
        for g in range(n_groups):
            gid, size = data.open_group(f"task{g % 3}")
            for k in range(size):
                traj = await anyio.to_thread.run_sync(
                    partial(sample, model, group_id=gid, reward=float(k % 2), seed=seed + 10 * g + k)
                )
                await data.put(traj.model_copy(update={"task_id": f"task{g % 3}"}))

    async def train_one(step: int) -> None:
        batch = await data.next_batch(policy_version=trainer.steps_done, step=step)
        assert batch is not None
        metrics = await anyio.to_thread.run_sync(partial(trainer.step, batch, step=step))
        assert metrics["train/optimizer_steps"] == 1

    async def checkpoint(step: int) -> None:
        extra = {"data": data.state_dict(), "config": trainer_config.model_dump(mode="json")}
        save = partial(
            checkpointer.save,
            step=step,
            model=model,
            tokenizer=tokenizer,
            trainer_state=trainer.state_dict(),
            extra=extra,
        )
        await anyio.to_thread.run_sync(save)

    await produce(4, seed=0)
    await train_one(1)
    await checkpoint(1)
    await train_one(2)  # trained, but the process dies before step 2's checkpoint
    await produce(2, seed=100)
    await anyio.to_thread.run_sync(checkpointer.wait)
    await store.aclose()

    # -- a new process resumes the run --
    state = await anyio.to_thread.run_sync(AsyncCheckpointer.load_latest, tmp_path)
    assert state is not None
    assert state.step == 1

    def restore() -> tuple[Qwen2ForCausalLM, Trainer]:  # torch work: in a worker thread, not on the loop
        model = AutoModelForCausalLM.from_pretrained(state.path)
        trainer = Trainer(model, tokenizer, trainer_config)
        trainer.load_state_dict(state.trainer_state)
        state.restore_rng()
        return model, trainer

    model, trainer = await anyio.to_thread.run_sync(restore)
    store = TrajectoryStore(tmp_path / "trajectories.db")
    assert await store.unmark_trained_after(state.step) == 4
    data = DataManager(store, data_config)
    data_state = state.extra["data"]
    assert isinstance(data_state, dict)
    data.load_state_dict(data_state)
    assert await data.recover() == 4  # step 2's two groups and the two produced after it
    await train_one(2)
    await train_one(3)
    assert await data.next_batch(policy_version=trainer.steps_done, step=4) is None

    trained = [(traj.trajectory_id, step) async for traj, step in store.iter_all()]
    assert len(trained) == 12
    assert sorted(step for _, step in trained if step is not None) == [1] * 4 + [2] * 4 + [3] * 4
    await store.aclose()
