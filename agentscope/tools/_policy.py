"""Rule-based approval policies: allow, ask a human about, or deny a tool call by its tool name and arguments.

A :class:`~agentscope.tools.Toolkit` with an ``approval_policy`` consults it for every call whose arguments fit the
tool's schema, before the tool runs: ``deny`` answers the model with an error, ``ask`` pauses the agent exactly as
:func:`~agentscope.tools.require_approval` does, ``allow`` runs the tool (which may still ask on its own).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agentscope.exceptions import ConfigError
from agentscope.tools._approval import require_approval
from agentscope.tools._convert import error_response
from agentscope.types import ToolResponse

__all__ = ["ApprovalPolicy", "ApprovalRule", "PolicyAction", "argument_text", "enforce_policy"]

PolicyAction = Literal["allow", "ask", "deny"]
"""What a policy does with a call: run it, wait for a human's approval first, or refuse it."""

_REGEX_PREFIX = "re:"


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    """A glob as an anchored regex (``search`` then means "the whole text matches"); ``re:...`` as written."""
    if pattern.startswith(_REGEX_PREFIX):
        return re.compile(pattern.removeprefix(_REGEX_PREFIX))
    return re.compile(r"\A" + fnmatch.translate(pattern))


def _valid_pattern(pattern: str) -> str:
    try:
        _compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


Pattern = Annotated[str, AfterValidator(_valid_pattern)]
"""A glob (``*``, ``?``, ``[abc]``; matches the whole text, case-sensitive) or, after ``re:``, a Python regular
expression that matches anywhere in the text (anchor it with ``^...$`` to match the whole)."""


def _matches(pattern: str, text: str) -> bool:
    return _compile(pattern).search(text) is not None


def argument_text(value: object) -> str:
    """The string form of an argument that patterns are matched against: a string as it is, anything else as
    compact JSON (``5``, ``true``, ``null``, ``["a", "b"]``, ``{"k": 1}``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


class ApprovalRule(BaseModel):
    """One rule of an :class:`ApprovalPolicy`: which calls it matches, and what to do with them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: Pattern
    """Tool name pattern: a glob (``"delete_*"``, ``"*"``) or ``"re:..."``."""
    arguments: dict[str, Pattern] = Field(default_factory=dict[str, Pattern])
    """Argument name -> pattern on the argument's string form (see :func:`argument_text`). All must match; an
    argument the call leaves out matches nothing (its default value is not considered)."""
    action: PolicyAction
    """``allow``, ``ask`` or ``deny``."""
    reason: str | None = None
    """Shown to the human with an ``ask`` and to the model with a ``deny`` (``denied by policy: <reason>``)."""

    def matches(self, tool: str, arguments: Mapping[str, object]) -> bool:
        """Whether a call of ``tool`` with ``arguments`` (the model's JSON object) falls under this rule."""
        if not _matches(self.tool, tool):
            return False
        for name, pattern in self.arguments.items():
            if name not in arguments or not _matches(pattern, argument_text(arguments[name])):
                return False
        return True


class ApprovalPolicy(BaseModel):
    """Ordered rules deciding, per tool and argument pattern, whether a tool call runs, waits for a human or is
    refused. The first rule that matches decides; when none does, :attr:`default_action` does.

    Load it from Python (``ApprovalPolicy(rules=[...])``, ``ApprovalPolicy.model_validate(data)``) or from a YAML or
    JSON file (:meth:`from_file`); a bad field (an unknown action, an invalid regular expression...) fails there,
    naming it. Attach it with ``Toolkit(approval_policy=...)`` or ``toolkit.approval_policy = ...``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[ApprovalRule, ...] = ()
    """The rules, in order: the first that matches a call decides."""
    default_action: PolicyAction = "allow"
    """What happens to a call no rule matches (``allow``: as without a policy)."""

    def match(self, tool: str, arguments: Mapping[str, object]) -> tuple[int, ApprovalRule] | None:
        """The first rule matching a call of ``tool`` with ``arguments`` (the model's JSON object), with its index
        in :attr:`rules`; ``None`` when no rule matches."""
        for index, rule in enumerate(self.rules):
            if rule.matches(tool, arguments):
                return index, rule
        return None

    def decide(self, tool: str, arguments: Mapping[str, object]) -> tuple[PolicyAction, str]:
        """What to do with a call of ``tool`` with ``arguments``, and why (the rule's reason, or which rule)."""
        found = self.match(tool, arguments)
        if found is None:
            return self.default_action, "no rule matched (default action)"
        index, rule = found
        return rule.action, rule.reason or f"rule {index} for {rule.tool!r}"

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "approval policy") -> ApprovalPolicy:
        """Load a policy from YAML (or JSON) text.

        Raises:
            ConfigError: the text is not YAML, not a mapping, or a field is unknown or invalid; the message names
                ``source`` and each bad field (e.g. ``rules.1.action: Input should be 'allow', 'ask' or 'deny'``).
        """
        import yaml  # only policies loaded from text need it (import agentscope stays light)

        try:
            data: object = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            raise ConfigError(f"{source} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source} must be a mapping with 'rules' and 'default_action', not {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid {source}: {_describe(exc)}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ApprovalPolicy:
        """Load a policy from a YAML or JSON file. Reads the file: in async code, load it before serving (or in a
        worker thread).

        Raises:
            ConfigError: the file cannot be read, or its content is invalid (see :meth:`from_yaml`).
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read approval policy {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"approval policy {path} is not UTF-8 text ({exc.reason})") from None
        return cls.from_yaml(text, source=f"approval policy {path}")


def _describe(exc: ValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = (
            "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        )
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def enforce_policy(policy: ApprovalPolicy, tool: str, arguments: Mapping[str, object]) -> ToolResponse | None:
    """Apply ``policy`` to a call: the error the model sees when denied; ``None`` to run it.

    Raises:
        ApprovalRequired: the policy asks, and the call is not running inside
            :func:`~agentscope.tools.approved_calls` (a call a human approved is not asked again; a ``deny`` still
            refuses it, e.g. after the human edited its arguments into a denied form).
    """
    action, reason = policy.decide(tool, arguments)
    if action == "deny":
        return error_response(f"denied by policy: {reason}")
    if action == "ask":
        require_approval(reason)
    return None
