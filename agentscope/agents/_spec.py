"""The agent spec: how every command names the agent it runs, serves, trains or evaluates.

One convention for ``agentscope run``, ``agentscope serve``, ``agentscope rl train``/``rl eval`` (the config's
``agent.factory``) and evaluation::

    path/to/file.py            the file's ``build_agent``
    path/to/file.py:NAME       the file's ``NAME``
    package.module:NAME        ``NAME`` in an importable module

``NAME`` is an *agent factory*: a function (or class; sync or async) that returns a fresh agent. Each command calls
it with the keyword arguments the factory declares, out of those it has: ``model=`` (``run --model``, the policy
being trained), ``toolkit=`` (the environment's tools while training), ``memory=`` and so on; parameters it has no
value for keep their defaults, so one factory serves every command::

    def build_agent(model: ChatModel | None = None, toolkit: Toolkit | None = None) -> ReActAgent:
        return ReActAgent(name="calculator", model=model or my_default_model(), toolkit=toolkit or my_tools())

A factory, not an agent instance: a server builds one agent per session and a trainer one per episode, each with
its own memory.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias, cast

from agentscope._loading import LoadError, load_object
from agentscope.agents._base import AgentBase
from agentscope.exceptions import UsageError

__all__ = ["DEFAULT_FACTORY_NAME", "AgentFactory", "build_agent", "load_agent_factory", "takes_argument"]

AgentFactory: TypeAlias = Callable[..., AgentBase | Awaitable[AgentBase]]
"""Builds a fresh agent; called through :func:`build_agent` with the keyword arguments it declares (sync or async).

Training calls it with ``model=`` (the policy, a client of the rollout service) and ``toolkit=`` (the environment's
tools); the agent is the same class users deploy and never knows it is being trained.
"""

DEFAULT_FACTORY_NAME = "build_agent"
"""The factory a spec naming only a file (``path/to/file.py``) means."""

_EXAMPLE = f"`def {DEFAULT_FACTORY_NAME}(model=None): return ReActAgent(...)`"


def load_agent_factory(spec: str) -> AgentFactory:
    """The agent factory ``spec`` names: ``path/to/file.py[:NAME]`` (default ``build_agent``) or ``module:NAME``.

    A file is executed (once per process) and a module imported: call this from a worker thread in async code.

    Raises:
        UsageError: the spec is malformed; its file, module or attribute is not there; or it names something that
            is not a factory (an agent instance, a constant). The message names the spec and how to fix it.
            Errors raised by the loaded code itself pass through.
    """
    try:
        target = load_object(spec, file_default=lambda _module: DEFAULT_FACTORY_NAME)
    except LoadError as exc:
        raise UsageError(f"agent spec {spec!r}: {exc}{_hint(spec, exc)}") from None
    if isinstance(target, AgentBase):
        raise UsageError(
            f"agent spec {spec!r} names an agent instance ({type(target).__name__}), not a factory: every run, "
            f"session and episode needs a fresh agent, so build it in a function such as {_EXAMPLE} and name "
            "that function"
        )
    if not callable(target):
        raise UsageError(
            f"agent spec {spec!r} names an object of type {type(target).__name__}, not an agent factory (a "
            f"function returning a fresh agent, such as {_EXAMPLE})"
        )
    return cast(AgentFactory, target)


def _hint(spec: str, exc: LoadError) -> str:
    """How to fix a spec whose file lacks the default factory."""
    target, _, attribute = spec.partition(":")
    if not attribute and "has no attribute" in str(exc):
        return f" (a file named without :NAME means its {DEFAULT_FACTORY_NAME}(); define it, or write {target}:NAME)"
    return ""


async def build_agent(factory: AgentFactory, /, **available: object) -> AgentBase:
    """Call ``factory`` with those of ``available`` it declares (all of them if it takes ``**kwargs``).

    Parameters the factory declares but ``available`` lacks keep their defaults; an async factory is awaited.

    Args:
        factory: The agent factory (see :func:`load_agent_factory`).
        **available: What the caller can give, e.g. ``model=``, ``toolkit=``.

    Raises:
        UsageError: the factory requires a parameter that is not available (the message names it and what is), or
            it returned something that is not an agent.
    """
    args, kwargs = _arguments(factory, available)
    agent = factory(*args, **kwargs)
    if inspect.isawaitable(agent):
        agent = await agent
    if not isinstance(agent, AgentBase):  # pyright: ignore[reportUnnecessaryIsInstance]  (user code: anything)
        raise UsageError(
            f"agent factory {_describe(factory)} returned {type(agent).__name__}, not an agent (AgentBase)"
        )
    return agent


def takes_argument(factory: AgentFactory, name: str) -> bool:
    """Whether :func:`build_agent` would hand ``factory`` an available ``name`` (it declares that parameter or takes
    ``**kwargs``); True when its signature cannot be read (it is then given everything)."""
    parameters = _parameters(factory)
    if parameters is None:
        return True
    return any(
        (p.name == name and p.kind is not p.VAR_POSITIONAL) or p.kind is p.VAR_KEYWORD for p in parameters
    )


def _parameters(factory: AgentFactory) -> tuple[inspect.Parameter, ...] | None:
    """The factory's parameters, or None when it has no signature to read. Read once per factory: a server builds
    an agent per request, and ``inspect.signature`` is a few percent of a request."""
    try:
        return _cached_parameters(factory)
    except TypeError:  # an unhashable callable: read it every time
        return _read_parameters(factory)


@functools.lru_cache(maxsize=256)
def _cached_parameters(factory: AgentFactory) -> tuple[inspect.Parameter, ...] | None:
    return _read_parameters(factory)


def _read_parameters(factory: AgentFactory) -> tuple[inspect.Parameter, ...] | None:
    try:
        return tuple(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None


def _arguments(factory: AgentFactory, available: dict[str, object]) -> tuple[list[object], dict[str, object]]:
    """The positional-only and keyword arguments of ``factory`` out of ``available``."""
    parameters = _parameters(factory)
    if parameters is None:  # no signature to read (some builtins): give it everything
        return [], dict(available)
    args: list[object] = []
    kwargs: dict[str, object] = {}
    missing: list[str] = []
    positional_open = True  # a positional-only parameter can be given only if all before it are
    for p in parameters:
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            positional_only = {q.name for q in parameters if q.kind is inspect.Parameter.POSITIONAL_ONLY}
            kwargs.update(
                {k: v for k, v in available.items() if k not in positional_only and k not in kwargs}
            )
        elif p.name in available and (p.kind is not inspect.Parameter.POSITIONAL_ONLY or positional_open):
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(available[p.name])
            else:
                kwargs[p.name] = available[p.name]
        else:
            positional_open = False
            if p.default is inspect.Parameter.empty:
                missing.append(p.name)
    if missing:
        names = ", ".join(repr(name) for name in missing)
        offered = ", ".join(sorted(available)) or "nothing"
        verb, it = ("is", "it") if len(missing) == 1 else ("are", "them")
        raise UsageError(
            f"agent factory {_describe(factory)} requires {names}, which {verb} not available here (available: "
            f"{offered}); give {it} a default, or pass {it} where the command takes factory arguments"
        )
    return args, kwargs


def _describe(factory: AgentFactory) -> str:
    """The factory as a user knows it: ``name(param, param=...)``."""
    inner: object = factory
    while isinstance(inner, functools.partial):
        inner = inner.func  # pyright: ignore[reportUnknownMemberType]
    name = str(getattr(inner, "__qualname__", None) or type(inner).__name__).rpartition("<locals>.")[2]
    parameters = _parameters(factory)
    if parameters is None:
        return name
    shown = [
        f"{'*' if p.kind is p.VAR_POSITIONAL else '**' if p.kind is p.VAR_KEYWORD else ''}{p.name}"
        f"{'' if p.default is p.empty else '=...'}"
        for p in parameters
    ]
    return f"{name}({', '.join(shown)})"
