"""A few RL steps move log-probs in the direction of the advantage (issue 12's CI check of the learning signal).

On the real trainer (verl's GRPO advantages and clipped policy loss) and the project's tiny Qwen2 policy
(``build_tiny_policy``, a real BPE tokenizer with the ChatML layout), with episodes tokenized the way the rollout
service tokenizes them (:class:`ChatTokenizer`):

- one task, a group of answers, some rewarded 1 and some 0: after a few steps every rewarded answer is more likely
  and every unrewarded one less likely, by far more than numerical noise; when every answer gets the same reward
  (GRPO: zero advantage) the policy does not move at all;
- two-turn episodes (a tool call, the tool's result, the answer): every rewarded episode's policy tokens gain more
  log-probability than any unrewarded episode's, and the trainer's loss reaches only the policy's tokens: the
  gradient on the logits is exactly zero at every tool/observation position and equals verl's token-mean policy
  gradient (and entropy bonus), normalised over the policy's tokens only, everywhere else.

Each direction test fails if the advantage's sign is flipped; the gradient test fails then too, and when the loss
mask is ignored: observation tokens marked trainable in the batch, the attention mask used as the response mask,
or the loss taken over every position (verl's advantages are already zero off the mask, so this last one shows
only through the entropy bonus, hence the ``entropy_coef`` case).

Each episode is re-scored under the current weights before every step (rollout log-probs = the policy's own, so the
importance ratio starts at 1), as an on-policy rollout of the same answers would report them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from agentscope.message import Msg, ToolResultBlock, ToolUseBlock
from agentscope.models import ToolSchema
from agentscope.rl import Trajectory, Turn
from agentscope.rl.policy import ChatTokenizer, TinyPolicyConfig, build_tiny_policy
from agentscope.rl.trainer import Trainer, TrainerConfig

TINY = TinyPolicyConfig(
    vocab_size=512,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=512,
    corpus_conversations=100,
)
STEPS = 3
CONFIG = TrainerConfig(lr=1e-3)
"""The trainer's defaults (GRPO, PPO clip, token-mean, truncated IS) with a learning rate for a few steps. Higher
rates (1e-2) overshoot on this tiny model: every answer's log-prob swings up and down together from step to step."""
MIN_MOVE = 0.1
"""Nats the sequence log-prob of an answer must move by in the advantage's direction after STEPS steps (measured
on this policy: 0.30 to 3.5; over build seeds 0-9, at least 0.18). The two-turn contrast must exceed 5x this
(measured: 1.9; over seeds 0-9, at least 1.2)."""
NOISE = 1e-5
"""Nats any answer may move by when every reward is equal (measured: exactly 0)."""


class Policy(NamedTuple):
    model: PreTrainedModel
    """Random weights (seeded); each test trains its own deep copy."""
    tokenizer: Any


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """The tiny policy and its tokenizer, built once per module."""
    path: Path = build_tiny_policy(TINY, tmp_path_factory.mktemp("policy"))
    model = cast("PreTrainedModel", AutoModelForCausalLM.from_pretrained(path))
    return Policy(model, AutoTokenizer.from_pretrained(path))


@pytest.fixture(scope="module")
def chat(policy: Policy) -> ChatTokenizer:
    return ChatTokenizer(policy.tokenizer)


@dataclass
class Episode:
    """An episode's tokens as the policy saw and produced them: (prompt, completion) per turn, and its reward."""

    turns: list[tuple[list[int], list[int]]]
    reward: float
    name: str = ""


@torch.no_grad()
def completion_log_probs(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> list[float]:
    """log p(completion token | everything before it), from one unpadded forward pass (a rollout engine's view)."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    picked = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(completion).unsqueeze(-1))
    return cast("list[float]", picked.squeeze(-1).tolist())


def sequence_log_prob(model: torch.nn.Module, episode: Episode) -> float:
    """Log-probability of everything the policy generated in ``episode`` (tool/observation tokens excluded)."""
    return sum(sum(completion_log_probs(model, p, c)) for p, c in episode.turns)


def rollout(model: torch.nn.Module, episodes: Sequence[Episode]) -> list[Trajectory]:
    """The episodes as one group of trajectories, with the current policy's log-probs as the rollout's."""
    return [
        Trajectory(
            task_id="add",
            group_id="add-0",
            turns=[
                Turn(
                    prompt_ids=prompt,
                    completion_ids=completion,
                    logprobs=completion_log_probs(model, prompt, completion),
                    version_head=0,
                    version_tail=0,
                )
                for prompt, completion in e.turns
            ],
            reward=e.reward,
            success=e.reward > 0,
        )
        for e in episodes
    ]


def train(model: torch.nn.Module, tokenizer: Any, episodes: Sequence[Episode]) -> list[float]:
    """STEPS trainer steps on the group; how much each episode's sequence log-prob moved."""
    before = [sequence_log_prob(model, e) for e in episodes]
    trainer = Trainer(model, tokenizer, CONFIG)
    for step in range(STEPS):
        metrics = trainer.step(rollout(model, episodes), step=step)
        assert metrics["train/optimizer_steps"] == 1.0  # a real update ran (not skipped)
    return [sequence_log_prob(model, e) - b for e, b in zip(episodes, before, strict=True)]


# -- the episodes ----------------------------------------------------------------------------------------------

QUESTION = "What is 17 + 25?"
CALCULATOR = ToolSchema(
    name="calculator",
    description="Evaluate an arithmetic expression and return the result.",
    parameters={
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
        "type": "object",
    },
)


def prompt_ids(chat: ChatTokenizer) -> list[int]:
    """System block with the calculator's signature, the question, and the generation prompt."""
    return (
        chat.encode_system(None, [CALCULATOR])
        + chat.encode_message(Msg(role="user", content=QUESTION))
        + chat.generation_prompt_ids
    )


def answer(chat: ChatTokenizer, text: str) -> list[int]:
    return chat.assistant_completion_ids(Msg(role="assistant", content=text))


def single_turn_group(chat: ChatTokenizer, rewards: Sequence[float] | None = None) -> list[Episode]:
    """Six answers to one question; the right ones rewarded 1 (or ``rewards``).

    The wrong answers are not near-copies of right ones: for a near-miss ("41" beside "42") the shared tokens
    rise with the right answer and can carry the wrong one up with them (the policy gradient guarantees the
    contrast, not each sequence's sign, and a random tiny model shares much between contexts).
    """
    answers = [
        ("42", 1.0),
        ("I do not know.", 0.0),
        ("The answer is 42.", 1.0),
        ("Hello! How can I help you today?", 0.0),
        ("17 + 25 = 42", 1.0),
        ("yes", 0.0),
    ]
    prompt = prompt_ids(chat)
    return [
        Episode(turns=[(prompt, answer(chat, text))], reward=r if rewards is None else rewards[i], name=text)
        for i, (text, r) in enumerate(answers)
    ]


def two_turn_episode(chat: ChatTokenizer, expression: str, result: str, final: str, reward: float) -> Episode:
    """A calculator call, the tool's result (observation tokens between the turns), then the final answer."""
    first_prompt = prompt_ids(chat)
    call = chat.assistant_completion_ids(
        Msg(
            role="assistant",
            content=[ToolUseBlock(id="c1", name="calculator", input={"expression": expression})],
        )
    )
    observation = (
        chat.closing_ids(call)
        + chat.encode_message(
            Msg(role="tool", content=[ToolResultBlock(id="c1", name="calculator", output=result)])
        )
        + chat.generation_prompt_ids
    )
    second_prompt = first_prompt + call + observation
    return Episode(
        turns=[(first_prompt, call), (second_prompt, answer(chat, final))], reward=reward, name=expression
    )


def two_turn_group(chat: ChatTokenizer) -> list[Episode]:
    return [
        two_turn_episode(chat, "17 + 25", "42", "The answer is 42.", 1.0),
        two_turn_episode(chat, "17 - 25", "-8", "The answer is -8.", 0.0),
        two_turn_episode(chat, "hello", "Error: invalid expression", "I do not know.", 0.0),
        two_turn_episode(chat, "25 + 17", "42", "42", 1.0),
    ]


# -- the tests -------------------------------------------------------------------------------------------------


def test_rewarded_answers_become_likelier_and_the_others_less_likely(
    policy: Policy, chat: ChatTokenizer
) -> None:
    model, tokenizer = copy.deepcopy(policy.model), policy.tokenizer
    episodes = single_turn_group(chat)
    moved = train(model, tokenizer, episodes)
    report = {e.name: round(d, 3) for e, d in zip(episodes, moved, strict=True)}
    for episode, delta in zip(episodes, moved, strict=True):
        if episode.reward > 0:
            assert delta > MIN_MOVE, report
        else:
            assert delta < -MIN_MOVE, report


@pytest.mark.parametrize("reward", [0.0, 1.0])
def test_equal_rewards_give_zero_advantage_and_leave_the_policy_alone(
    policy: Policy, chat: ChatTokenizer, reward: float
) -> None:
    """The control: the same answers and steps, every reward equal. Whatever moved above came from the advantage."""
    model, tokenizer = copy.deepcopy(policy.model), policy.tokenizer
    episodes = single_turn_group(chat, rewards=[reward] * 6)
    moved = train(model, tokenizer, episodes)
    assert max(abs(d) for d in moved) <= NOISE, moved


def test_two_turn_episodes_move_apart_by_their_advantage(policy: Policy, chat: ChatTokenizer) -> None:
    """Every rewarded episode's policy tokens gain more log-probability than any unrewarded episode's.

    Here the contrast is asserted, not each unrewarded episode's sign: the four tool calls share a ~15-token
    template, and the near-miss ("17 - 25", "The answer is -8.") most of a rewarded episode's tokens; in a random
    tiny model such shared tokens rise with the rewarded episodes (by up to ~0.9 nat on some initialisations),
    which can lift the near-miss as a whole although its own tokens fell. The contrast is what the policy
    gradient fixes.
    """
    model, tokenizer = copy.deepcopy(policy.model), policy.tokenizer
    episodes = two_turn_group(chat)
    moved = train(model, tokenizer, episodes)
    report = {e.name: round(d, 3) for e, d in zip(episodes, moved, strict=True)}
    rewarded = [d for e, d in zip(episodes, moved, strict=True) if e.reward > 0]
    unrewarded = [d for e, d in zip(episodes, moved, strict=True) if e.reward == 0]
    assert min(rewarded) > MIN_MOVE, report
    assert min(rewarded) - max(unrewarded) > 5 * MIN_MOVE, report


@dataclass
class Captured:
    """One training forward pass: its inputs, its logits and, after backward, their gradient."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    logits: torch.Tensor | None = None
    grad: torch.Tensor | None = None


@pytest.fixture
def capture_logit_grads() -> Iterator[Callable[[PreTrainedModel], list[Captured]]]:
    """Hooks that record the gradient the trainer's loss puts on the policy's output logits."""
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(model: PreTrainedModel) -> list[Captured]:
        passes: list[Captured] = []

        def before_forward(_module: torch.nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
            if torch.is_grad_enabled():
                passes.append(Captured(kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))

        def after_head(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            if not torch.is_grad_enabled():
                return
            entry = passes[-1]
            entry.logits = output.detach().clone()

            def keep(grad: torch.Tensor) -> None:
                entry.grad = grad.detach().clone()

            output.register_hook(keep)

        handles.append(model.register_forward_pre_hook(before_forward, with_kwargs=True))
        head = cast("torch.nn.Module", model.get_output_embeddings())
        handles.append(head.register_forward_hook(after_head))
        return passes

    yield attach
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("entropy_coef", [0.0, 0.1])
def test_tool_and_observation_tokens_carry_no_gradient(
    policy: Policy,
    chat: ChatTokenizer,
    capture_logit_grads: Callable[[PreTrainedModel], list[Captured]],
    entropy_coef: float,
) -> None:
    """The loss the trainer backpropagates is verl's token-mean loss over the policy's tokens only.

    At ratio 1 (on-policy), the token mean of ``-A * ratio - c * entropy`` over the N policy tokens has, on the
    logits that predict policy token ``y``, the gradient ``-(A / N) * (onehot(y) - p) + (c / N) * p * (log p + H)``
    (``p = softmax(logits)``, ``H`` its entropy); on the logits that predict a tool/observation token or padding
    it must be exactly zero. A trainer that trained on the observation tokens, averaged over them (or over
    padding), or left them out of the policy loss but not out of the entropy bonus, fails here.
    """
    model, tokenizer = copy.deepcopy(policy.model), policy.tokenizer
    episodes = two_turn_group(chat)
    trajectories = rollout(model, episodes)
    passes = capture_logit_grads(model)
    config = CONFIG.model_copy(update={"entropy_coef": entropy_coef})
    Trainer(model, tokenizer, config).step(trajectories)

    # GRPO's outcome advantage, from the rewards: (r - group mean) / (group std + eps), one value per episode.
    rewards = torch.tensor([e.reward for e in episodes])
    advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
    # What the policy generated, and where, in each episode's flattened response (after the first prompt).
    responses: dict[tuple[int, ...], tuple[int, list[int], list[int]]] = {}
    for i, episode in enumerate(episodes):
        (first_prompt, _), (last_prompt, last_completion) = episode.turns[0], episode.turns[-1]
        response = (last_prompt + last_completion)[len(first_prompt) :]
        mask = [0] * len(response)
        for prompt, completion in episode.turns:
            start = len(prompt) - len(first_prompt)
            mask[start : start + len(completion)] = [1] * len(completion)
        responses[tuple(first_prompt + response)] = (i, response, mask)
    policy_tokens = sum(sum(mask) for _, _, mask in responses.values())
    observation_tokens = sum(len(r) - sum(m) for _, r, m in responses.values())
    assert observation_tokens >= 4 * 10  # the observations are real tool-result blocks, not a token or two

    seen: set[int] = set()
    zero_where_masked = 0
    for captured in passes:
        assert captured.logits is not None
        assert captured.grad is not None
        # logits[:, j] predicts response token j (the last one predicts nothing).
        kept = captured.logits.shape[1] - 1
        for row in range(captured.input_ids.shape[0]):
            tokens = cast("list[int]", captured.input_ids[row][captured.attention_mask[row].bool()].tolist())
            i, response, mask = responses[tuple(tokens)]
            seen.add(i)
            logits, grad = captured.logits[row, :kept], captured.grad[row, :kept]
            expected = torch.zeros_like(grad)
            for j, (token, trained) in enumerate(zip(response, mask, strict=True)):
                if trained:
                    onehot = torch.nn.functional.one_hot(torch.tensor(token), grad.shape[-1]).float()
                    p, log_p = logits[j].softmax(-1), logits[j].log_softmax(-1)
                    entropy = -(p * log_p).sum()
                    expected[j] = (
                        -advantages[i] * (onehot - p) + entropy_coef * p * (log_p + entropy)
                    ) / policy_tokens
            masked = [j for j in range(kept) if j >= len(response) or not mask[j]]
            assert torch.equal(grad[masked], torch.zeros_like(grad[masked])), episodes[i].name
            zero_where_masked += len(masked)
            torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-7)
            assert bool(captured.grad[row, kept:].eq(0).all())
    assert seen == set(range(len(episodes)))
    assert zero_where_masked >= observation_tokens
