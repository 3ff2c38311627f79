"""The run directory's file helpers: a pinned policy outlives the checkpoint it was pinned from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agentscope.rl._files import pin_directory


def make_checkpoint(root: Path, name: str, weights: bytes) -> Path:
    step = root / name
    (step / "tokenizer").mkdir(parents=True)
    (step / "config.json").write_text('{"model_type": "qwen2"}')
    (step / "model.safetensors").write_bytes(weights)
    (step / "tokenizer" / "tokenizer.json").write_text("{}")
    return step


def test_a_pinned_policy_survives_pruning_of_its_checkpoint(tmp_path: Path) -> None:
    step = make_checkpoint(tmp_path / "checkpoints", "step_00000003", b"weights-3")
    (tmp_path / "checkpoints" / "latest").symlink_to("step_00000003")
    pinned = pin_directory(tmp_path / "checkpoints" / "latest", tmp_path / "policy-start")
    assert not pinned.is_symlink()
    assert (
        os.stat(pinned / "model.safetensors").st_ino == os.stat(step / "model.safetensors").st_ino
    )  # a link
    shutil.rmtree(step)  # keep_checkpoints pruned it
    assert (pinned / "model.safetensors").read_bytes() == b"weights-3"
    assert (pinned / "tokenizer" / "tokenizer.json").read_text() == "{}"
    assert (pinned / "config.json").is_file()


def test_pinning_again_replaces_the_earlier_pin_whole(tmp_path: Path) -> None:
    first = make_checkpoint(tmp_path, "a", b"one")
    (first / "extra.bin").write_bytes(b"only in a")
    second = make_checkpoint(tmp_path, "b", b"two")
    pin_directory(first, tmp_path / "pinned")
    pin_directory(second, tmp_path / "pinned")
    assert (tmp_path / "pinned" / "model.safetensors").read_bytes() == b"two"
    assert not (tmp_path / "pinned" / "extra.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial left
