"""Authentication and safety of ``agentscope serve``: API keys (401/403 in OpenAI's format, never logged), bounded
and validated bodies, the Host check, the refusal to listen beyond loopback without keys, ``/healthz``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
import openai
import pytest
from click.testing import Result
from pydantic import SecretStr

from agentscope.agents import ReActAgent
from agentscope.exceptions import UsageError
from agentscope.service import ServeConfig, check_binding
from agentscope.testing import ScriptedModel

Serving = Callable[..., AbstractAsyncContextManager[str]]
"""The ``serving`` fixture (conftest.py): ``serving(factory, **config)`` gives the base URL."""

KEY = "sk-service-key-0123456789"
OTHER_KEY = "sk-second-key-abcdefghij"
WRONG_KEY = "sk-wrong-key-zyxwvutsrq"


def hello_agent() -> ReActAgent:
    return ReActAgent("hello", model=ScriptedModel(lambda request: "hello"))


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def keyed(serving: Serving) -> AsyncIterator[str]:
    async with serving(hello_agent, api_keys=(SecretStr(KEY), SecretStr(OTHER_KEY))) as base_url:
        yield base_url


def assert_openai_error(response: httpx2.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


async def test_api_keys_are_required_and_checked(keyed: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx2.AsyncClient(base_url=keyed) as http:
        missing = await http.post("/chat/completions", json={"model": "m", "messages": ask("hi")})
        not_bearer = await http.get("/models", headers={"Authorization": f"Basic {KEY}"})
        health = await http.get(keyed.removesuffix("/v1") + "/healthz")
    assert_openai_error(missing, 401, "missing_api_key")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_openai_error(not_bearer, 401, "missing_api_key")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "in_flight": 0}

    async with openai.AsyncOpenAI(base_url=keyed, api_key=WRONG_KEY) as wrong:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await wrong.chat.completions.create(model="m", messages=ask("hi"))
    assert denied.value.status_code == 403
    assert isinstance(denied.value.body, dict)
    assert denied.value.body["code"] == "invalid_api_key"
    for key in (KEY, OTHER_KEY):  # every configured key works
        async with openai.AsyncOpenAI(base_url=keyed, api_key=key) as client:
            answer = await client.chat.completions.create(model="m", messages=ask("hi"))
            assert answer.choices[0].message.content == "hello"

    logged = caplog.text
    assert "POST /v1/chat/completions 403" in logged
    assert "POST /v1/chat/completions 200" in logged
    for secret in (KEY, OTHER_KEY, WRONG_KEY):
        assert secret not in logged


def test_the_keys_never_show_in_the_config_s_repr_or_json() -> None:
    config = ServeConfig(api_keys=(SecretStr(KEY),))
    assert KEY not in repr(config)
    assert KEY not in config.model_dump_json()
    assert config.key_bytes() == (KEY.encode(),)


async def test_malformed_bodies_are_openai_style_400s(serving: Serving) -> None:
    async with (
        serving(hello_agent) as base_url,
        httpx2.AsyncClient(base_url=base_url) as http,
        openai.AsyncOpenAI(base_url=base_url, api_key="-", max_retries=0) as client,
    ):
        not_json = await http.post(
            "/chat/completions",
            content=b'{"model": "m", "messages": [',
            headers={"Content-Type": "application/json"},
        )
        not_object = await http.post("/chat/completions", json=["a", "list"])
        no_messages = await http.post("/chat/completions", json={"model": "m"})
        bad_role = await http.post(
            "/chat/completions", json={"model": "m", "messages": [{"role": "wizard", "content": "x"}]}
        )
        unknown_path = await http.get("/nowhere")
        with pytest.raises(openai.BadRequestError, match="last message must be a user message"):
            await client.chat.completions.create(
                model="m", messages=[*ask("hi"), {"role": "assistant", "content": "hello"}]
            )
        bad_options = await http.post(
            "/chat/completions",
            json={"model": "m", "messages": ask("hi"), "stream": True, "stream_options": 5},
        )
        bad_flag = await http.post(
            "/chat/completions",
            json={
                "model": "m",
                "messages": ask("hi"),
                "stream": True,
                "stream_options": {"include_usage": "yes"},
            },
        )
    assert_openai_error(bad_options, 400, "invalid_stream_options")
    assert_openai_error(bad_flag, 400, "invalid_stream_options")
    assert_openai_error(not_json, 400, "invalid_json")
    assert "not valid JSON" in not_json.json()["error"]["message"]
    assert_openai_error(not_object, 400, "invalid_json")
    assert "messages" in assert_openai_error(no_messages, 400, None)["message"]
    assert "wizard" in bad_role.json()["error"]["message"]
    assert bad_role.status_code == 400
    assert unknown_path.status_code == 404
    assert unknown_path.json()["error"]["type"] == "not_found_error"


async def test_a_body_over_the_limit_is_a_413(serving: Serving) -> None:
    body = {"model": "m", "messages": ask("x" * 5000)}
    async with (
        serving(hello_agent, max_body_bytes=2000) as base_url,
        httpx2.AsyncClient(base_url=base_url) as http,
    ):
        declared = await http.post("/chat/completions", json=body)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(5):
                yield b" " * 1000

        chunked = await http.post(
            "/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
        )
        small = await http.post("/chat/completions", json={"model": "m", "messages": ask("hi")})
    assert_openai_error(declared, 413, "request_too_large")
    assert "2000 bytes" in declared.json()["error"]["message"]
    assert_openai_error(chunked, 413, "request_too_large")
    assert small.status_code == 200


async def test_without_keys_only_loopback_host_headers_are_answered(serving: Serving) -> None:
    async with serving(hello_agent) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
        rebound = await http.get("/models", headers={"Host": "attacker.example:8000"})
        local = await http.get("/models", headers={"Host": "localhost:8000"})
    assert_openai_error(rebound, 400, "untrusted_host")
    assert local.status_code == 200


async def test_without_keys_a_web_page_of_another_site_cannot_run_the_agent(serving: Serving) -> None:
    ran: list[str] = []

    def recording_agent() -> ReActAgent:
        ran.append("built")
        return hello_agent()

    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    async with serving(recording_agent) as base_url, httpx2.AsyncClient(base_url=base_url) as http:
        # A form or fetch() a browser sends cross-site without asking the server first: text/plain, its Origin.
        simple = await http.post(
            "/chat/completions",
            content=body,
            headers={
                "Content-Type": "text/plain",
                "Origin": "https://evil.example",
                "Sec-Fetch-Site": "cross-site",
            },
        )
        # The same without the browser's headers is still refused: the body must be declared JSON.
        plain = await http.post("/chat/completions", content=body, headers={"Content-Type": "text/plain"})
        declared_json = await http.post(
            "/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", "Origin": "https://evil.example"},
        )
        sandboxed = await http.post(
            "/chat/completions", content=body, headers={"Content-Type": "application/json", "Origin": "null"}
        )
        fetch_metadata = await http.post(
            "/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        )
        assert ran == []
        local_page = await http.post(
            "/chat/completions",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8", "Origin": "http://127.0.0.1:3000"},
        )
        upper_host = await http.get("/models", headers={"Host": "LOCALHOST.:8000"})
    assert_openai_error(simple, 403, "cross_origin")
    assert_openai_error(plain, 415, "unsupported_media_type")
    assert_openai_error(declared_json, 403, "cross_origin")
    assert_openai_error(sandboxed, 403, "cross_origin")
    assert_openai_error(fetch_metadata, 403, "cross_origin")
    assert local_page.status_code == 200
    assert ran == ["built"]
    assert upper_host.status_code == 200  # host names are case-insensitive


async def test_with_keys_a_keyed_request_is_not_checked_for_its_origin(keyed: str) -> None:
    # A browser cannot add the key to a cross-site request without the server's consent (no CORS headers here),
    # so a request carrying the key may come from a page the key's owner runs.
    headers = {"Authorization": f"Bearer {KEY}", "Origin": "https://console.example"}
    async with httpx2.AsyncClient(base_url=keyed, headers=headers) as http:
        answer = await http.post("/chat/completions", json={"model": "m", "messages": ask("hi")})
    assert answer.status_code == 200


def test_listening_beyond_loopback_needs_api_keys(cli: Callable[..., Result]) -> None:
    with pytest.raises(UsageError, match="--api-key"):
        check_binding(ServeConfig(host="0.0.0.0"))
    check_binding(ServeConfig(host="0.0.0.0", api_keys=(SecretStr(KEY),)))
    check_binding(ServeConfig(host="::1"))
    result = cli("serve", "examples/calculator.py", "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 2
    assert "no API key is set: pass --api-key" in result.output
