"""The background uvicorn servers (test servers, the rollout HTTP server) check no credentials, so they refuse a
host other machines can reach unless told."""

from __future__ import annotations

import pytest

from agentscope._uvicorn import BackgroundServer


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("never served")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_a_host_other_machines_reach_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match=rf"would listen on {host}.*allow_remote=True"):
        BackgroundServer(_app, host=host, name="the test server")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_permission(host: str) -> None:
    assert BackgroundServer(_app, host=host).host == host


def test_allow_remote_lets_it_bind_anywhere() -> None:
    assert BackgroundServer(_app, host="0.0.0.0", allow_remote=True).host == "0.0.0.0"
