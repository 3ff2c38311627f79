"""Tracing's on/off switch, for instrumented code to check before it does anything else.

Read it as a module attribute, never bind the value (``from ... import ON`` would keep the value it had at import
time)::

    from agentscope import tracing
    from agentscope.tracing import switch

    if switch.ON:  # an ``execute_tool`` span around the call
        return await tracing.tool_execute(call, self._execute)
    return await self._execute(call)

With tracing off that check is the whole cost: one module-attribute read. Only the installed tracer flips it
(``agentscope.init`` / ``tracing.shutdown``); use :func:`agentscope.tracing.enabled` where the cost does not matter.
"""

__all__ = ["ON"]

ON: bool = False
"""True while a tracer is installed. Set by the tracer only."""
