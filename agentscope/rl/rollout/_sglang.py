"""SGLangEngine: an SGLang server behind the :class:`~agentscope.rl.rollout.RolloutEngine` seam, over its native
HTTP API.

Written against SGLang's main branch at commit ``001067f`` (github.com/sgl-project/sglang, read in December 2026):
``python/sglang/srt/managers/io_struct.py`` (``GenerateReqInput``, ``UpdateWeightFromDiskReqInput``),
``python/sglang/srt/entrypoints/http_server.py`` (the routes, ``_create_error_response``: ``{"error":
{"message"}}`` with status 400), ``python/sglang/srt/managers/schedule_batch.py`` (``FINISH_*.to_json``) and
``python/sglang/srt/layers/sampler.py`` (the log-probabilities). SGLang needs CUDA and cannot be installed on the
machines this was written on: it is tested against a stand-in that speaks this wire format (tests/rl/rollout/
test_sglang.py), not against SGLang itself. What the engine relies on:

**Generation** is ``POST /generate`` with ``input_ids`` (the prompt's token ids), ``sampling_params``
(``max_new_tokens``, ``temperature``, ``top_p``, ``stop_token_ids``, ``stop``, ``ignore_eos: true`` so that the
stop tokens are exactly the ones asked for, as in :class:`~agentscope.rl.rollout.TorchEngine`,
``skip_special_tokens: false``, ``no_stop_trim: true``, and ``sampling_seed`` for a per-request seed) and
``return_logprob: true``. The answer's ``meta_info.output_token_logprobs`` is one ``[logprob, token_id, text]``
per generated token (the text is null unless ``return_text_in_logprobs``): the completion ids and log-probs are
read from it, in order, as sent. ``meta_info.finish_reason`` is ``{"type": "stop", "matched": <id or string>}``,
``{"type": "length", "length": n}`` or ``{"type": "abort", "message": ...}`` (a :class:`ModelError` here);
``meta_info.cached_tokens`` counts prefix-cache hits. A prompt beyond the context is refused with a 400 and its
message; the engine checks first, against the context length that ``GET /v1/models`` reports (``max_model_len``
of the served model, SGLang's ``model_config.context_len``; ``python/sglang/srt/managers/scheduler.py`` derives
``max_req_input_len`` from it and ``tokenizer_manager.py`` checks it): a prompt that leaves no room raises
:class:`~agentscope.exceptions.ContextLengthExceeded` (an episode then ends ``truncated``, not as an
infrastructure failure), and ``max_new_tokens`` is clamped to the room left. The server's own refusals of that
kind (a KV pool smaller than the context) become ``ContextLengthExceeded`` as well.

**Log-probabilities.** SGLang's sampler divides the logits by the temperature, takes the softmax, samples with
top-k/top-p from it and reports ``log(probs)`` of the sampled token: ``log_softmax(logits / temperature)`` before
top-p filtering, exactly :attr:`Generation.logprobs`, unless the server runs with
``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` (then the raw logits' log-softmax: do not set it for RL).

**Weights.** :meth:`SGLangEngine.update_weights` writes the version once through the
:class:`~agentscope.rl.rollout.WeightPublisher`, links it into a directory of its own
(:meth:`WeightPublisher.stage`: SGLang loads a model *directory*), then ``POST /update_weights_from_disk`` with
``{"model_path": dir, "weight_version": "<version>", "flush_cache": true, "abort_all_requests": false}``; the
answer is ``{"success", "message", "num_paused_requests"}`` (400 when it failed). SGLang takes the update once the
requests running then have finished (its tokenizer manager's model-update lock), so every token of a generation
comes from one version; the engine labels a generation sent during an update with the old version at its head and
the new one at its tail. The prefix cache is flushed with the update (``flush_cache``; ``POST /flush_cache`` is
:meth:`SGLangEngine.flush_cache`). The server must read the publisher's directory (the same machine or a shared
disk). ``initial_weights=`` has the server load a model directory (a run's starting policy) the same way at
:meth:`SGLangEngine.start`.

**Health**: ``GET /health`` (the HTTP server answers) at :meth:`SGLangEngine.start`; :meth:`SGLangEngine.healthy`
asks ``GET /health_generate`` (the server generates one token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread
import httpx2

from agentscope.exceptions import (
    ContextLengthExceeded,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelResponseError,
)
from agentscope.rl.rollout._answers import fit_to_context, json_object, post, raise_for_error
from agentscope.rl.rollout._client_stats import ClientStats
from agentscope.rl.rollout._types import FinishReason, Generation, SamplingParams
from agentscope.rl.rollout._weights import WeightPublisher

if TYPE_CHECKING:
    import torch

__all__ = ["SGLangEngine"]

logger = logging.getLogger(__name__)


class SGLangEngine:
    """An SGLang server as a :class:`~agentscope.rl.rollout.RolloutEngine` (see the module docstring for what it
    relies on).

    Args:
        base_url: The server's address (``http://host:port``).
        weights: Where :meth:`update_weights` writes each version; the server must be able to read it. None: the
            weights are never updated.
        version: Version of the weights the server loaded at start.
        timeout_s: Longest one generation or one weight update may take.
        max_batch: The server's ``--max-running-requests``, for ``rollout/batch_occupancy`` only.
        api_key: The server's ``--api-key``, sent as a bearer token (None: none).
        initial_weights: A model directory that :meth:`start` has the server load (``/update_weights_from_disk``)
            as ``version``, so that a server started on another checkpoint of the same architecture serves the
            run's starting policy (or the checkpoint it resumes from).
    """

    def __init__(
        self,
        base_url: str,
        *,
        weights: WeightPublisher | None = None,
        version: int = 0,
        timeout_s: float = 600.0,
        max_batch: int = 256,
        api_key: str | None = None,
        initial_weights: str | os.PathLike[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        """The server's root address."""
        self.weights = weights
        self.version = version
        """Version of the weights now serving."""
        self.timeout_s = timeout_s
        self.model_path: str | None = None
        """The model the server says it loaded (``/get_model_info``; read at :meth:`start`)."""
        self.max_model_len: int | None = None
        """The server's context length (``max_model_len`` of its model in ``/v1/models``; read at :meth:`start`;
        None: the server did not say, and only its own check refuses a prompt too long)."""
        self.initial_weights = Path(initial_weights) if initial_weights is not None else None
        """A model directory the server loads at :meth:`start`, as ``version``."""
        self._api_key = api_key
        self._client: httpx2.AsyncClient | None = None
        self._update_lock = asyncio.Lock()
        self._stats = ClientStats(max_batch)

    def __repr__(self) -> str:
        return f"SGLangEngine({self.base_url!r}, version={self.version})"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Check that the server answers ``/health``; read its model path. Idempotent.

        Raises:
            ModelError: the server is unreachable or unhealthy.
        """
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        client = await anyio.to_thread.run_sync(  # reads the CA store
            lambda: httpx2.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, headers=headers)
        )
        try:
            await self._check_server(client)
            if self.initial_weights is not None:
                await self._load(client, self.initial_weights, self.version)
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def _check_server(self, client: httpx2.AsyncClient) -> None:
        try:
            health = await client.get("/health", timeout=10.0)
        except httpx2.HTTPError as exc:
            raise ModelConnectionError(
                f"no SGLang server answers at {self.base_url}/health: {exc!r} (is it started, on this address?)"
            ) from exc
        if health.status_code != 200:
            raise ModelHTTPError(
                f"the SGLang server at {self.base_url}/health answered {health.status_code}",
                status_code=health.status_code,
                body=health.text[:1000],
            )
        with contextlib.suppress(httpx2.HTTPError, ModelResponseError):  # an optional route
            info = await client.get("/get_model_info", timeout=10.0)
            if info.status_code == 200:
                path: Any = json_object(info).get("model_path")
                self.model_path = str(path) if path is not None else None
        with contextlib.suppress(
            httpx2.HTTPError, ModelResponseError
        ):  # its OpenAI route: the context length
            models = await client.get("/v1/models", timeout=10.0)
            if models.status_code == 200:
                cards: Any = json_object(models).get("data")
                # the served model comes first (LoRA adapters, if any, after it)
                listed: list[Any] = cards if isinstance(cards, list) else []  # pyright: ignore[reportUnknownVariableType]
                first: object = listed[0] if listed else None
                length = (
                    cast("dict[str, Any]", first).get("max_model_len") if isinstance(first, dict) else None
                )
                self.max_model_len = length if isinstance(length, int) and length > 0 else None

    async def stop(self) -> None:
        """Close the connection to the server (the server keeps running). Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> SGLangEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def healthy(self) -> bool:
        """Whether the server generates (``GET /health_generate``: it runs one token through the model)."""
        client = self._started()
        try:
            return (await client.get("/health_generate")).status_code == 200
        except httpx2.HTTPError:
            return False

    def _started(self) -> httpx2.AsyncClient:
        if self._client is None:
            raise RuntimeError(
                "SGLangEngine is not started: await engine.start() first (or use `async with`)"
            )
        return self._client

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Generate one completion for ``prompt_ids`` on the server.

        Raises:
            ContextLengthExceeded: the prompt leaves no room in the server's context.
            ModelError: the server refused the request (its message included), could not be reached, or aborted
                the generation.
        """
        client = self._started()
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        max_tokens = fit_to_context(
            len(prompt_ids),
            params.max_tokens,
            self.max_model_len,
            server="SGLang",
            input_reserve=_INPUT_RESERVE,
            output_reserve=1,
        )
        head = self.version
        if max_tokens <= 0:
            return Generation([], [], "length", head, head, prompt_len=len(prompt_ids))
        self._stats.sent()
        try:
            response = await self._post(
                client, "/generate", json=_generate_body(prompt_ids, params, max_tokens)
            )
        except ModelHTTPError as exc:
            if exc.status_code == 400 and _CONTEXT_REFUSAL.search(str(exc)):
                raise ContextLengthExceeded(str(exc)) from exc  # the server's own limit (its KV pool, say)
            raise
        finally:
            self._stats.done()
        data = json_object(response)
        generation = _generation(data, head, self.version, len(prompt_ids), self.base_url)
        meta: Any = data.get("meta_info") or {}
        cached: Any = meta.get("cached_tokens") or 0
        self._stats.count(len(prompt_ids), len(generation.completion_ids), int(cached))
        return generation

    # ------------------------------------------------------------------ weights

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Publish ``state_dict`` as ``version`` and have the server load it from disk; returns once the new
        weights serve (SGLang applies it once the requests running have finished).

        The file holds what ``state_dict`` holds; SGLang's loader loads the tensors it names (send whole state
        dicts, as the trainers do).

        Raises:
            ModelError: no publisher was given, or the server refused or failed the update (its message
                included).
        """
        client = self._started()
        if self.weights is None:
            raise ModelError("SGLangEngine needs weights=WeightPublisher(...) to update the weights")
        publisher = self.weights
        await anyio.to_thread.run_sync(publisher.publish, state_dict, version)
        folder = await anyio.to_thread.run_sync(publisher.stage, version)
        await self._load(client, folder, version)

    async def _load(self, client: httpx2.AsyncClient, folder: Path, version: int) -> None:
        """Have the server load the model directory ``folder`` and serve it as ``version``."""
        body = {
            "model_path": str(folder),
            "weight_version": str(version),
            "flush_cache": True,
            "abort_all_requests": False,
        }
        async with self._update_lock:
            answer = json_object(await self._post(client, "/update_weights_from_disk", json=body))
            if not answer.get("success", False):
                raise ModelError(
                    f"the SGLang server at {self.base_url} did not load version {version}: "
                    f"{answer.get('message')!r}"
                )
            self.version = version

    async def flush_cache(self) -> bool:
        """Drop the server's prefix cache (``POST /flush_cache``); False when the server refused (it does while
        requests run)."""
        client = self._started()
        try:
            return (await client.post("/flush_cache")).status_code == 200
        except httpx2.HTTPError:
            return False

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, float]:
        """As :meth:`TorchEngine.stats`, measured from this client (see
        :meth:`~agentscope.rl.rollout._client_stats.ClientStats.stats`); prefix-cache hits come from
        ``meta_info.cached_tokens``."""
        return self._stats.stats(self.version)

    # ------------------------------------------------------------------ HTTP

    async def _post(self, client: httpx2.AsyncClient, url: str, **kwargs: Any) -> httpx2.Response:
        where = {"server": "SGLang", "base_url": self.base_url}
        response = await post(client, url, timeout_s=self.timeout_s, **where, **kwargs)
        return raise_for_error(response, url, **where)


_INPUT_RESERVE = 6
"""SGLang takes a prompt only if it is shorter than ``max_req_input_len = context_len - 1 - 5`` (its scheduler, at
the commit above), so the engine refuses from ``context_len - 6`` tokens on, and leaves one token of the context
unused (a later SGLang refuses ``prompt + max_new_tokens >= context_len``)."""

_CONTEXT_REFUSAL = re.compile(
    r"longer than the model's context length|exceeds the maximum allowed length|requested token count exceeds",
    re.IGNORECASE,
)
"""SGLang's 400 messages for a prompt (with its new tokens) that does not fit: its context length, its KV pool or
reserved tokens, which the engine cannot see; they become :class:`ContextLengthExceeded` too."""


def _generate_body(prompt_ids: list[int], params: SamplingParams, max_tokens: int) -> dict[str, Any]:
    sampling: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": True,
        "skip_special_tokens": False,
        "no_stop_trim": True,
    }
    if params.stop:
        sampling["stop"] = list(params.stop)
    if params.seed is not None:
        sampling["sampling_seed"] = params.seed
    return {
        "input_ids": list(prompt_ids),
        "sampling_params": sampling,
        "return_logprob": True,
        "stream": False,
    }


def _generation(data: dict[str, Any], head: int, tail: int, prompt_len: int, where: str) -> Generation:
    """The Generation in a ``/generate`` answer."""
    try:
        meta: Any = data["meta_info"]
        entries: Any = meta["output_token_logprobs"]
        lps = [float(e[0]) for e in entries]
        completion = [int(e[1]) for e in entries]
        reason: Any = meta.get("finish_reason")
        kind: Any = cast("dict[str, Any]", reason).get("type") if isinstance(reason, dict) else reason
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelResponseError(f"unexpected /generate answer from {where}: {exc!r}") from exc
    finish: FinishReason
    if kind == "stop":
        finish = "stop"
    elif kind == "length":
        finish = "length"
    else:  # "abort" (the server dropped it: too long, out of memory, aborted), or none
        message: Any = cast("dict[str, Any]", reason).get("message") if isinstance(reason, dict) else None
        raise ModelError(
            f"the SGLang server at {where} ended the generation with finish_reason={reason!r}"
            + (f": {message}" if message else "")
        )
    return Generation(
        completion_ids=completion,
        logprobs=lps,
        finish_reason=finish,
        version_head=head,
        version_tail=tail,
        prompt_len=prompt_len,
    )
