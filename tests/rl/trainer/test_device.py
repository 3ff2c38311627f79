"""``trainer.device`` and ``trainer.dtype``: a GPU torch does not see is an error naming the field; bfloat16
autocast on the CPU trains the float32 parameters in mixed precision (the path a GPU run takes by default)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import Qwen2ForCausalLM

from agentscope.exceptions import ConfigError
from agentscope.rl import Trajectory, load_config
from agentscope.rl._components import build_trainer
from agentscope.rl._device import resolve_device, resolve_dtype
from agentscope.rl.trainer import Trainer, TrainerConfig

MakeModel = Callable[..., Qwen2ForCausalLM]
Sample = Callable[..., Trajectory]


def test_auto_is_the_first_gpu_in_bfloat16_else_the_cpu_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    device = resolve_device("auto", "trainer.device")  # the cpu_only fixture: torch sees no GPU
    assert device == torch.device("cpu")
    assert resolve_dtype("auto", device) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = resolve_device("auto", "trainer.device")
    assert device == torch.device("cuda")
    assert resolve_dtype("auto", device) == torch.bfloat16
    assert resolve_dtype("float16", device) == torch.float16


def test_a_gpu_torch_does_not_see_is_an_error_naming_the_field(
    make_model: MakeModel, tokenizer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(None, ["trainer.device=cuda:1"])
    with pytest.raises(ConfigError, match=r"trainer\.device: 'cuda:1', but this torch .* sees no CUDA GPU"):
        build_trainer(config, make_model(), tokenizer, Path("unused"))  # what rl train calls
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"trainer\.device: 'cuda:1', but torch sees 1 CUDA GPU"):
        build_trainer(config, make_model(), tokenizer, Path("unused"))


def test_a_malformed_device_fails_at_load_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.device"):
        load_config(None, ["trainer.device=gpu0"])
    for dtype in ("fp8", "float16"):  # float16 would need loss scaling
        with pytest.raises(ConfigError, match=r"trainer\.dtype"):
            load_config(None, [f"trainer.dtype={dtype}"])


def test_device_and_dtype_other_than_auto_fail_at_load_with_the_verl_fsdp_backend() -> None:
    """verl_fsdp reads neither field (verl places and types its model itself): a value would be silently ignored."""
    verl = "trainer.backend=verl_fsdp"
    with pytest.raises(
        ConfigError, match=r"trainer\.device: 'cpu' is not used by backend verl_fsdp"
    ) as caught:
        load_config(None, [verl, "trainer.device=cpu"])
    assert "trainer.dtype" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"trainer\.dtype: 'float32' is not used by backend verl_fsdp"):
        load_config(None, [verl, "trainer.dtype=float32"])
    with pytest.raises(ConfigError, match=r"trainer\.device: 'cuda:0' .*; trainer\.dtype: 'bfloat16' "):
        load_config(None, [verl, "trainer.device=cuda:0", "trainer.dtype=bfloat16"])
    assert load_config(None, [verl]).trainer.device == "auto"  # the default loads
    torch_backend = load_config(None, ["trainer.device=cpu", "trainer.dtype=float32"]).trainer
    assert (torch_backend.device, torch_backend.dtype) == ("cpu", "float32")


def test_bfloat16_autocast_trains_float32_parameters_close_to_the_float32_update(
    make_model: MakeModel, sample: Sample, tokenizer: object
) -> None:
    trajectories = [
        sample(make_model(), group_id="g", reward=r, seed=20 + i) for i, r in enumerate([1, 0, 1, 0])
    ]
    updated: dict[str, list[torch.Tensor]] = {}
    metrics: dict[str, dict[str, float]] = {}
    for dtype in ("float32", "bfloat16"):
        model = make_model()
        trainer = Trainer(model, tokenizer, TrainerConfig(lr=1e-2, dtype=dtype, max_grad_norm=None))
        assert trainer.autocast == (None if dtype == "float32" else torch.bfloat16)
        metrics[dtype] = trainer.step(trajectories)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
        updated[dtype] = [p.detach().clone() for p in model.parameters()]
    initial = torch.cat([p.detach().flatten() for p in make_model().parameters()])
    full = torch.cat([p.flatten() for p in updated["float32"]]) - initial
    mixed = torch.cat([p.flatten() for p in updated["bfloat16"]]) - initial
    assert not torch.equal(full, mixed), (
        "bfloat16 autocast gave the float32 update bit for bit: it was not applied"
    )
    # The same update up to bfloat16's precision (Adam's first step is nearly sign(g) per element, so elements whose
    # gradient is near 0 may flip: compare the update's direction as a whole).
    assert torch.nn.functional.cosine_similarity(full, mixed, dim=0) > 0.9
    for key in ("train/policy_loss", "train/grad_norm", "train/entropy"):
        assert metrics["bfloat16"][key] == pytest.approx(metrics["float32"][key], rel=0.05, abs=1e-3), key
