"""SGLangEngine against a stand-in SGLang server, and ``rollout.engine: sglang`` selecting it.

SGLang needs CUDA and cannot be installed here, so the server is a stand-in: a FastAPI app on uvicorn
(127.0.0.1) that speaks SGLang's native wire format for the routes the engine uses (as read in SGLang's main
branch at commit 001067f: ``GenerateReqInput``, ``UpdateWeightFromDiskReqInput``, ``/health``,
``/health_generate``, ``/get_model_info``, ``/flush_cache``, ``{"error": {"message"}}`` errors, ``FINISH_*`` finish
reasons) and generates with a real tiny Qwen2 (Hugging Face transformers, no KV cache): its token ids and
log-probabilities (``log_softmax(logits / temperature)`` of the sampled token, as SGLang's sampler reports them)
are real, and a weight reload changes what it generates. The tests check that the engine returns, token for
token, what the stand-in sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from agentscope._uvicorn import BackgroundServer
from agentscope.exceptions import ConfigError, ContextLengthExceeded, ModelError, ModelHTTPError
from agentscope.message import Msg
from agentscope.rl import load_config
from agentscope.rl._components import build_rollout
from agentscope.rl.rollout import (
    RolloutEngine,
    RolloutService,
    SamplingParams,
    SGLangEngine,
    WeightPublisher,
)

pytestmark = pytest.mark.timeout(300)

CONTEXT = 256
"""The stand-in's context length."""


# ---------------------------------------------------------------------------------------------- the stand-in


@dataclass
class StandIn:
    """State of the stand-in SGLang server: a real tiny Qwen2 and what it answered."""

    model: Any
    tokenizer: Any
    model_path: str
    weight_version: str = "default"
    abort_next: str | None = None
    """Abort the next generation with this message (what SGLang does to a request it drops)."""
    requests: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    answers: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    updates: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def generate(self, ids: list[int], sampling: dict[str, Any]) -> tuple[list[list[Any]], dict[str, Any]]:
        """SGLang's sampling: logits / temperature, softmax, top-p, draw; the log-prob of the drawn token under
        the temperature-scaled softmax (before top-p). Stops at ``stop_token_ids`` (kept), at a ``stop`` string
        (the token completing it kept), or after ``max_new_tokens``."""
        import torch

        temperature = float(sampling.get("temperature", 1.0))
        top_p = float(sampling.get("top_p", 1.0))
        stop_ids = set(sampling.get("stop_token_ids") or [])
        stops: list[str] = sampling.get("stop") or []
        limit = min(int(sampling.get("max_new_tokens", 128)), CONTEXT - len(ids))
        generator = torch.Generator().manual_seed(int(sampling.get("sampling_seed", 0)))
        out: list[list[Any]] = []
        finish: dict[str, Any] = {"type": "length", "length": limit}
        with self.lock, torch.no_grad():
            sequence = list(ids)
            while len(out) < limit:
                logits = self.model(torch.tensor([sequence])).logits[0, -1].float()
                if temperature < 1e-5:
                    token = int(torch.argmax(logits))
                    logprob = float(torch.log_softmax(logits, -1)[token])
                else:
                    scaled = torch.log_softmax(logits / temperature, -1)
                    probs = scaled.exp()
                    ordered, order = probs.sort(descending=True)
                    keep = ordered.cumsum(0) - ordered < top_p
                    kept = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
                    token = int(torch.multinomial(kept / kept.sum(), 1, generator=generator))
                    logprob = float(scaled[token])
                out.append([logprob, token, None])
                sequence.append(token)
                if token in stop_ids:
                    finish = {"type": "stop", "matched": token}
                    break
                text = self.tokenizer.decode([e[1] for e in out])
                hit = next((s for s in stops if s in text), None)
                if hit is not None:
                    finish = {"type": "stop", "matched": hit}
                    break
        return out, finish

    def load(self, model_path: str) -> str | None:
        """Load the ``*.safetensors`` of a model directory; the error message, or None."""
        from safetensors.torch import load_file  # pyright: ignore[reportUnknownVariableType]

        files = sorted(Path(model_path).glob("*.safetensors"))
        if not files:
            return f"Failed to get weights iterator: no safetensors files in {model_path}"
        try:
            with self.lock:
                self.model.load_state_dict(load_file(str(files[0])), strict=False)
        except RuntimeError as exc:
            return f"Failed to update weights: {exc}. Rolling back to original weights."
        self.model_path = model_path
        return None


def create_stand_in(state: StandIn) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/health_generate")
    async def health_generate() -> Response:
        await anyio.to_thread.run_sync(state.generate, [1], {"max_new_tokens": 1})
        return Response(status_code=200)

    @app.get("/get_model_info")
    async def model_info() -> dict[str, Any]:
        return {"model_path": state.model_path, "tokenizer_path": state.model_path, "is_generation": True}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": state.model_path, "object": "model", "root": state.model_path, "max_model_len": CONTEXT}
        return {"object": "list", "data": [card]}

    @app.post("/generate")
    async def generate(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        ids: list[int] = body["input_ids"]
        sampling: dict[str, Any] = body.get("sampling_params") or {}
        # SGLang's checks, in its order: the context, max_req_input_len (context - 1 - 5), prompt + new tokens
        message = None
        if len(ids) >= CONTEXT:
            message = (
                f"The input ({len(ids)} tokens) is longer than the model's context length ({CONTEXT} tokens)."
            )
        elif len(ids) >= CONTEXT - 6:
            message = (
                f"Input length ({len(ids)} tokens) exceeds the maximum allowed length ({CONTEXT - 6} tokens)."
            )
        elif len(ids) + int(sampling.get("max_new_tokens") or 0) >= CONTEXT:
            message = "Requested token count exceeds the model's maximum context length."
        if message is not None:
            return JSONResponse({"error": {"message": message}}, status_code=400)
        if state.abort_next is not None:
            message, state.abort_next = state.abort_next, None
            entries: list[list[Any]] = []
            finish: dict[str, Any] = {"type": "abort", "message": message, "status_code": 503}
        else:
            entries, finish = await anyio.to_thread.run_sync(state.generate, ids, sampling)
        output_ids = [e[1] for e in entries]
        meta: dict[str, Any] = {
            "id": f"req-{len(state.requests)}",
            "finish_reason": finish,
            "prompt_tokens": len(ids),
            "completion_tokens": len(output_ids),
            "cached_tokens": 3,
            "weight_version": state.weight_version,
            "e2e_latency": 0.01,
        }
        if body.get("return_logprob"):
            meta["input_token_logprobs"] = [[None, ids[0], None]]
            meta["output_token_logprobs"] = entries
        answer = {"text": state.tokenizer.decode(output_ids), "output_ids": output_ids, "meta_info": meta}
        state.answers.append(answer)
        return answer

    @app.post("/update_weights_from_disk")
    async def update_weights_from_disk(request: Request) -> Any:
        body = await request.json()
        state.updates.append(body)
        problem = await anyio.to_thread.run_sync(state.load, body["model_path"])
        if problem is not None:
            return JSONResponse({"success": False, "message": problem, "num_paused_requests": 0}, 400)
        if body.get("weight_version") is not None:
            state.weight_version = body["weight_version"]
        return {"success": True, "message": "Succeeded to update model weights.", "num_paused_requests": 0}

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache() -> Response:
        return PlainTextResponse("Cache flushed.\n")

    return app


@dataclass
class Served:
    url: str
    state: StandIn


@pytest.fixture
def stand_in(policy_dir: Path, tokenizer: Any) -> Iterator[Served]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    state = StandIn(model, tokenizer, str(policy_dir))
    server = BackgroundServer(create_stand_in(state), name="sglang stand-in")
    server.start()
    try:
        yield Served(f"http://127.0.0.1:{server.port}", state)
    finally:
        server.stop()


def reference_logprobs(
    model: Any, prompt: list[int], completion: list[int], temperature: float
) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    scaled = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
    return [float(v) for v in scaled.gather(-1, torch.tensor(completion)[:, None])[:, 0]]


def perturbed(model: Any, scale: float = 0.5) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    return {name: t + scale * torch.randn_like(t) for name, t in model.state_dict().items()}


def prompt_ids(tokenizer: Any, helpers: Any) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": helpers.SYSTEM}, {"role": "user", "content": helpers.QUESTION}],
        tokenize=False,
        add_generation_prompt=True,
    )
    return list(tokenizer.encode(text))


# ---------------------------------------------------------------------------------------------- the engine


async def test_generation_returns_the_servers_token_ids_and_logprobs_token_for_token(
    stand_in: Served, tokenizer: Any, helpers: Any, hf_model: Any
) -> None:
    engine = SGLangEngine(stand_in.url, version=2)
    assert isinstance(engine, RolloutEngine)
    prompt = prompt_ids(tokenizer, helpers)
    async with engine:
        assert engine.model_path == stand_in.state.model_path
        assert await engine.healthy()
        out = await engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0.7, top_p=0.9, seed=5))
        sent = stand_in.state.answers[-1]["meta_info"]["output_token_logprobs"]
        assert out.completion_ids == [e[1] for e in sent]
        assert out.logprobs == [e[0] for e in sent]  # exactly what was sent
        assert (out.finish_reason, out.version_head, out.version_tail, out.prompt_len) == (
            "length",
            2,
            2,
            len(prompt),
        )
        assert len(out.completion_ids) == 12
        # real log-probs: log_softmax(logits / T) of each sampled token
        expected = await anyio.to_thread.run_sync(
            reference_logprobs, hf_model, prompt, out.completion_ids, 0.7
        )
        assert out.logprobs == pytest.approx(expected, abs=1e-4)

        body = stand_in.state.requests[-1]
        assert body["input_ids"] == prompt
        assert body["return_logprob"] is True
        assert body["sampling_params"] == {
            "max_new_tokens": 12,
            "temperature": 0.7,
            "top_p": 0.9,
            "stop_token_ids": [],
            "ignore_eos": True,
            "skip_special_tokens": False,
            "no_stop_trim": True,
            "sampling_seed": 5,
        }
        again = await engine.generate(
            prompt, SamplingParams(max_tokens=12, temperature=0.7, top_p=0.9, seed=5)
        )
        assert again.completion_ids == out.completion_ids

        stats = engine.stats()
        assert stats["rollout/generated_tokens"] == 24
        assert stats["rollout/prefix_cache_hit_tokens"] == 6
        assert stats["rollout/prefill_tokens"] == 2 * (len(prompt) - 3)
        assert (stats["rollout/policy_version"], stats["rollout/requests_running"]) == (2, 0)


async def test_stop_tokens_and_stop_strings_end_the_completion_on_the_token_that_ended_it(
    stand_in: Served, tokenizer: Any, helpers: Any
) -> None:
    prompt = prompt_ids(tokenizer, helpers)
    async with SGLangEngine(stand_in.url) as engine:
        greedy = await engine.generate(prompt, SamplingParams(max_tokens=10, temperature=0.0))
        stop_at = greedy.completion_ids[3]
        first = greedy.completion_ids.index(stop_at)
        stopped = await engine.generate(
            prompt, SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=[stop_at, 7])
        )
        assert stopped.completion_ids == greedy.completion_ids[: first + 1]
        assert stopped.logprobs == pytest.approx(greedy.logprobs[: first + 1])
        assert stopped.finish_reason == "stop"
        assert stand_in.state.requests[-1]["sampling_params"]["stop_token_ids"] == [stop_at, 7]

        text = tokenizer.decode(greedy.completion_ids[:5])
        needle = text[-2:]
        cut = await engine.generate(prompt, SamplingParams(max_tokens=10, temperature=0.0, stop=[needle]))
        shortest = next(
            n for n in range(1, 11) if needle in tokenizer.decode(greedy.completion_ids[:n])
        )  # the token that completed the string stays
        assert (cut.finish_reason, cut.completion_ids) == ("stop", greedy.completion_ids[:shortest])
        assert stand_in.state.requests[-1]["sampling_params"]["stop"] == [needle]


async def test_a_weight_update_is_loaded_from_disk_and_changes_what_is_generated(
    stand_in: Served, tokenizer: Any, helpers: Any, hf_model: Any, tmp_path: Path
) -> None:
    import copy

    publisher = WeightPublisher(tmp_path / "weights", keep=2)
    prompt = prompt_ids(tokenizer, helpers)
    async with SGLangEngine(stand_in.url, weights=publisher) as engine:
        before = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0))
        new = perturbed(hf_model)
        await engine.update_weights(new, 1)
        assert engine.version == 1
        update = stand_in.state.updates[-1]
        folder = Path(update["model_path"])
        assert (update["weight_version"], update["flush_cache"], update["abort_all_requests"]) == (
            "1",
            True,
            False,
        )
        assert (folder / "model.safetensors").samefile(publisher.path(1))
        assert stand_in.state.weight_version == "1"

        after = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0))
        assert after.completion_ids != before.completion_ids
        assert (after.version_head, after.version_tail) == (1, 1)
        reloaded = copy.deepcopy(hf_model)
        reloaded.load_state_dict(new)
        expected = await anyio.to_thread.run_sync(
            reference_logprobs, reloaded, prompt, after.completion_ids, 0.0
        )
        assert after.logprobs == pytest.approx(expected, abs=1e-4)
        assert await engine.flush_cache()

        # a file the server cannot load: its message, and the version stays
        import torch

        with pytest.raises(
            ModelHTTPError, match=r"(?s)answered 400 to POST /update_weights_from_disk: .*size mismatch"
        ):
            await engine.update_weights({"model.norm.weight": torch.zeros(3)}, 2)
        assert engine.version == 1

    async with SGLangEngine(stand_in.url) as engine:
        with pytest.raises(ModelError, match="needs weights=WeightPublisher"):
            await engine.update_weights(new, 3)


async def test_initial_weights_are_loaded_when_the_engine_starts(
    stand_in: Served, policy_dir: Path, tmp_path: Path
) -> None:
    async with SGLangEngine(stand_in.url, version=4, initial_weights=policy_dir) as engine:
        assert engine.version == 4
    assert stand_in.state.updates[-1]["model_path"] == str(policy_dir)
    assert stand_in.state.weight_version == "4"
    with pytest.raises(ModelError, match=r"no safetensors files"):
        await SGLangEngine(stand_in.url, version=4, initial_weights=tmp_path).start()


async def test_server_errors_are_model_errors_that_say_what_the_server_said(
    stand_in: Served, tokenizer: Any, helpers: Any
) -> None:
    with pytest.raises(ModelError, match=r"no SGLang server answers at http://127\.0\.0\.1:9/health"):
        await SGLangEngine("http://127.0.0.1:9").start()
    async with SGLangEngine(stand_in.url) as engine:
        assert engine.max_model_len == CONTEXT  # read from /v1/models
        sent = len(stand_in.state.requests)
        with pytest.raises(ContextLengthExceeded, match="300 tokens leaves no room to generate"):
            await engine.generate(list(range(1, 301)), SamplingParams())
        with pytest.raises(ContextLengthExceeded, match="fewer than 250 tokens"):
            await engine.generate(list(range(1, CONTEXT - 5)), SamplingParams())  # 250: SGLang's input limit
        assert len(stand_in.state.requests) == sent  # refused here, before the server
        near = await engine.generate(list(range(1, CONTEXT - 6)), SamplingParams(max_tokens=16))  # 249
        assert (
            stand_in.state.requests[-1]["sampling_params"]["max_new_tokens"] == 6
        )  # the room left, less one
        assert len(near.completion_ids) <= 6
        # a server that does not say: its own checks answer 400s, which mean the same
        engine.max_model_len = None
        for length, says in ((300, r"The input \(300 tokens\) is longer"), (252, "maximum allowed length")):
            with pytest.raises(
                ContextLengthExceeded, match=f"answered 400 to POST /generate: .*{says}"
            ) as err:
                await engine.generate(list(range(1, length + 1)), SamplingParams())
            assert isinstance(err.value.__cause__, ModelHTTPError)
        with pytest.raises(ContextLengthExceeded, match="Requested token count exceeds"):
            await engine.generate(list(range(1, 241)), SamplingParams(max_tokens=16))
        stand_in.state.abort_next = "The server is overloaded."
        with pytest.raises(ModelError, match=r"finish_reason=.*'abort'.*: The server is overloaded\."):
            await engine.generate([5, 6], SamplingParams(max_tokens=2))
        with pytest.raises(ValueError, match="empty"):
            await engine.generate([], SamplingParams())
        assert engine.stats()["rollout/requests_running"] == 0
    with pytest.raises(RuntimeError, match="not started"):
        await engine.generate([1], SamplingParams())


# ---------------------------------------------------------------------------------------------- rollout.engine


async def test_rollout_engine_sglang_builds_services_over_the_servers_and_updates_reach_them(
    stand_in: Served, policy_dir: Path, tokenizer: Any, helpers: Any, hf_model: Any, tmp_path: Path
) -> None:
    config = await anyio.to_thread.run_sync(
        lambda: load_config(
            None, ["rollout.engine=sglang", f"rollout.engine_url={stand_in.url}", "rollout.max_tokens=16"]
        )
    )
    absolute = await anyio.to_thread.run_sync(policy_dir.absolute)
    service, servers = build_rollout(config, policy_dir, tokenizer, 0, tmp_path)
    assert isinstance(service, RolloutService)
    assert servers == [service]
    assert isinstance(service.engine, SGLangEngine)
    async with service:
        assert stand_in.state.updates[-1]["model_path"] == str(absolute)  # the run's starting policy
        sid = service.open_session()
        messages = [Msg(role="system", content=helpers.SYSTEM), Msg(role="user", content=helpers.QUESTION)]
        first = await service.chat(sid, messages)
        sent = stand_in.state.answers[-1]["meta_info"]["output_token_logprobs"]
        assert first.completion_token_ids == [e[1] for e in sent]
        assert first.logprobs == [e[0] for e in sent]
        assert stand_in.state.requests[-1]["sampling_params"]["stop_token_ids"] == list(
            service.default_params.stop_token_ids
        )
        await service.update_weights(perturbed(hf_model), 1)
        assert service.version == 1
        assert stand_in.state.weight_version == "1"
        assert await anyio.to_thread.run_sync(WeightPublisher(tmp_path / "weights").versions) == [1]
        second = await service.chat(sid, [*messages, Msg(role="assistant", content=first.content)])
        assert second.policy_version == 1
        turns = service.close_session(sid)
    assert [t.version_tail for t in turns] == [0, 1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.engine=sglang"], r"rollout\.engine_url: rollout\.engine sglang needs the address"),
        (
            ["rollout.engine=sglang", "rollout.engine_url=[http://a:1, http://b:1]"],
            r"rollout\.engine_url: 2 addresses for 1 rollout servers",
        ),
        (["rollout.engine_url=http://a:1"], r"rollout\.engine_url: only for rollout\.engine vllm or sglang"),
        (
            ["rollout.engine=vllm", "rollout.engine_url=http://a:1", "rollout.engine_args=[--enforce-eager]"],
            r"rollout\.engine_args: only for vLLM servers the run launches",
        ),
        (["rollout.engine=vllm", "rollout.engine_url=a:1"], r"rollout\.engine_url: 'a:1' is not an http"),
        (["rollout.engine=tgi"], r"rollout\.engine: Input should be 'torch', 'vllm' or 'sglang'"),
    ],
)
def test_bad_engine_settings_fail_at_load_naming_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


async def test_a_rollout_server_out_of_process_has_its_sglang_server_reload_from_the_run_weights_dir(
    stand_in: Served, policy_dir: Path, tokenizer: Any, hf_model: Any, tmp_path: Path
) -> None:
    """What ``rl rollout-server`` runs for ``rollout.backend: process`` (and each Ray actor): the weights reach it
    by path through ``POST /weights``, and its engine has SGLang load that same file (published once)."""
    import json

    from agentscope.rl._rollout_process import READY_PREFIX, serve_rollout_server
    from agentscope.rl.rollout import RemoteRolloutServer

    config = await anyio.to_thread.run_sync(
        lambda: load_config(
            None, ["rollout.engine=sglang", f"rollout.engine_url={stand_in.url}", "rollout.backend=process"]
        )
    )
    publisher = WeightPublisher(tmp_path / "weights")
    lines: list[str] = []
    ready, stop = anyio.Event(), anyio.Event()

    def on_ready(line: str) -> None:
        lines.append(line)
        ready.set()

    async with anyio.create_task_group() as tg:

        async def serve() -> None:
            await serve_rollout_server(
                config, policy_dir, weights_dir=publisher.root, ready=on_ready, until=stop.wait
            )

        tg.start_soon(serve)
        with anyio.fail_after(60):
            await ready.wait()
        url = json.loads(lines[0].removeprefix(READY_PREFIX))["url"]
        async with RemoteRolloutServer(url, publisher, tokenizer=tokenizer) as remote:
            await remote.update_weights(perturbed(hf_model), 1)
            assert remote.version == 1
        stop.set()
    assert stand_in.state.weight_version == "1"
    staged = Path(stand_in.state.updates[-1]["model_path"])
    assert (staged / "model.safetensors").samefile(publisher.path(1))
    assert await anyio.to_thread.run_sync(publisher.versions) == [1]


@pytest.mark.parametrize(
    "overrides",
    [[], ["rollout.engine=sglang", "rollout.engine_url=http://a:1"], ["rollout.engine=vllm"]],
)
def test_a_dumped_config_loads_again(overrides: list[str]) -> None:
    """A run directory's config.yaml holds every field at its value: the engine checks must accept it."""
    from agentscope.rl import RLConfig

    config = load_config(None, overrides)
    assert RLConfig.model_validate(config.model_dump(mode="json")) == config
