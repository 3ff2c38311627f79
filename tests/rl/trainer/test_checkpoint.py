"""AsyncCheckpointer: round trips, snapshot isolation, retention, failures, and a SIGKILL in the middle of a write."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2ForCausalLM

from agentscope.rl import Trajectory
from agentscope.rl.trainer import AsyncCheckpointer, CheckpointError, Trainer, TrainerConfig

MakeModel = Callable[..., Qwen2ForCausalLM]
Sample = Callable[..., Trajectory]
CONFTEST = Path(__file__).with_name("conftest.py")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_model_optimizer_rng_and_cursor(
    tmp_path: Path, make_model: MakeModel, sample: Sample, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = make_model()
    trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-2))
    trajs = [sample(model, group_id="g", reward=float(i % 2), seed=i) for i in range(4)]
    trainer.step(trajs)
    cursor = {"version": 1, "outcomes": {"t": [1, 0]}, "counters": {"trained": 4}}
    checkpointer = AsyncCheckpointer(tmp_path)
    assert AsyncCheckpointer.load_latest(tmp_path) is None

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    checkpointer.save(
        step=1, model=model, tokenizer=tokenizer, trainer_state=trainer.state_dict(), extra={"data": cursor}
    )
    after_snapshot = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    checkpointer.wait()
    stats = checkpointer.stats()
    assert stats["checkpoint/snapshot_s"] >= 0
    assert stats["checkpoint/write_s"] > 0
    assert stats["checkpoint/bytes"] > 0

    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert state.step == 1
    assert state.path.name == "step_00000001"
    assert (tmp_path / "checkpoints" / "latest").resolve() == state.path
    assert state.extra == {"data": cursor}
    latest = tmp_path / "checkpoints" / "latest"
    loaded = AutoModelForCausalLM.from_pretrained(latest)
    assert same_weights(loaded, model)
    # transformers 5 loads any tokenizer next to a qwen2 config.json as Qwen2Tokenizer (Qwen2's byte-level
    # pipeline over the saved vocabulary): same vocabulary and special tokens; our word-level test tokenizer
    # itself round-trips through its own class.
    auto = AutoTokenizer.from_pretrained(latest)
    assert auto.get_vocab() == tokenizer.get_vocab()
    assert (auto.pad_token_id, auto.eos_token_id) == (0, 1)
    assert PreTrainedTokenizerFast.from_pretrained(latest)("w3 w4")["input_ids"] == [3, 4]

    twin = Trainer(loaded, tokenizer, TrainerConfig(lr=1e-2))
    twin.load_state_dict(state.trainer_state)
    assert twin.steps_done == 1
    trainer.step(trajs)
    twin.step(trajs)
    assert all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), loaded.parameters(), strict=True)
    )

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    state.restore_rng()
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == after_snapshot


def test_snapshot_is_taken_at_save_time(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = make_model()
    expected = copy.deepcopy(model)
    trainer = Trainer(model, tokenizer, TrainerConfig())
    checkpointer = AsyncCheckpointer(tmp_path)
    blocked = __import__("threading").Event()
    checkpointer._on_file = lambda stage: blocked.wait(10) if stage == "model" else None
    checkpointer.save(step=3, model=model, tokenizer=tokenizer, trainer_state=trainer.state_dict())
    assert checkpointer.busy
    with torch.no_grad():  # training goes on while the checkpoint is written
        for p in model.parameters():
            p.add_(1.0)
    blocked.set()
    checkpointer.wait()
    assert not checkpointer.busy
    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert same_weights(AutoModelForCausalLM.from_pretrained(state.path), expected)


def test_retention_and_resaving_a_step(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = make_model()
    trainer = Trainer(model, tokenizer, TrainerConfig())
    checkpointer = AsyncCheckpointer(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        checkpointer.save(step=step, model=model, tokenizer=None, trainer_state=trainer.state_dict())
    checkpointer.wait()
    directory = tmp_path / "checkpoints"
    assert sorted(p.name for p in directory.iterdir()) == ["latest", "step_00000003", "step_00000004"]
    # Resumed from step 3, the run saves step 4 again: the old one is not overwritten in place.
    checkpointer.save(
        step=4, model=model, tokenizer=None, trainer_state=trainer.state_dict(), extra={"again": True}
    )
    checkpointer.close()
    assert os.readlink(directory / "latest") == "step_00000004.1"
    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert (state.step, state.extra) == (4, {"again": True})
    assert sorted(p.name for p in directory.iterdir()) == ["latest", "step_00000004", "step_00000004.1"]
    with pytest.raises(ValueError, match="keep"):
        AsyncCheckpointer(tmp_path, keep=0)


def test_keep_none_keeps_every_checkpoint(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = make_model()
    trainer = Trainer(model, tokenizer, TrainerConfig())
    checkpointer = AsyncCheckpointer(tmp_path, keep=None)
    for step in (1, 2, 3, 4):
        checkpointer.save(step=step, model=model, tokenizer=None, trainer_state=trainer.state_dict())
    checkpointer.close()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_00000001", "step_00000002", "step_00000003", "step_00000004"]


def test_a_failed_write_is_reported_and_latest_survives(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = make_model()
    trainer = Trainer(model, tokenizer, TrainerConfig())
    checkpointer = AsyncCheckpointer(tmp_path)
    checkpointer.save(step=1, model=model, tokenizer=None, trainer_state=trainer.state_dict())
    checkpointer.wait()

    def fail(stage: str) -> None:
        if stage == "trainer_state.pt":
            raise OSError("disk full")

    checkpointer._on_file = fail
    checkpointer.save(step=2, model=model, tokenizer=None, trainer_state=trainer.state_dict())
    with pytest.raises(RuntimeError, match="disk full"):
        checkpointer.wait()
    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert state.step == 1
    with pytest.raises(TypeError):
        checkpointer.save(step=3, model=model, tokenizer=None, trainer_state={}, extra={"x": object()})  # type: ignore[dict-item]


def test_latest_falls_back_to_the_newest_complete_checkpoint(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    model = make_model()
    checkpointer = AsyncCheckpointer(tmp_path)
    checkpointer.save(step=5, model=model, tokenizer=None, trainer_state={"steps_done": 5})
    checkpointer.wait()
    (tmp_path / "checkpoints" / "latest").unlink()
    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert state.step == 5


def two_checkpoints(run_dir: Path, model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast) -> Path:
    """Checkpoints of steps 1 and 2 (``latest`` -> step 2); returns step 2's directory."""
    checkpointer = AsyncCheckpointer(run_dir)
    for step in (1, 2):
        checkpointer.save(step=step, model=model, tokenizer=tokenizer, trainer_state={"steps_done": step})
        checkpointer.wait()
    return run_dir / "checkpoints" / "step_00000002"


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_a_truncated_latest_is_refused_saying_why_and_set_aside(
    tmp_path: Path,
    make_model: MakeModel,
    tokenizer: PreTrainedTokenizerFast,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    if where == "relative":  # `rl train --run-dir runs/x`, as the README has it
        monkeypatch.chdir(tmp_path.parent)
        tmp_path = Path(tmp_path.name)
    newest = two_checkpoints(tmp_path, make_model(), tokenizer)
    weights = newest / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as f:
        f.truncate(size // 2)  # the disk lost the end of the file

    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert state.step == 1  # the previous checkpoint, and it says what it passed over
    [(refused, why)] = state.skipped
    assert refused.resolve() == newest.resolve()
    assert (
        why
        == f"model.safetensors has {size // 2} bytes, meta.json recorded {size} (truncated or overwritten)"
    )
    assert "step_00000002: model.safetensors has" in state.describe()

    checkpointer = AsyncCheckpointer(tmp_path)
    assert checkpointer.set_aside(state) == [tmp_path / "checkpoints" / "refused-step_00000002"]
    again = AsyncCheckpointer.load_latest(tmp_path)
    assert again is not None
    assert (again.step, again.skipped) == (1, ())  # latest points at the checkpoint the run goes on from
    assert os.readlink(tmp_path / "checkpoints" / "latest") == "step_00000001"


def test_weights_overwritten_at_the_same_size_are_refused_at_load(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    newest = two_checkpoints(tmp_path, make_model(), tokenizer)
    weights = newest / "model.safetensors"
    weights.write_bytes(b"x" * weights.stat().st_size)  # the size meta.json recorded, nothing of the content
    state = AsyncCheckpointer.load_latest(tmp_path)
    assert state is not None
    assert state.step == 1
    [(refused, why)] = state.skipped
    assert refused == newest
    assert why.startswith("model.safetensors cannot be read: ")


@pytest.mark.parametrize("damage", ["garbage", "missing", "meta"])
def test_when_no_checkpoint_loads_the_error_names_each_and_why(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast, damage: str
) -> None:
    newest = two_checkpoints(tmp_path, make_model(), tokenizer)
    oldest = newest.with_name("step_00000001")
    (oldest / "meta.json").unlink()
    target = newest / "trainer_state.pt"
    if damage == "garbage":  # same size, so only reading it finds out (torch.load raised UnpicklingError)
        target.write_bytes(b"corrupt!" * (target.stat().st_size // 8) + b"!" * (target.stat().st_size % 8))
        expected = r"trainer_state\.pt cannot be read: UnpicklingError"
    elif damage == "missing":
        target.unlink()
        expected = r"trainer_state\.pt is missing"
    else:
        (newest / "meta.json").write_text("{not json")
        expected = r"meta\.json cannot be read: JSONDecodeError"
    with pytest.raises(CheckpointError) as info:
        AsyncCheckpointer.load_latest(tmp_path)
    message = str(info.value)
    assert re.search(rf"{newest}: {expected}", message), message
    assert f"{oldest}: meta.json is missing (not a complete checkpoint)" in message
    assert AsyncCheckpointer.load_latest(tmp_path / "nothing-here") is None


CHILD = """
import sys, time
sys.path.insert(0, {conftest_dir!r})
import torch
torch.set_num_threads(1)
from conftest import tiny_qwen2, tiny_tokenizer
from agentscope.rl.trainer._checkpoint import AsyncCheckpointer

run_dir, stage = sys.argv[1], sys.argv[2]
model, tokenizer = tiny_qwen2(), tiny_tokenizer()
optimizer = torch.optim.AdamW(model.parameters())
checkpointer = AsyncCheckpointer(run_dir)
checkpointer.save(step=1, model=model, tokenizer=tokenizer, trainer_state={{"optimizer": optimizer.state_dict()}})
checkpointer.wait()

def hang(what):
    if what == stage:
        print("AT", what, flush=True)
        time.sleep(120)

checkpointer._on_file = hang
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
checkpointer.save(step=2, model=model, tokenizer=tokenizer, trainer_state={{"optimizer": optimizer.state_dict()}})
checkpointer.wait()
"""


def test_sigkill_during_a_write_leaves_latest_loadable(
    tmp_path: Path, make_model: MakeModel, tokenizer: PreTrainedTokenizerFast
) -> None:
    """Two children (started together: each import of torch takes seconds) are killed in the middle of writing
    step 2: one while writing files, one after the rename and before ``latest`` moves."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(conftest_dir=str(CONFTEST.parent))))
    stages = ("model", "renamed")
    children = {
        stage: subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / stage), stage],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stage in stages
    }
    try:
        for stage, child in children.items():
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.strip() == f"AT {stage}", child.stderr.read() if child.stderr else ""
            child.send_signal(signal.SIGKILL)
    finally:
        for child in children.values():
            child.kill()
            child.communicate(timeout=30)

    for stage in stages:
        run_dir = tmp_path / stage
        directory = run_dir / "checkpoints"
        leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")]
        assert len(leftovers) == (1 if stage == "model" else 0)
        assert (directory / "step_00000002").exists() == (stage == "renamed")

        state = AsyncCheckpointer.load_latest(run_dir)
        assert state is not None
        assert state.step == 1  # latest still names the previous, complete checkpoint
        assert os.readlink(directory / "latest") == "step_00000001"
        loaded = AutoModelForCausalLM.from_pretrained(directory / "latest")
        assert same_weights(loaded, make_model())  # the step-1 weights, not those of step 2
        assert AutoTokenizer.from_pretrained(directory / "latest").get_vocab() == tokenizer.get_vocab()
        assert json.loads((directory / "latest" / "meta.json").read_text())["step"] == 1

        # The next run on this directory cleans up and checkpoints normally.
        checkpointer = AsyncCheckpointer(run_dir)
        checkpointer.save(step=2, model=loaded, tokenizer=tokenizer, trainer_state={})
        checkpointer.wait()
        assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
        state = AsyncCheckpointer.load_latest(run_dir)
        assert state is not None
        assert state.step == 2
