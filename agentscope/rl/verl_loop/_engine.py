"""VerlServerEngine: verl's LLM server client behind the rollout engine seam, for one episode.

:class:`~agentscope.rl.rollout.RolloutService` renders the agent's messages, keeps the episode's token ids
(token-in/token-out: turn t+1's prompt extends turn t's ids) and parses completions; this engine only turns its
token-id prompts into calls of verl's ``server_manager.generate(request_id=..., prompt_ids=..., sampling_params=...)``
and the :class:`~verl.workers.rollout.replica.TokenOutput` back into a :class:`~agentscope.rl.rollout.Generation`.

The sampling is verl's: the temperature, top-p, top-k and ``logprobs`` flag of the ``sampling_params`` verl hands
the agent loop go to every call unchanged (an agent's own ``temperature`` setting is ignored, so the rollout
log-probs are those of the distribution verl's actor recomputes). When ``logprobs`` is on, a server that answers
without a log-prob per token is a :class:`~agentscope.exceptions.ModelError` (verl keeps a batch's rollout log-probs
only when every row has them). Each call may generate at most what is left of
``rollout.response_length`` for the whole episode (its first prompt excluded): once that is spent, :meth:`generate`
raises :class:`ResponseBudgetSpent` instead of calling the server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agentscope.exceptions import ModelError
from agentscope.rl.rollout import FinishReason, Generation, SamplingParams

if TYPE_CHECKING:
    import torch

__all__ = ["ResponseBudgetSpent", "ServerManager", "VerlServerEngine"]


class ServerManager(Protocol):
    """What the engine needs of verl's ``AgentLoopBase.server_manager`` (an ``LLMServerClient``)."""

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any
    ) -> Any:
        """Generate from ``prompt_ids``; returns a ``TokenOutput`` (``token_ids``, ``log_probs``...)."""
        ...


class ResponseBudgetSpent(Exception):
    """The episode's response tokens (generated and observation tokens after its first prompt) reached verl's
    ``rollout.response_length``: the agent loop stops the agent and keeps the turns recorded so far."""


class VerlServerEngine:
    """A :class:`~agentscope.rl.rollout.RolloutEngine` over verl's server manager, for one episode.

    Args:
        server_manager: ``AgentLoopBase.server_manager``.
        request_id: Sent with every call: verl routes the calls of one request id to one server (sticky sessions,
            prefix cache).
        sampling_params: The ``sampling_params`` verl passed to ``AgentLoopBase.run``.
        response_length: ``rollout.response_length``: most tokens after the first prompt, in all.
        server_name: What to call the servers in an error (verl's ``rollout.name``, e.g. ``vllm``).
    """

    def __init__(
        self,
        server_manager: ServerManager,
        *,
        request_id: str,
        sampling_params: Mapping[str, Any],
        response_length: int,
        server_name: str | None = None,
    ) -> None:
        self.server_manager = server_manager
        """verl's LLM server client."""
        self.server_name = server_name
        """verl's ``rollout.name``, for error messages (None: unknown)."""
        self.request_id = request_id
        """The episode's request id."""
        self.sampling_params: dict[str, Any] = dict(sampling_params)
        """verl's sampling parameters, sent with every call."""
        self.response_length = response_length
        """The episode's response budget."""
        self.version = 0
        """The last ``global_steps`` verl reported (0 until it reports one)."""
        self.first_prompt_len: int | None = None
        """Length of the episode's first prompt (the response budget is counted after it)."""
        self.calls = 0
        """Calls made."""
        self.generate_s = 0.0
        """Seconds spent waiting for the server."""
        self.num_preempted: int | None = None
        """Preemptions the server reported, summed (None when it reports none)."""
        self.with_logprobs = bool(self.sampling_params.get("logprobs"))
        """Whether verl asked for log-probs (``rollout.calculate_log_probs``): then every call must return them."""
        self.extra_fields: dict[str, Any] = {}
        """The first call's ``extra_fields``, ``max_global_steps`` kept up to date (as verl's tool agent does)."""

    async def start(self) -> None:
        """Nothing to start: verl runs the servers."""

    async def stop(self) -> None:
        """Nothing to stop: verl runs the servers."""

    def remaining(self, prompt_ids: list[int]) -> int:
        """Tokens a call with ``prompt_ids`` may still generate."""
        first = self.first_prompt_len if self.first_prompt_len is not None else len(prompt_ids)
        return self.response_length - (len(prompt_ids) - first)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """One call of ``server_manager.generate``: ``max_tokens`` is the smaller of ``params.max_tokens`` and the
        budget left; the stop token ids are verl's and ``params``'; ``params``' sampling knobs are not used.

        Raises:
            ResponseBudgetSpent: nothing is left of the response budget.
            ModelError: log-probs were asked for and the server returned none, or not one per token.
        """
        if self.first_prompt_len is None:
            self.first_prompt_len = len(prompt_ids)
        budget = self.remaining(prompt_ids)
        if budget <= 0:
            raise ResponseBudgetSpent(
                f"the episode's {self.response_length} response tokens are spent (rollout.response_length)"
            )
        sampling: dict[str, Any] = dict(self.sampling_params)
        sampling["max_tokens"] = min(budget, params.max_tokens)
        stop_ids = set(params.stop_token_ids) | set(sampling.get("stop_token_ids") or [])
        sampling["stop_token_ids"] = sorted(stop_ids)
        if params.stop:
            sampling["stop"] = list(params.stop)
        started = time.perf_counter()
        output = await self.server_manager.generate(
            request_id=self.request_id, prompt_ids=list(prompt_ids), sampling_params=sampling
        )
        self.generate_s += time.perf_counter() - started
        self.calls += 1
        return self._generation(output, prompt_ids, sampling["max_tokens"], stop_ids)

    def _generation(
        self, output: Any, prompt_ids: list[int], max_tokens: int, stop_ids: set[int]
    ) -> Generation:
        token_ids = [int(t) for t in output.token_ids]
        log_probs = output.log_probs
        if log_probs is not None and len(log_probs) == len(token_ids):
            logprobs = [float(p) for p in log_probs]
        elif self.with_logprobs and token_ids:
            got = "no log-probs" if log_probs is None else f"{len(log_probs)} log-probs"
            raise ModelError(
                f"{self._server()} answered request {self.request_id!r} (call {self.calls}) with "
                f"{len(token_ids)} tokens and {got}, though the call asked for log-probs "
                "(actor_rollout_ref.rollout.calculate_log_probs is on): verl needs them on every row of a batch"
            )
        else:
            logprobs = [0.0] * len(token_ids)  # not asked for: the loop returns none
        if output.num_preempted is not None:
            self.num_preempted = (self.num_preempted or 0) + int(output.num_preempted)
        extra: dict[str, Any] = dict(output.extra_fields or {})
        if not self.extra_fields:
            self.extra_fields.update(extra)
        elif extra.get("max_global_steps") is not None:
            self.extra_fields["max_global_steps"] = extra["max_global_steps"]
        steps = extra.get("global_steps", extra.get("max_global_steps"))
        if isinstance(steps, int):
            self.version = steps
        first = extra.get("min_global_steps")
        finish: FinishReason = "stop" if token_ids and token_ids[-1] in stop_ids else "length"
        if finish == "length" and len(token_ids) < max_tokens and output.stop_reason == "completed":
            finish = "stop"  # a stop string ended it
        return Generation(
            completion_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish,
            version_head=first if isinstance(first, int) else self.version,
            version_tail=self.version,
            prompt_len=len(prompt_ids),
        )

    def _server(self) -> str:
        """The servers, as an error names them."""
        kind = f"verl's {self.server_name} rollout server" if self.server_name else "verl's rollout server"
        return f"{kind} (through {type(self.server_manager).__name__})"

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Not supported: verl's trainer updates its servers' weights itself."""
        raise NotImplementedError("verl updates the weights of its rollout servers itself")

    def stats(self) -> dict[str, float]:
        """``rollout/calls`` and ``rollout/generate_s`` of this episode."""
        return {"rollout/calls": float(self.calls), "rollout/generate_s": self.generate_s}
