"""A batched forward pass of the Qwen2 architecture over a slot-based KV cache, for the rollout engine.

Reads a Hugging Face ``Qwen2ForCausalLM`` state dict (parameter names as Hugging Face writes them) and computes
what the Hugging Face model computes (RMSNorm, RoPE, grouped-query attention with q/k/v biases, SwiGLU MLP, tied or
separate output projection), but for many sequences at once that are each at their own length:

- the KV cache is ``[layers, slots, kv_heads, capacity, head_dim]``; running sequences occupy slots ``0..B-1``
  (the engine keeps them packed, moving the last one into a freed slot), each with its own length;
- :meth:`Qwen2Runner.prefill` runs one prompt (causal attention) into a slot;
- :meth:`Qwen2Runner.decode` advances all ``B`` sequences by one token in one pass: each query attends to its own
  slot's keys up to its own length (a length mask), the query heads of a group sharing their key/value head.

The q/k/v projections and the gate/up projections are fused into one matrix each (fewer, larger matmuls).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Qwen2Runner", "RunnerShape"]


@dataclass(frozen=True, slots=True)
class RunnerShape:
    """The architecture numbers the runner needs, read from a ``Qwen2Config``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool

    @classmethod
    def from_config(cls, config: Any) -> RunnerShape:
        """Read a ``transformers`` Qwen2 (or Llama-like) config; refuses what the runner does not implement."""
        rope: dict[str, Any] = dict(getattr(config, "rope_parameters", None) or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise NotImplementedError(f"rope_type {rope_type!r} is not supported by the torch rollout engine")
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        if getattr(config, "hidden_act", "silu") != "silu":
            raise NotImplementedError(f"hidden_act {config.hidden_act!r} is not supported")
        if getattr(config, "use_sliding_window", False):
            raise NotImplementedError("sliding-window attention is not supported by the torch rollout engine")
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            vocab_size=int(config.vocab_size),
            hidden_size=int(config.hidden_size),
            intermediate_size=int(config.intermediate_size),
            num_layers=int(config.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(config.rms_norm_eps),
            rope_theta=float(theta),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


@dataclass(slots=True)
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor
    wdown: torch.Tensor


def _layer_names(i: int) -> dict[str, str]:
    p = f"model.layers.{i}."
    return {
        "ln1": p + "input_layernorm.weight",
        "q": p + "self_attn.q_proj.weight",
        "k": p + "self_attn.k_proj.weight",
        "v": p + "self_attn.v_proj.weight",
        "qb": p + "self_attn.q_proj.bias",
        "kb": p + "self_attn.k_proj.bias",
        "vb": p + "self_attn.v_proj.bias",
        "o": p + "self_attn.o_proj.weight",
        "ln2": p + "post_attention_layernorm.weight",
        "gate": p + "mlp.gate_proj.weight",
        "up": p + "mlp.up_proj.weight",
        "down": p + "mlp.down_proj.weight",
    }


class Qwen2Runner:
    """Batched Qwen2 inference with a per-slot KV cache (see the module docstring). Not thread-safe: one thread
    (the engine's) calls it.

    Args:
        shape: The architecture.
        state_dict: Hugging Face parameter names to tensors (copied).
        max_slots: Sequences that can be in the cache at once.
        max_seq_len: Longest sequence (prompt + completion).
        dtype: Compute dtype (float32 on CPU).
        device: Where to compute.
    """

    def __init__(
        self,
        shape: RunnerShape,
        state_dict: Mapping[str, torch.Tensor],
        *,
        max_slots: int,
        max_seq_len: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        self.shape = shape
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.dtype = dtype
        self.device = torch.device(device)
        self._params: dict[str, torch.Tensor] = {}
        self._layers: list[_Layer] = []
        self._embed = torch.empty(0)
        self._norm = torch.empty(0)
        self._lm_head = torch.empty(0)
        self.load(state_dict, strict=True)

        d = shape.head_dim
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        freqs = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self._cos = emb.cos().to(device=self.device, dtype=dtype)
        self._sin = emb.sin().to(device=self.device, dtype=dtype)
        self._arange = torch.arange(max_seq_len, device=self.device)
        self._scale = d**-0.5
        self.capacity = 0
        self._k = torch.empty(0)
        self._v = torch.empty(0)
        self.ensure_capacity(min(256, max_seq_len))

    # ------------------------------------------------------------------ weights

    def load(self, state_dict: Mapping[str, torch.Tensor], *, strict: bool = False) -> None:
        """Take these parameters (copies, in the compute dtype) and rebuild the fused matrices.

        ``strict``: every parameter must be present (the first load). Unknown names raise ``KeyError``; a tensor
        whose shape differs from the parameter it replaces raises ``ValueError``. Both are checked before anything
        changes, so a rejected update leaves the weights as they were.
        """
        known = self._expected_names()
        unknown = [name for name in state_dict if name not in known and name != "lm_head.weight"]
        if unknown:
            raise KeyError(f"unknown parameter names for a Qwen2 model: {unknown[:5]}")
        for name, tensor in state_dict.items():
            current = self._params.get(name)
            if current is not None and tuple(tensor.shape) != tuple(current.shape):
                raise ValueError(
                    f"parameter {name}: shape {tuple(tensor.shape)} does not match the model's {tuple(current.shape)}"
                )
        for name, tensor in state_dict.items():
            self._params[name] = tensor.detach().to(device=self.device, dtype=self.dtype, copy=True)
        if strict:
            missing = sorted(known - self._params.keys())
            if missing:
                raise KeyError(f"missing parameters: {missing[:5]}")
        self._build()

    def _expected_names(self) -> set[str]:
        names = {"model.embed_tokens.weight", "model.norm.weight"}
        for i in range(self.shape.num_layers):
            names.update(_layer_names(i).values())
        if not self.shape.tie_word_embeddings:
            names.add("lm_head.weight")
        return names

    def _build(self) -> None:
        p = self._params
        self._embed = p["model.embed_tokens.weight"]
        self._norm = p["model.norm.weight"]
        if self.shape.tie_word_embeddings:
            self._lm_head = self._embed
        else:
            self._lm_head = p["lm_head.weight"]
        layers: list[_Layer] = []
        for i in range(self.shape.num_layers):
            n = _layer_names(i)
            layers.append(
                _Layer(
                    ln1=p[n["ln1"]],
                    wqkv=torch.cat([p[n["q"]], p[n["k"]], p[n["v"]]], dim=0).contiguous(),
                    bqkv=torch.cat([p[n["qb"]], p[n["kb"]], p[n["vb"]]], dim=0).contiguous(),
                    wo=p[n["o"]],
                    ln2=p[n["ln2"]],
                    wgu=torch.cat([p[n["gate"]], p[n["up"]]], dim=0).contiguous(),
                    wdown=p[n["down"]],
                )
            )
        self._layers = layers

    # ------------------------------------------------------------------ cache

    def ensure_capacity(self, length: int) -> None:
        """Grow the cache (doubling) so that every slot can hold ``length`` positions."""
        if length <= self.capacity:
            return
        if length > self.max_seq_len:
            raise ValueError(f"sequence of {length} tokens exceeds max_seq_len={self.max_seq_len}")
        new = min(self.max_seq_len, max(length, 2 * self.capacity))
        s = self.shape
        size = (s.num_layers, self.max_slots, s.num_kv_heads, new, s.head_dim)
        k = torch.zeros(size, device=self.device, dtype=self.dtype)
        v = torch.zeros(size, device=self.device, dtype=self.dtype)
        if self.capacity:
            k[:, :, :, : self.capacity] = self._k
            v[:, :, :, : self.capacity] = self._v
        self._k, self._v, self.capacity = k, v, new

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy slot ``src``'s first ``length`` cache positions into slot ``dst``."""
        self._k[:, dst, :, :length] = self._k[:, src, :, :length]
        self._v[:, dst, :, :length] = self._v[:, src, :, :length]

    # ------------------------------------------------------------------ forward

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.shape.rms_norm_eps)
        return weight * xf.to(x.dtype)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def prefill(self, slot: int, ids: list[int], start: int = 0) -> torch.Tensor:
        """Run ``ids`` (positions ``start..``) into ``slot``'s cache; the slot must already hold ``start``
        positions. Returns the logits after the last token, ``[vocab]`` (float32)."""
        return self.prefill_many([(slot, ids, start)])[0]

    def prefill_many(self, items: list[tuple[int, list[int], int]]) -> torch.Tensor:
        """Several prompts at once, each ``(slot, ids, start)`` as in :meth:`prefill`: the projections and MLPs
        run on all their tokens together (one matmul each), attention per prompt against its own slot.
        Returns the logits after each prompt's last token, ``[len(items), vocab]`` (float32)."""
        s = self.shape
        self.ensure_capacity(max(start + len(ids) for _, ids, start in items))
        tokens = torch.tensor([t for _, ids, _ in items for t in ids], dtype=torch.long, device=self.device)
        positions = torch.cat(
            [self._arange[start : start + len(ids)] for _, ids, start in items]
        )  # [T] position of each token
        total = tokens.shape[0]
        x = F.embedding(tokens, self._embed)  # [T, H]
        cos = self._cos[positions].unsqueeze(1)  # [T, 1, D]
        sin = self._sin[positions].unsqueeze(1)
        qd, kd = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        spans: list[tuple[int, int, int, int, torch.Tensor | None]] = []  # slot, offset, start, end, mask
        offset = 0
        for slot, ids, start in items:
            end = start + len(ids)
            mask = None if start == 0 else (self._arange[:end][None, :] <= self._arange[start:end][:, None])
            spans.append((slot, offset, start, end, mask))
            offset += len(ids)
        for i, layer in enumerate(self._layers):
            h = self._rms(x, layer.ln1)
            qkv = F.linear(h, layer.wqkv, layer.bqkv)
            q = self._rope(qkv[:, :qd].view(total, s.num_heads, s.head_dim), cos, sin)
            k = self._rope(qkv[:, qd : qd + kd].view(total, s.num_kv_heads, s.head_dim), cos, sin)
            v = qkv[:, qd + kd :].view(total, s.num_kv_heads, s.head_dim)
            outputs: list[torch.Tensor] = []
            for slot, off, start, end, mask in spans:
                n = end - start
                self._k[i, slot, :, start:end] = k[off : off + n].transpose(0, 1)
                self._v[i, slot, :, start:end] = v[off : off + n].transpose(0, 1)
                attn = F.scaled_dot_product_attention(
                    q[off : off + n].transpose(0, 1).unsqueeze(0),
                    self._k[i, slot, :, :end].unsqueeze(0),  # [1, KV, end, D]
                    self._v[i, slot, :, :end].unsqueeze(0),
                    attn_mask=mask,
                    is_causal=mask is None,
                    scale=self._scale,
                    enable_gqa=True,
                )  # [1, H, n, D]
                outputs.append(attn[0].transpose(0, 1).reshape(n, qd))
            x = x + F.linear(outputs[0] if len(outputs) == 1 else torch.cat(outputs), layer.wo)
            h = self._rms(x, layer.ln2)
            gu = F.linear(h, layer.wgu)
            x = x + F.linear(F.silu(gu[:, : s.intermediate_size]) * gu[:, s.intermediate_size :], layer.wdown)
        last = torch.tensor([off + end - start - 1 for _, off, start, end, _ in spans], device=self.device)
        return F.linear(self._rms(x[last], self._norm), self._lm_head).float()

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One decode step for slots ``0..B-1``: ``tokens[b]`` goes to position ``positions[b]`` of slot ``b``.

        The cache must have capacity beyond the largest position. Returns logits ``[B, vocab]`` (float32).
        """
        s = self.shape
        b = tokens.shape[0]
        length = int(positions.max().item()) + 1
        rows = self._arange[:b]
        x = F.embedding(tokens, self._embed)  # [B, H]
        cos = self._cos[positions].unsqueeze(1)  # [B, 1, D]
        sin = self._sin[positions].unsqueeze(1)
        mask = (self._arange[:length][None, :] <= positions[:, None])[:, None, None, :]  # [B, 1, 1, L]
        qd, kd = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        group = s.num_heads // s.num_kv_heads
        for i, layer in enumerate(self._layers):
            h = self._rms(x, layer.ln1)
            qkv = F.linear(h, layer.wqkv, layer.bqkv)
            q = self._rope(qkv[:, :qd].view(b, s.num_heads, s.head_dim), cos, sin)
            k = self._rope(qkv[:, qd : qd + kd].view(b, s.num_kv_heads, s.head_dim), cos, sin)
            v = qkv[:, qd + kd :].view(b, s.num_kv_heads, s.head_dim)
            cache_k, cache_v = self._k[i], self._v[i]
            cache_k[rows, :, positions] = k
            cache_v[rows, :, positions] = v
            attn = F.scaled_dot_product_attention(
                q.view(b, s.num_kv_heads, group, s.head_dim),  # the heads of a group are its query rows
                cache_k[:b, :, :length],
                cache_v[:b, :, :length],
                attn_mask=mask,
                scale=self._scale,
            )  # [B, KV, G, D]
            x = x + F.linear(attn.reshape(b, qd), layer.wo)
            h = self._rms(x, layer.ln2)
            gu = F.linear(h, layer.wgu)
            x = x + F.linear(F.silu(gu[:, : s.intermediate_size]) * gu[:, s.intermediate_size :], layer.wdown)
        return F.linear(self._rms(x, self._norm), self._lm_head).float()
