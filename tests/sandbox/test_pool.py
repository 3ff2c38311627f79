"""SandboxPool: warm acquire, reset after use, replacement of dead sandboxes, concurrency cap, per-spec pools."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest

from agentscope.exceptions import SandboxError
from agentscope.sandbox import SandboxLimits, SandboxPool, SandboxSpec

if TYPE_CHECKING:
    from conftest import Opener  # type: ignore[import-not-found]

LIMITS = SandboxLimits(memory_mb=256, pids=64, timeout_s=20, disk_mb=32)


def _pool(opener: Opener, **kwargs: object) -> SandboxPool:
    return SandboxPool(opener.spec(limits=LIMITS), **kwargs)  # type: ignore[arg-type]


async def test_acquire_hands_out_warm_sandboxes_that_come_back_clean(api_backend: Opener) -> None:
    async with _pool(api_backend, size=2) as pool:
        assert pool.stats.warm == 2
        for i in range(6):
            async with pool.acquire() as sb:
                r = await sb.exec("ls -A /work; echo leftover > /work/f$RANDOM; sleep 60 &")
                assert r.stdout == "", f"episode {i} saw the last one's files: {r.stdout!r}"
            await anyio.sleep(0.05)  # let the reset land
        assert pool.stats.cold_acquires == 0
        assert pool.stats.reused >= 4


async def test_dead_warm_sandbox_is_replaced(api_backend: Opener) -> None:
    async with _pool(api_backend, size=1) as pool:
        async with pool.acquire() as sb:
            first = sb
        await anyio.sleep(0.2)
        victim = next(iter(pool._slot(pool.spec).warm))
        if victim.backend == "docker":
            from agentscope.sandbox._docker import docker_client

            await anyio.to_thread.run_sync(lambda: docker_client().api.kill(victim._container))  # type: ignore[attr-defined]
        else:
            victim._process.kill()  # type: ignore[attr-defined]
        await anyio.sleep(0.3)
        async with pool.acquire() as sb:
            assert sb is not victim
            assert (await sb.exec("echo fine")).stdout == "fine\n"
        assert pool.stats.replaced >= 1
        assert first is victim  # the one sandbox was reset, kept, and then died while idle


async def test_concurrency_is_capped(api_backend: Opener) -> None:
    peak = 0

    async with _pool(api_backend, size=2, max_concurrency=2) as pool:

        async def episode() -> None:
            nonlocal peak
            async with pool.acquire() as sb:
                peak = max(peak, pool.stats.in_use)
                await sb.exec("sleep 0.3")

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(episode)
        assert peak == 2
        assert time.perf_counter() - started >= 0.9  # 6 episodes of 0.3 s, two at a time


async def test_max_uses_and_other_specs(api_backend: Opener) -> None:
    async with _pool(api_backend, size=1, max_uses=1) as pool:
        async with pool.acquire() as sb:
            first = sb
        async with pool.acquire() as sb:
            assert sb is not first
        other = SandboxSpec(
            backend=pool.spec.backend, limits={"memory_mb": 300, "pids": 64}, runtime=pool.spec.runtime
        )
        async with pool.acquire(other) as sb:
            assert sb.limits.memory_mb == 300
        assert len(pool._slots) == 2


async def test_closed_pool_closes_everything(api_backend: Opener) -> None:
    pool = _pool(api_backend, size=2)
    async with pool, pool.acquire() as sb:
        held = sb
        warm = list(pool._slot(pool.spec).warm)
    assert not held.alive
    assert all(not s.alive for s in warm)
    with pytest.raises(SandboxError, match="closed"):
        async with pool.acquire():
            pass


def test_bad_pool_arguments() -> None:
    with pytest.raises(SandboxError, match="size"):
        SandboxPool("bwrap", size=-1)
    with pytest.raises(SandboxError, match="max_concurrency"):
        SandboxPool("bwrap", max_concurrency=0)


async def test_pool_that_cannot_start_says_why(docker_works: None) -> None:
    pool = SandboxPool(SandboxSpec(backend="docker", image="agentscope-no-such-image:1"), size=1)
    with pytest.raises(SandboxError, match="missing"):
        async with pool:
            pass


async def test_pool_opened_and_closed_in_different_tasks(api_backend: Opener) -> None:
    pool = _pool(api_backend, size=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.start)
    async with pool.acquire() as sb:
        assert (await sb.exec("echo ok")).stdout == "ok\n"
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.aclose)
    assert not pool._all
