"""The ``rollout`` section of :class:`~agentscope.rl.RLConfig`: the rollout servers, their engine and sampling."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentscope.rl._device import DeviceSpec, DtypeSpec

__all__ = ["RolloutConfig", "check_rollout_engine"]


class RolloutConfig(BaseModel):
    """The rollout servers: where they run, the engine behind each, and sampling."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_batch: int = Field(default=64, ge=1)
    """Most sequences decoded together (continuous batching)."""
    max_seq_len: int = Field(default=2048, ge=16)
    """Longest prompt + completion a sequence may reach."""
    max_tokens: int = Field(default=128, ge=1)
    """Most tokens generated per model call."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (the trainer's ``temperature`` must equal it)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    threads: int | None = Field(default=1, ge=1)
    """torch intra-op threads of each engine's decode thread (one is robust on a few shared cores). None: torch's
    default."""
    device: DeviceSpec = "auto"
    """``engine: torch`` only: where each engine computes: ``auto`` (the first CUDA GPU torch sees, else the CPU),
    ``cpu``, ``cuda``, ``cuda:<index>``; a GPU torch does not see is an error naming this field. (vLLM and SGLang
    servers place themselves.)"""
    dtype: DtypeSpec = "auto"
    """``engine: torch`` only: the engine's compute dtype (``auto``: bfloat16 on a GPU, float32 on the CPU);
    log-probs are taken from float32 logits either way."""
    backend: Literal["inprocess", "process", "ray"] = "inprocess"
    """Where the rollout servers run. ``inprocess``: engines in the training process (threads). ``process``:
    each server a process of its own (``agentscope rl rollout-server``, on 127.0.0.1), talked to over HTTP and
    kept in sync through weight files written once per version under ``DIR/weights``; a server that dies is
    restarted from the newest weights (its episodes in flight are marked ``failed_infra``). ``ray``: each server a
    Ray actor (placed by ``threads`` CPUs, restarted by Ray; the cluster in ``RAY_ADDRESS``, else a local one),
    otherwise as ``process`` (on several machines, ``DIR/weights`` must be on a shared disk)."""
    servers: int = Field(default=1, ge=1)
    """Rollout servers, each an engine of its own (with ``threads`` threads), behind one router: an episode's
    session stays on the server that holds its tokens, new episodes go to the least loaded server serving the
    newest weights, and ``schedule.weight_sync: rolling`` updates them one after another while the others serve.
    """
    engine: Literal["torch", "vllm", "sglang"] = "torch"
    """What generates behind each rollout server. ``torch``: the embedded PyTorch engine (Qwen2-architecture
    policies; ``threads`` applies to it only). ``vllm``: a vLLM OpenAI-compatible
    server per rollout server: the one at ``engine_url``, else one the run launches on 127.0.0.1 with
    ``engine_python`` (``engine_args``, ``engine_env``; ``--max-num-seqs max_batch --max-model-len
    max_seq_len`` unless given) and stops with the run; weight updates reach it as files under ``DIR/weights``,
    reloaded in place (the server needs ``VLLM_SERVER_DEV_MODE=1``, which launched servers get). ``sglang``: the
    SGLang server at ``engine_url`` (the run does not launch SGLang: it needs a GPU), weights reloaded with
    ``/update_weights_from_disk`` from ``DIR/weights``. A server not on this machine must read ``DIR/weights``
    (a shared disk). vLLM on a CPU supports attention head sizes 32, 64, 80, ... only: the tiny policies of
    ``examples/rl/quickstart.yaml`` (head size 96 / 4 = 24) and ``smoke.yaml`` (16) cannot run on it; give
    ``policy.tiny`` a ``hidden_size / num_heads`` of 32 or 64 (the default tiny policy has 64), or a real model."""
    engine_url: list[str] = Field(default_factory=list[str])
    """``vllm``/``sglang``: the addresses (``http://host:port``) of servers already running, one per rollout
    server (a single string is one address). On a cluster these are the inference servers your scheduler started
    on the GPU nodes, each on the policy's architecture; the run loads its starting weights into them. Empty
    (``vllm`` only): the run launches one vLLM server per rollout server on this machine."""
    engine_model: str = "policy"
    """``vllm``: the served model name (``--served-model-name`` of a server at ``engine_url``)."""
    engine_python: str | None = None
    """``vllm`` without ``engine_url``: the interpreter of an environment with vLLM (it pins its own torch and
    transformers, so usually a virtual environment of its own, e.g. ``.vllm-venv/bin/python``). None: this
    one."""
    engine_args: list[str] = Field(default_factory=list[str])
    """``vllm`` without ``engine_url``: more arguments of each launched server (e.g. ``["--dtype", "float32",
    "--enforce-eager"]``)."""
    engine_env: dict[str, str] = Field(default_factory=dict[str, str])
    """``vllm`` without ``engine_url``: more environment variables of each launched server (e.g.
    ``{VLLM_CPU_KVCACHE_SPACE: "1"}`` on a CPU)."""
    engine_timeout_s: float = Field(default=600.0, gt=0)
    """``vllm``/``sglang``: longest one generation or weight update may take, and a launched server's start."""

    @field_validator("engine_url", mode="before")
    @classmethod
    def _one_url(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


def check_rollout_engine(rollout: RolloutConfig) -> None:
    """Raise ValueError, naming the field, for a ``rollout.engine`` that its other fields contradict."""
    launched_only = ("engine_python", "engine_args", "engine_env")
    if rollout.engine != "torch":
        placed = [f for f in ("device", "dtype") if _changed(rollout, f)]
        if placed:
            raise ValueError(
                f"rollout.{placed[0]}: only for rollout.engine torch ({rollout.engine} servers place themselves: "
                "give them their device and dtype in their own arguments)"
            )
    if rollout.engine == "torch":
        given = [f for f in ("engine_url", *launched_only, "engine_model") if _changed(rollout, f)]
        if given:
            raise ValueError(
                f"rollout.{given[0]}: only for rollout.engine vllm or sglang (the engine is torch)"
            )
        return
    if rollout.engine_url:
        given = [f for f in launched_only if _changed(rollout, f)]
        if given:
            raise ValueError(
                f"rollout.{given[0]}: only for vLLM servers the run launches; the servers at "
                "rollout.engine_url were started by you"
            )
        if len(rollout.engine_url) != rollout.servers:
            raise ValueError(
                f"rollout.engine_url: {len(rollout.engine_url)} addresses for {rollout.servers} rollout "
                "servers (rollout.servers): give one per server"
            )
        bad = [u for u in rollout.engine_url if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"rollout.engine_url: {bad[0]!r} is not an http:// or https:// address")
    elif rollout.engine == "sglang":
        raise ValueError(
            "rollout.engine_url: rollout.engine sglang needs the address of an SGLang server you started "
            "(python -m sglang.launch_server --model-path ...), one per rollout server; the run launches "
            "vLLM servers only"
        )
    elif _changed(rollout, "engine_model"):
        raise ValueError(
            "rollout.engine_model: only for servers at rollout.engine_url (launched ones serve 'policy')"
        )


def _changed(rollout: RolloutConfig, name: str) -> bool:
    """Whether field ``name`` differs from its default (a dumped config, as a run directory holds it, sets every
    field to its value)."""
    default = RolloutConfig.model_fields[name].get_default(call_default_factory=True)
    return getattr(rollout, name) != default
