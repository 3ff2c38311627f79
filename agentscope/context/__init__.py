"""Context management: what an agent sends to its model, kept valid and under a token budget.

- **Token counting** (:class:`TokenCounter`): the model's tokenizer when known (:class:`HFTokenCounter`, a
  Hugging Face tokenizer by object, local path or cached name; :class:`ModelTokenCounter`, a model that counts
  for itself), an estimate otherwise (:class:`EstimateTokenCounter`: characters / 4 of the formatted request,
  tool schemas included).
- **Compaction** (:class:`ContextManager`, configured by :class:`ContextConfig`): when a request would exceed
  the budget, the policies run in order until it fits: :class:`OffloadToolResults` (large results shortened,
  the full text readable with the ``read_offloaded`` tool), :class:`DropOldTurns` and :class:`SummarizeOldTurns`
  (a plain text call to the model). A tool call never loses its result; system messages and the message that
  started the reply stay. Each compaction is a ``compact_context`` span.
- **Tool-call history repair**: :class:`ToolCallLedger` on write (memory holds every call with exactly one result
  and JSON-object arguments, after interruptions, timeouts, errors and malformed model output too) and
  :func:`repair_tool_history` on read (any history made acceptable to every provider).

``ReActAgent(..., context=ContextConfig(max_tokens=...))`` turns compaction on; the repairs are always on.
"""

from agentscope.context._compact import READ_OFFLOADED, CompactionResult, ContextManager
from agentscope.context._config import (
    ContextConfig,
    DropOldTurns,
    OffloadToolResults,
    Policy,
    SummarizeOldTurns,
)
from agentscope.context._repair import (
    INVALID_ARGUMENTS_KEY,
    NO_RESULT_OUTPUT,
    RepairReport,
    ToolCallLedger,
    repair_tool_history,
)
from agentscope.context._tokens import (
    CHARS_PER_TOKEN,
    EstimateTokenCounter,
    HFTokenCounter,
    ModelTokenCounter,
    TokenCounter,
    TokenCountingModel,
    load_local_tokenizer,
    token_counter_for,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "INVALID_ARGUMENTS_KEY",
    "NO_RESULT_OUTPUT",
    "READ_OFFLOADED",
    "CompactionResult",
    "ContextConfig",
    "ContextManager",
    "DropOldTurns",
    "EstimateTokenCounter",
    "HFTokenCounter",
    "ModelTokenCounter",
    "OffloadToolResults",
    "Policy",
    "RepairReport",
    "SummarizeOldTurns",
    "TokenCounter",
    "TokenCountingModel",
    "ToolCallLedger",
    "load_local_tokenizer",
    "repair_tool_history",
    "token_counter_for",
]
