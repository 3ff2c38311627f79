"""TorchEngine: in-process PyTorch generation with a KV cache, continuous batching and a prefix cache.

One dedicated thread owns the model. Requests from any number of asyncio tasks go into a queue; between two decode
steps the thread takes in what arrived (weight updates first, then new requests into free KV-cache slots, their
prompts prefilled together in one pass), then runs **one** forward pass for every running sequence, samples one
token for each, and hands finished generations back to their event loops (``loop.call_soon_threadsafe``). The
event loop never runs torch.

Log-probabilities are those of the sampled token under ``log_softmax(logits / temperature)`` (``log_softmax(logits)``
when greedy), taken before top-p filtering: what verl's trainer recomputes from the same logits, so the importance
ratio is exactly 1 when the weights did not change.

Weight updates are applied between two decode steps without draining the batch: running sequences keep their KV
cache (computed by the old weights) and continue with the new ones; each generation records the version of its
first and last token (``version_head``/``version_tail``). The prefix cache is dropped at each update.

Prefix cache: a finished sequence's KV cache stays in a spare slot, keyed by its token ids, until the slot is
needed; the next turn of a token-in/token-out conversation (its prompt begins with exactly those ids) takes it over
and prefills only the tokens added since.

The parts the engine thread drives live next to this file: ``_slots.py`` (which KV-cache slot holds what, and the
prefix cache), ``_sampling.py`` (a request, its running sequence, and drawing the next tokens) and
``_token_bytes.py`` (each token id's bytes, for stop strings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import torch

from agentscope.exceptions import ContextLengthExceeded, ModelError
from agentscope.rl.rollout._qwen2 import Qwen2Runner, RunnerShape
from agentscope.rl.rollout._sampling import Request, Sequence, sample
from agentscope.rl.rollout._slots import SlotTable
from agentscope.rl.rollout._token_bytes import token_byte_table
from agentscope.rl.rollout._types import Generation, SamplingParams

if TYPE_CHECKING:
    from agentscope.rl.policy import TokenizerLike

__all__ = ["TorchEngine"]

logger = logging.getLogger(__name__)

_STATS_WINDOW_S = 10.0


class EngineStoppedError(ModelError):
    """The engine stopped (or failed) before the generation finished."""


@dataclass(eq=False, slots=True)
class _WeightUpdate:
    state_dict: Mapping[str, torch.Tensor]
    version: int
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


@dataclass(eq=False, slots=True)
class _Stop:
    pass


class TorchEngine:
    """In-process PyTorch rollout engine for Qwen2-architecture models (see the module docstring).

    Args:
        model: A directory that ``AutoModelForCausalLM.from_pretrained`` loads, or a ``Qwen2ForCausalLM`` (its
            weights are copied at :meth:`start`).
        tokenizer: Needed for stop strings only; loaded from ``model`` when it is a directory holding one.
        max_batch: Most sequences decoded together (KV-cache slots); more requests wait.
        max_seq_len: Longest prompt + completion.
        device: Torch device.
        dtype: Compute dtype (float32 on CPU; bfloat16 on a GPU).
        version: Version of the initial weights.
        num_threads: Intra-op threads of the engine thread (``torch.set_num_threads`` called in that thread; with
            PyTorch's OpenMP backend this setting is per thread, so the trainer's threads keep theirs). One is the
            robust choice for small models on a few shared cores: two OpenMP threads competing with other busy
            processes for two cores ran 10-30x slower here. None leaves PyTorch's default.
        seed: Seeds the per-request random generators of requests without their own seed.
        prefix_cache_slots: Extra KV-cache slots (default ``max_batch``; 0 turns the prefix cache off) where
            finished sequences stay until needed: a prompt that begins with one's ids (the next turn of a
            token-in/token-out session) reuses its cache and prefills only what was added.
        max_prefill_tokens: Prompts admitted in one round are prefilled together, up to this many tokens.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        tokenizer: TokenizerLike | None = None,
        max_batch: int = 64,
        max_seq_len: int = 2048,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        version: int = 0,
        num_threads: int | None = 1,
        seed: int | None = None,
        prefix_cache_slots: int | None = None,
        max_prefill_tokens: int = 8192,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._model_source = model
        self._tokenizer = tokenizer
        self.max_batch = max_batch
        """Most sequences decoded together."""
        self.max_seq_len = max_seq_len
        """Longest prompt + completion."""
        self.device = device
        self.dtype = dtype
        self.version = version
        """Version of the weights now serving."""
        self.num_threads = num_threads
        self.max_prefill_tokens = max_prefill_tokens
        """Prompt tokens prefilled together in one round at most (a longer single prompt still goes alone)."""
        self.prefix_cache_slots = max_batch if prefix_cache_slots is None else prefix_cache_slots
        """KV-cache slots beyond ``max_batch`` that keep finished sequences for prompts that extend them."""
        self._seed_source = random.Random(seed)
        self._inbox: queue.SimpleQueue[Request | _WeightUpdate | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._runner: Qwen2Runner | None = None
        self._token_bytes: list[bytes] | None = None
        self._stats: dict[str, float] = _empty_stats(version)

    def __repr__(self) -> str:
        return f"TorchEngine(max_batch={self.max_batch}, version={self.version})"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the model (in a worker thread) and start the engine thread. Idempotent."""
        if self._thread is not None:
            return
        await anyio.to_thread.run_sync(self._load)
        thread = threading.Thread(target=self._serve, name="agentscope-rollout-engine", daemon=True)
        self._thread = thread
        thread.start()

    async def stop(self) -> None:
        """Stop the engine thread; generations still running fail with a :class:`ModelError`. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._inbox.put(_Stop())
        await anyio.to_thread.run_sync(thread.join)
        self._thread = None

    async def __aenter__(self) -> TorchEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _load(self) -> None:
        source = self._model_source
        config: Any
        if isinstance(source, str | os.PathLike):
            from transformers import AutoConfig
            from transformers.utils import logging as hf_logging

            path = Path(cast("str | os.PathLike[str]", source))
            config = cast(Any, AutoConfig.from_pretrained(path))
            state_dict = _load_state_dict(path)
            if self._tokenizer is None and (path / "tokenizer.json").exists():
                from agentscope.rl.policy import load_tokenizer

                verbosity = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()
                try:
                    self._tokenizer = cast("TokenizerLike", load_tokenizer(path))
                finally:
                    hf_logging.set_verbosity(verbosity)
        else:
            config = source.config
            state_dict = source.state_dict()
        self._runner = Qwen2Runner(
            RunnerShape.from_config(config),
            state_dict,
            max_slots=self.max_batch + self.prefix_cache_slots,
            max_seq_len=self.max_seq_len,
            dtype=self.dtype,
            device=self.device,
        )

    # ------------------------------------------------------------------ the async API

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Generate one completion for ``prompt_ids``; runs alongside every other request in the batch.

        Raises:
            ContextLengthExceeded: the prompt leaves no room within ``max_seq_len``.
            ModelError: the engine stopped.
        """
        if self._thread is None:
            raise RuntimeError("TorchEngine is not running: await engine.start() first (or use `async with`)")
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.max_seq_len:
            raise ContextLengthExceeded(
                f"prompt of {len(prompt_ids)} tokens leaves no room to generate (max_seq_len={self.max_seq_len})"
            )
        if params.stop and self._tokenizer is None:
            raise ValueError("stop strings need a tokenizer: pass tokenizer= to TorchEngine")
        loop = asyncio.get_running_loop()
        request = Request(list(prompt_ids), params, loop.create_future(), loop)
        self._inbox.put(request)
        try:
            return await request.future
        except asyncio.CancelledError:
            request.cancelled = True  # the engine frees its slot at the next step
            raise

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace the weights (all or some, by Hugging Face name) between two decode steps; returns once the
        new version serves. The tensors are copied; do not modify them until this returns."""
        if self._thread is None:
            await anyio.to_thread.run_sync(self._apply_offline, state_dict, version)
            return
        loop = asyncio.get_running_loop()
        update = _WeightUpdate(state_dict, version, loop.create_future(), loop)
        self._inbox.put(update)
        await update.future

    def _apply_offline(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        if self._runner is None:
            self._load()
        assert self._runner is not None
        with torch.inference_mode():
            self._runner.load(state_dict)
        self.version = version
        self._stats["rollout/policy_version"] = float(version)

    def stats(self) -> dict[str, float]:
        """``rollout/tokens_per_s`` (generated, over the last 10 s), ``rollout/batch_occupancy`` (mean running
        sequences / ``max_batch`` per decode step, same window), ``rollout/requests_running``,
        ``rollout/requests_waiting``, ``rollout/generated_tokens``, ``rollout/prefill_tokens`` (prompt tokens
        run), ``rollout/prefix_cache_hit_tokens`` (prompt tokens found in the prefix cache instead),
        ``rollout/decode_steps``, ``rollout/policy_version``."""
        return dict(self._stats)

    # ------------------------------------------------------------------ the engine thread

    def _serve(self) -> None:
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        runner = self._runner
        assert runner is not None
        if self._tokenizer is not None:
            self._token_bytes = token_byte_table(self._tokenizer, runner.shape.vocab_size)
        state = _LoopState(SlotTable(runner, runner.max_slots, enabled=self.prefix_cache_slots > 0))
        with torch.inference_mode():
            while True:
                try:
                    if not self._iterate(runner, state):
                        break
                except Exception as exc:  # a bug: fail what is in flight rather than leave it waiting forever
                    logger.exception("rollout engine iteration failed")
                    error = EngineStoppedError(f"the rollout engine failed: {exc!r}")
                    for seq in state.running:
                        _resolve(seq.request.loop, seq.request.future, error)
                    for request in state.waiting:
                        _resolve(request.loop, request.future, error)
                    state.running.clear()
                    state.waiting.clear()
                    state.slots.clear()
        error = EngineStoppedError("the rollout engine stopped")
        for seq in state.running:
            _resolve(seq.request.loop, seq.request.future, error)
        for request in state.waiting:
            _resolve(request.loop, request.future, error)
        with contextlib.suppress(queue.Empty):
            while True:
                command = self._inbox.get_nowait()
                if not isinstance(command, _Stop):
                    _resolve(command.loop, command.future, error)
        self._stats["rollout/requests_running"] = 0.0
        self._stats["rollout/requests_waiting"] = 0.0

    def _iterate(self, runner: Qwen2Runner, state: _LoopState) -> bool:
        """One round of the engine loop; False once asked to stop."""
        running, waiting = state.running, state.waiting
        # 1. take in what arrived (weight updates first in arrival order); block only when idle
        commands: list[Request | _WeightUpdate | _Stop] = []
        if not running and not waiting:
            self._stats["rollout/tokens_per_s"] = 0.0
            self._stats["rollout/batch_occupancy"] = 0.0
            state.window.clear()
            commands.append(self._inbox.get())
        with contextlib.suppress(queue.Empty):
            while True:
                commands.append(self._inbox.get_nowait())
        for command in commands:
            if isinstance(command, _Stop):
                return False
            if isinstance(command, _WeightUpdate):
                self._apply_update(runner, state, command)
            else:
                waiting.append(command)
        # 2. drop cancelled sequences; admit waiting ones into free slots (prefill, first token)
        self._retire(state, [i for i, s in enumerate(running) if s.request.cancelled])
        admitted: list[Request] = []
        budget = self.max_prefill_tokens
        while waiting and len(running) + len(admitted) < self.max_batch:
            if admitted and len(waiting[0].prompt_ids) > budget:
                break  # the rest next round: running sequences should not wait on one huge prefill
            request = waiting.popleft()
            if not request.cancelled:
                admitted.append(request)
                budget -= len(request.prompt_ids)
        if admitted:
            self._admit(runner, state, admitted)
        self._retire(state, [i for i, s in enumerate(running) if s.finish is not None])
        # 3. one forward pass for every running sequence
        if running:
            try:
                self._decode_step(runner, running)
            except Exception as exc:  # a bug or out of memory: fail this batch, keep serving
                logger.exception("rollout engine decode step failed")
                for seq in running:
                    _resolve(
                        seq.request.loop, seq.request.future, EngineStoppedError(f"decode failed: {exc}")
                    )
                running.clear()
                state.slots.clear()
                return True
            state.generated += len(running)
            state.steps += 1
            now = time.monotonic()
            window = state.window
            window.append((now, len(running)))
            while now - window[0][0] > _STATS_WINDOW_S:
                window.popleft()
            self._retire(state, [i for i, s in enumerate(running) if s.finish is not None])
            span = now - window[0][0]
            self._stats["rollout/tokens_per_s"] = (
                sum(w[1] for w in list(window)[1:]) / span if span > 0 else 0.0
            )
            self._stats["rollout/batch_occupancy"] = sum(w[1] for w in window) / (
                len(window) * self.max_batch
            )
        stats = self._stats
        stats["rollout/requests_running"] = float(len(running))
        stats["rollout/requests_waiting"] = float(len(waiting))
        stats["rollout/generated_tokens"] = float(state.generated)
        stats["rollout/prefill_tokens"] = float(state.prefilled)
        stats["rollout/prefix_cache_hit_tokens"] = float(state.reused)
        stats["rollout/decode_steps"] = float(state.steps)
        return True

    def _apply_update(self, runner: Qwen2Runner, state: _LoopState, update: _WeightUpdate) -> None:
        try:
            runner.load(update.state_dict)
        except Exception as exc:
            _resolve(update.loop, update.future, exc)
            return
        state.slots.clear()  # cached prefixes were computed by the old weights
        self.version = update.version
        self._stats["rollout/policy_version"] = float(update.version)
        _resolve(update.loop, update.future, None)

    def _admit(self, runner: Qwen2Runner, state: _LoopState, requests: list[Request]) -> None:
        """Prefill these prompts together (reusing cached prefixes) and sample each one's first token."""
        seqs: list[Sequence] = []
        items: list[tuple[int, list[int], int]] = []
        try:
            for request in requests:
                params = request.params
                seed = params.seed if params.seed is not None else self._seed_source.getrandbits(64)
                prompt = request.prompt_ids
                slot = len(state.running) + len(seqs)
                start = state.slots.claim(slot, prompt)
                items.append((slot, prompt[start:], start))
                seqs.append(
                    Sequence(
                        request=request,
                        rng=random.Random(seed),
                        max_new=max(0, min(params.max_tokens, self.max_seq_len - len(prompt))),
                        stop_ids=frozenset(params.stop_token_ids),
                        stop_bytes=[s.encode() for s in params.stop if s],
                        position=len(prompt),
                        version_head=self.version,
                    )
                )
            logits = runner.prefill_many(items)
        except Exception as exc:
            logger.exception("rollout engine prefill failed")
            for request in requests:
                _resolve(request.loop, request.future, EngineStoppedError(f"prefill failed: {exc}"))
            return
        state.prefilled += sum(len(ids) for _, ids, _ in items)
        state.reused += sum(start for _, _, start in items)
        state.running.extend(seqs)
        sampling = [i for i, seq in enumerate(seqs) if seq.max_new > 0]
        for seq in seqs:
            if seq.max_new == 0:
                seq.finish = "length"
        if sampling:
            rows = [seqs[i] for i in sampling]
            tokens, logprobs = sample(logits[sampling] if len(sampling) < len(seqs) else logits, rows)
            for seq, token, logprob in zip(rows, tokens, logprobs, strict=True):
                self._append(seq, token, logprob)
            state.generated += len(rows)

    def _decode_step(self, runner: Qwen2Runner, running: list[Sequence]) -> None:
        device = runner.device
        tokens = torch.tensor([s.next_token for s in running], dtype=torch.long, device=device)
        positions = torch.tensor([s.position for s in running], dtype=torch.long, device=device)
        runner.ensure_capacity(max(s.position for s in running) + 1)
        logits = runner.decode(tokens, positions)
        for seq in running:
            seq.position += 1
        sampled, logprobs = sample(logits, running)
        for seq, token, logprob in zip(running, sampled, logprobs, strict=True):
            self._append(seq, token, logprob)

    def _append(self, seq: Sequence, token: int, logprob: float) -> None:
        seq.completion.append(token)
        seq.logprobs.append(logprob)
        seq.version_tail = self.version
        seq.next_token = token
        if token in seq.stop_ids or (seq.stop_bytes and self._hit_stop_string(seq, token)):
            seq.finish = "stop"
        elif len(seq.completion) >= seq.max_new:
            seq.finish = "length"

    def _hit_stop_string(self, seq: Sequence, token: int) -> bool:
        table = self._token_bytes
        if table is not None and token < len(table):
            seq.text += table[token]
        else:
            assert self._tokenizer is not None
            text: str = self._tokenizer.decode(seq.completion, skip_special_tokens=False)
            seq.text = bytearray(text.encode())
        tail = bytes(seq.text[-(max(len(s) for s in seq.stop_bytes) + 64) :])
        return any(s in tail for s in seq.stop_bytes)

    def _retire(self, state: _LoopState, indices: list[int]) -> None:
        """Remove these sequences, resolving the finished ones; their KV cache stays as a reusable prefix."""
        running = state.running
        for index in sorted(indices, reverse=True):
            seq = running[index]
            done = seq.finish is not None and not seq.request.cancelled
            cached = (seq.request.prompt_ids + seq.completion)[: seq.position] if done else None
            state.slots.release(index, len(running), cached, running[-1].position)
            running[index] = running[-1]
            running.pop()
            if done:
                assert seq.finish is not None
                _resolve(
                    seq.request.loop,
                    seq.request.future,
                    Generation(
                        completion_ids=seq.completion,
                        logprobs=seq.logprobs,
                        finish_reason=seq.finish,
                        version_head=seq.version_head,
                        version_tail=seq.version_tail,
                        prompt_len=len(seq.request.prompt_ids),
                    ),
                )


@dataclass(eq=False, slots=True)
class _LoopState:
    """What the engine thread keeps between iterations."""

    slots: SlotTable
    waiting: deque[Request] = field(default_factory=deque[Request])
    running: list[Sequence] = field(default_factory=list[Sequence])
    window: deque[tuple[float, int]] = field(default_factory=deque[tuple[float, int]])
    """(time, running sequences) per decode step over the stats window."""
    generated: int = 0
    prefilled: int = 0
    reused: int = 0
    steps: int = 0


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], outcome: object) -> None:
    """Complete ``future`` on its loop with a result, or an exception when ``outcome`` is one."""

    def complete() -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(complete)


def _empty_stats(version: int) -> dict[str, float]:
    return {
        "rollout/tokens_per_s": 0.0,
        "rollout/batch_occupancy": 0.0,
        "rollout/requests_running": 0.0,
        "rollout/requests_waiting": 0.0,
        "rollout/generated_tokens": 0.0,
        "rollout/prefill_tokens": 0.0,
        "rollout/prefix_cache_hit_tokens": 0.0,
        "rollout/decode_steps": 0.0,
        "rollout/policy_version": float(version),
    }


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face checkpoint directory (safetensors, else a torch ``.bin``)."""
    files = sorted(path.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file  # pyright: ignore[reportUnknownVariableType]

        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(str(file)))
        return state
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no model weights (*.safetensors or pytorch_model*.bin) in {path}")
    state = {}
    for file in bins:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state
