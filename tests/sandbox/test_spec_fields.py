"""open_sandbox and SandboxPool take a SandboxSpec, or its fields as keyword arguments (the older calling style)."""

from __future__ import annotations

import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox import SandboxLimits, SandboxPool, SandboxSpec, open_sandbox
from agentscope.sandbox._open import as_spec


def test_fields_build_the_same_spec_a_spec_gives() -> None:
    limits = SandboxLimits(memory_mb=256, timeout_s=10)
    assert as_spec("bwrap", {"limits": limits}) == SandboxSpec(backend="bwrap", limits=limits)
    assert as_spec("auto", {"backend": "bwrap"}) == SandboxSpec(backend="bwrap")


def test_an_unknown_field_is_named() -> None:
    with pytest.raises(SandboxError, match="memory"):
        as_spec("bwrap", {"memory": 256})


def test_a_spec_and_fields_together_are_refused() -> None:
    with pytest.raises(TypeError, match=r"not both.*limits"):
        as_spec(SandboxSpec(backend="bwrap"), {"limits": SandboxLimits()})
    with pytest.raises(TypeError, match="not both"):
        SandboxPool(SandboxSpec(backend="bwrap"), size=0, network=True)


@pytest.mark.usefixtures("bwrap_works")
async def test_open_sandbox_with_fields_applies_them() -> None:
    async with open_sandbox(backend="bwrap", limits=SandboxLimits(timeout_s=7)) as sandbox:
        assert sandbox.spec.limits.timeout_s == 7
        result = await sandbox.exec(["python3", "-c", "print(6 * 7)"])
        assert result.stdout == "42\n"
