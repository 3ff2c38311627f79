"""Host names and addresses: what the servers we bind (the studio, MCP over HTTP) treat as this machine only."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and the loopback range: ``127.0.0.0/8`` and ``::1`` (bracketed or not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
