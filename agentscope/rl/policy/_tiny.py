"""A tiny Qwen2-architecture policy built offline: a BPE tokenizer trained on generated text, random weights.

Nothing is downloaded. The tokenizer is trained with ``tokenizers`` on text generated here (the chat format, tool
signatures and tool calls, digits and arithmetic, the words of the built-in tasks, plus anything passed in
:attr:`TinyPolicyConfig.extra_corpus`), wrapped as a ``transformers`` fast tokenizer with the ChatML chat template,
and saved next to a randomly initialised ``Qwen2ForCausalLM``. The directory loads with
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``. The same config and seed build the
same files.
"""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ToolSchema
from agentscope.rl.policy._chat_format import (
    END_OF_TEXT,
    IM_END,
    IM_START,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    TOOL_RESPONSE_CLOSE,
    TOOL_RESPONSE_OPEN,
    ChatFormat,
    ToolsStyle,
    chat_template,
)

__all__ = ["TinyPolicyConfig", "build_tiny_policy", "tiny_corpus"]

SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
"""Special tokens, ids 0, 1, 2 (like Qwen2: ``<|endoftext|>`` pads, ``<|im_end|>`` ends a turn)."""
ADDED_TOKENS = (TOOL_CALL_OPEN, TOOL_CALL_CLOSE, TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE)
"""Ordinary (non-special) added tokens, one id each, as in Qwen2.5: kept when decoding skips special tokens."""

# Qwen2's pre-tokenizer, but with digits in runs of one or two (as Llama 3 groups them by three): words with their
# leading space, punctuation runs, newlines. A two-digit number is then one token the policy copies whole: a tiny
# model learns a one-token copy from a few thousand demonstrations, a two-token copy (an induction) from far more.
_SPLIT_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


class TinyPolicyConfig(BaseModel):
    """Shape of the tiny policy and of its tokenizer. The defaults make a 3.3 M-parameter model (hidden 256,
    4 layers, 4 heads, 2 key/value heads)."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = 2048
    """Most tokens the tokenizer may learn (special and added tokens included). The embedding is sized to the
    tokenizer actually learned, rounded up to a multiple of 64 (the generated corpus is small, so fewer tokens
    than this are usually learned; no embedding row is left that no text can produce, which a random policy
    would otherwise sample often)."""
    hidden_size: int = 256
    """Width of the residual stream."""
    intermediate_size: int = 768
    """Width of the SwiGLU MLP."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention (query) heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    max_position_embeddings: int = 2048
    """Longest sequence the model is meant for."""
    rope_theta: float = 10000.0
    """RoPE base."""
    tie_word_embeddings: bool = True
    """Share the input embedding with the output projection (as Qwen2.5's small models do)."""
    seed: int = 0
    """Seed of the weight initialisation and of the generated tokenizer corpus."""
    corpus_conversations: int = 1500
    """Generated conversations the tokenizer is trained on."""
    extra_corpus: list[str] = Field(default_factory=list[str])
    """More text for the tokenizer (task prompts, tool descriptions...), so that it gets short encodings."""
    tools_style: ToolsStyle = "compact"
    """How the chat format lists tools in the system block: ``compact`` (one line per tool) or ``qwen`` (Qwen2.5's
    JSON schemas: several times longer). Saved with the tokenizer, so every component renders the same."""


def build_tiny_policy(config: TinyPolicyConfig, out_dir: str | Path) -> Path:
    """Build the tokenizer and a randomly initialised ``Qwen2ForCausalLM`` and save both into ``out_dir``.

    Synchronous and CPU-bound (a few seconds): call it from a worker thread in async code. Returns ``out_dir``.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(config)
    ids = {t: _token_id(tokenizer, t) for t in SPECIAL_TOKENS}
    rope: dict[str, Any] = (  # transformers 5 takes rope_parameters, 4.x rope_theta
        {"rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta}}
        if "rope_parameters"
        in inspect.signature(cast("Callable[..., None]", Qwen2Config.__init__)).parameters
        else {"rope_theta": config.rope_theta}
    )
    model_config = Qwen2Config(
        vocab_size=min(config.vocab_size, -(-len(tokenizer) // 64) * 64),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        **rope,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=ids[IM_END],
        pad_token_id=ids[END_OF_TEXT],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Qwen2ForCausalLM(model_config)
    model.generation_config.eos_token_id = [ids[IM_END], ids[END_OF_TEXT]]
    model.generation_config.pad_token_id = ids[END_OF_TEXT]
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(token_id, int):
        raise ValueError(f"the tokenizer has no single id for {token!r}")
    return token_id


def _train_tokenizer(config: TinyPolicyConfig):
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()  # pyright: ignore[reportAttributeAccessIssue]
    bpe.pre_tokenizer = pre_tokenizers.Sequence(  # pyright: ignore[reportAttributeAccessIssue]
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()  # pyright: ignore[reportAttributeAccessIssue]
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size - len(ADDED_TOKENS),
        min_frequency=2,
        show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(tiny_corpus(config), trainer=trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    if bpe.get_vocab_size() > config.vocab_size:
        raise ValueError(
            f"tokenizer has {bpe.get_vocab_size()} tokens, more than vocab_size={config.vocab_size}"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START],
        chat_template=chat_template(config.tools_style),
        agentscope_tools_style=config.tools_style,
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


# ---------------------------------------------------------------------- the generated corpus

_SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a helpful assistant. Use the tools when they help, then answer briefly.",
    "You solve arithmetic problems. Use the calculator tool to compute, then reply with the number only.",
    "You are an agent. Think step by step, call tools when needed, and give the final answer.",
    "Answer the question. When a calculation is needed, call the calculator.",
)
_OPS = ("+", "-", "*", "/")
_QUESTIONS = (
    "What is {e}?",
    "Compute {e}.",
    "Calculate {e} and answer with the number.",
    "What is the value of {e}? Use the calculator.",
    "Please work out {e}.",
    "How much is {e}?",
    "Solve: {e}",
    "{e} = ?",
)
_ANSWERS = ("{r}", "The answer is {r}.", "{e} = {r}", "The result is {r}.", "It is {r}.")
_THOUGHTS = ("", "", "I will use the calculator.", "Let me compute this.", "I need to calculate {e}.")
_PLAIN = (
    ("Hello!", "Hello! How can I help you today?"),
    ("Who are you?", "I am a helpful assistant."),
    ("Thanks.", "You are welcome."),
    ("Say yes or no.", "yes"),
    ("What can you do?", "I can answer questions and use tools such as a calculator."),
)
_EXTRA_TOOLS = (
    ToolSchema(
        name="search",
        description="Search the web and return the top results.",
        parameters={
            "additionalProperties": False,
            "properties": {"query": {"description": "What to search for.", "type": "string"}},
            "required": ["query"],
            "type": "object",
        },
    ),
    ToolSchema(
        name="get_weather",
        description="Get the current weather for a city.",
        parameters={
            "additionalProperties": False,
            "properties": {"city": {"description": "The city name.", "type": "string"}},
            "required": ["city"],
            "type": "object",
        },
    ),
    ToolSchema(
        name="add",
        description="Add two integers.",
        parameters={
            "additionalProperties": False,
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "type": "object",
        },
    ),
)
CALCULATOR_TOOL = ToolSchema(
    name="calculator",
    description="Evaluate an arithmetic expression and return the result.",
    parameters={
        "additionalProperties": False,
        "properties": {
            "expression": {"description": 'The expression to evaluate, e.g. "3 * (4 + 5)".', "type": "string"}
        },
        "required": ["expression"],
        "type": "object",
    },
)


def _expression(rng: random.Random) -> tuple[str, str]:
    terms = rng.choice((2, 2, 2, 3))
    numbers = [rng.randint(0, rng.choice((9, 20, 99, 999))) for _ in range(terms)]
    ops = [rng.choice(_OPS) for _ in range(terms - 1)]
    expr = str(numbers[0])
    for op, n in zip(ops, numbers[1:], strict=True):
        expr += f" {op} {n}"
    if terms == 3 and rng.random() < 0.3:
        expr = f"({expr.rsplit(' ', 2)[0]}) {ops[-1]} {numbers[-1]}"
    try:
        value = eval(expr, {"__builtins__": {}})
    except ZeroDivisionError:
        return expr, "Error: division by zero"
    result = str(round(value, 4)) if isinstance(value, float) and not value.is_integer() else str(int(value))
    return expr, result


def _conversation(rng: random.Random) -> tuple[list[Msg], list[ToolSchema]]:
    tools = [CALCULATOR_TOOL] if rng.random() < 0.85 else []
    tools += [t for t in _EXTRA_TOOLS if rng.random() < 0.25]
    rng.shuffle(tools)
    messages = [Msg(role="system", content=rng.choice(_SYSTEM_PROMPTS))] if rng.random() < 0.8 else []
    if rng.random() < 0.15:
        question, answer = rng.choice(_PLAIN)
        return [*messages, Msg(role="user", content=question), Msg(role="assistant", content=answer)], tools
    expr, result = _expression(rng)
    messages.append(Msg(role="user", content=rng.choice(_QUESTIONS).format(e=expr)))
    call = ToolUseBlock(id="c", name="calculator", input={"expression": expr})
    thought = rng.choice(_THOUGHTS).format(e=expr)
    first: list[TextBlock | ToolUseBlock] = [TextBlock(text=thought)] if thought else []
    messages.append(Msg(role="assistant", content=[*first, call]))
    error = result.startswith("Error")
    messages.append(
        Msg(role="tool", content=[ToolResultBlock(id="c", name="calculator", output=result, is_error=error)])
    )
    messages.append(Msg(role="assistant", content=rng.choice(_ANSWERS).format(e=expr, r=result)))
    return messages, tools


def tiny_corpus(config: TinyPolicyConfig) -> Iterator[str]:
    """The text the tokenizer is trained on (deterministic given ``config.seed``)."""
    rng = random.Random(config.seed)
    chat_format = ChatFormat(tools_style=config.tools_style)
    for _ in range(config.corpus_conversations):
        messages, tools = _conversation(rng)
        yield chat_format.render(messages, tools, add_generation_prompt=False)
    for _ in range(2):  # every number below 100 at least twice, so that each becomes one token
        yield " ".join(str(i) for i in range(1000))
    yield json.dumps({"name": "calculator", "arguments": {"expression": "1 + 2"}})
    for _ in range(3):  # extra text counts more than one generated conversation
        yield from config.extra_corpus
