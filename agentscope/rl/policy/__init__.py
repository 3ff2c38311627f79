"""The policy: a tiny Qwen2-architecture model built offline, its chat format, and a supervised warm start.

- :class:`ChatFormat` renders conversations as ChatML (Qwen2.5 tool-call style) and parses completions back into
  content blocks (malformed tool calls become :class:`~agentscope.message.ToolUseBlock` with ``raw_input``).
- :class:`ChatTokenizer` turns messages into token ids the one way both the rollout service and the warm start use.
- :func:`build_tiny_policy` writes a tokenizer trained offline and a randomly initialised ``Qwen2ForCausalLM`` that
  ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained`` load.
- :func:`warm_start` fine-tunes a policy on :class:`Demonstration` transcripts.

Importing this package loads neither torch nor transformers; the functions that need them import them when called.
"""

from agentscope.rl.policy._chat_format import CHAT_TEMPLATE, ChatFormat, ToolsStyle, chat_template
from agentscope.rl.policy._tiny import TinyPolicyConfig, build_tiny_policy, tiny_corpus
from agentscope.rl.policy._tokens import ChatTokenizer, TokenizerLike, load_tokenizer
from agentscope.rl.policy._warm_start import Demonstration, warm_start

__all__ = [
    "CHAT_TEMPLATE",
    "ChatFormat",
    "ChatTokenizer",
    "Demonstration",
    "TinyPolicyConfig",
    "TokenizerLike",
    "ToolsStyle",
    "build_tiny_policy",
    "chat_template",
    "load_tokenizer",
    "tiny_corpus",
    "warm_start",
]
