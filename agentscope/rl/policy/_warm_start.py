"""Warm start: supervised fine-tuning on demonstration transcripts, so a tiny policy starts from well-formed turns.

A demonstration is a conversation as the agent would have it (``list[Msg]``: system, user, assistant messages with
:class:`~agentscope.message.ToolUseBlock` calls, ``tool`` messages with
:class:`~agentscope.message.ToolResultBlock` results...) plus the tools offered. It is encoded exactly as the
rollout service encodes prompts (:class:`~agentscope.rl.policy.ChatTokenizer`), and the loss covers only what the
policy generates: each assistant message's body and its ``<|im_end|>``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentscope.message import Msg
from agentscope.models import ToolSchema
from agentscope.rl.policy._chat_format import ChatFormat
from agentscope.rl.policy._tokens import ChatTokenizer, TokenizerLike

if TYPE_CHECKING:
    import torch

__all__ = ["Demonstration", "warm_start"]


@dataclass(slots=True)
class Demonstration:
    """One transcript to imitate."""

    messages: list[Msg]
    """The conversation; assistant messages are the targets."""
    tools: list[ToolSchema] = field(default_factory=list[ToolSchema])
    """The tools offered (rendered in the system block, as in the agent's prompts)."""


def warm_start(
    model: Any,
    tokenizer: TokenizerLike,
    demonstrations: Sequence[Demonstration | Sequence[Msg]],
    steps: int = 100,
    *,
    tools: Sequence[ToolSchema] | None = None,
    chat_format: ChatFormat | None = None,
    lr: float = 1e-3,
    batch_size: int = 8,
    max_len: int | None = None,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    validate_every: int = 0,
    on_validate: Callable[[int], bool] | None = None,
) -> list[float]:
    """Fine-tune ``model`` (a Hugging Face causal LM, in place) on the demonstrations; returns the loss per step.

    Args:
        model: The policy, e.g. ``AutoModelForCausalLM.from_pretrained(build_tiny_policy(...))``.
        tokenizer: Its tokenizer.
        demonstrations: :class:`Demonstration` objects, or bare message lists (offered ``tools``).
        steps: Optimizer steps (AdamW, constant ``lr``, gradient norm clipped to 1).
        tools: The tools of bare message-list demonstrations.
        chat_format: How conversations are rendered (the rollout service's must be the same).
        lr: Learning rate.
        batch_size: Demonstrations per step (sampled without replacement, reshuffled each pass).
        max_len: Truncate longer encodings (default: the model's ``max_position_embeddings``).
        seed: Order of the demonstrations and the torch RNG.
        on_step: Called after each optimizer step with the number of steps done and that step's loss (e.g. to
            show progress).
        validate_every: With ``on_validate``: call it every this many steps, and after the last one.
        on_validate: Called (model in eval mode) with the number of steps done; returning True stops training
            there (early stopping: the caller measures the policy on validation tasks and keeps the best).

    Synchronous and CPU-heavy: from async code, run it with ``anyio.to_thread.run_sync``. Leaves the model in
    eval mode.
    """
    import torch

    if not demonstrations:
        raise ValueError("warm_start needs at least one demonstration")
    chat = ChatTokenizer(tokenizer, chat_format)
    limit = max_len or int(getattr(model.config, "max_position_embeddings", 2048))
    encoded: list[tuple[list[int], list[int]]] = []
    for demo in demonstrations:
        if isinstance(demo, Demonstration):
            ids, mask = chat.encode_conversation(demo.messages, demo.tools)
        else:
            ids, mask = chat.encode_conversation(list(demo), tools)
        if not any(mask):
            raise ValueError("a demonstration has no assistant message to learn from")
        encoded.append((ids[:limit], mask[:limit]))
    pad_id = _pad_id(tokenizer)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order_rng = random.Random(seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            batch: list[tuple[list[int], list[int]]] = []
            while len(batch) < min(batch_size, len(encoded)):
                if not order:
                    order = list(range(len(encoded)))
                    order_rng.shuffle(order)
                batch.append(encoded[order.pop()])
            input_ids, attention, targets = _collate(batch, pad_id, device)
            # The output projection only where there is a target: most positions are prompt and tool text.
            hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
            labels = targets[:, 1:]
            selected = labels != -100
            logits = model.get_output_embeddings()(hidden[:, :-1][selected])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[selected])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.item()))
            if on_step is not None:
                on_step(len(losses), losses[-1])
            done = len(losses)
            if on_validate is not None and (done == steps or (validate_every and done % validate_every == 0)):
                model.eval()
                if on_validate(done):
                    break
                model.train()
    model.eval()
    return losses


def _pad_id(tokenizer: TokenizerLike) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0


def _collate(
    batch: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, mask) in enumerate(batch):
        n = len(ids)
        input_ids[row, :n] = torch.tensor(ids)
        attention[row, :n] = 1
        targets[row, :n] = torch.tensor([t if m else -100 for t, m in zip(ids, mask, strict=True)])
    return input_ids.to(device), attention.to(device), targets.to(device)
