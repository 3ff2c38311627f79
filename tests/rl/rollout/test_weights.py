"""Weights published once and loaded by rollout servers over HTTP (``POST /weights``), on real uvicorn servers on
127.0.0.1: by path and by upload, what they change, and every bad update refused with the weights left intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx2
import pytest

from agentscope.exceptions import ModelError, UsageError
from agentscope.rl.rollout import (
    RemoteRolloutServer,
    RolloutHTTPServer,
    RolloutService,
    TorchEngine,
    WeightPublisher,
    load_weights,
)

pytestmark = pytest.mark.usefixtures("allow_model_requests")


@pytest.fixture
async def servers(memorized_dir: Path, tokenizer: Any) -> AsyncIterator[list[RolloutHTTPServer]]:
    """Two rollout servers over the memorised policy, each its own engine."""
    async with AsyncExitStack() as stack:
        out: list[RolloutHTTPServer] = []
        for _ in range(2):
            service = RolloutService(TorchEngine(memorized_dir, max_batch=4, max_seq_len=1024), tokenizer)
            await stack.enter_async_context(service)
            out.append(await stack.enter_async_context(RolloutHTTPServer(service)))
        yield out


@pytest.fixture(scope="module")
def random_weights(policy_dir: Path) -> dict[str, Any]:
    """The randomly initialised policy's weights: the same shapes as the memorised one's, other values."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


async def greedy(server: RolloutHTTPServer, helpers: Any) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/chat/completions",
            json={
                "model": "policy",
                "messages": [
                    {"role": "system", "content": helpers.SYSTEM},
                    {"role": "user", "content": helpers.QUESTION},
                ],
                "temperature": 0,
                "max_tokens": 16,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    return {
        "version": body["policy_version"],
        "tokens": body["choices"][0]["token_ids"],
        "logprobs": [item["logprob"] for item in body["choices"][0]["logprobs"]["content"]],
    }


async def served_version(remote: RemoteRolloutServer) -> int:
    """The version the server itself reports (GET /weights), not the client's record."""
    async with httpx2.AsyncClient(base_url=remote.base_url) as client:
        return int((await client.get("/weights")).json()["version"])


async def post_weights(server: RolloutHTTPServer, **kwargs: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(base_url=server.base_url.removesuffix("/v1")) as client:
        return await client.post("/weights", **kwargs)


async def test_a_version_published_once_reaches_every_server_and_changes_what_it_samples(
    servers: list[RolloutHTTPServer], random_weights: dict[str, Any], helpers: Any, tmp_path: Path
) -> None:
    before = await greedy(servers[0], helpers)
    assert before["version"] == 0
    publisher = WeightPublisher(tmp_path / "weights")
    remotes = [RemoteRolloutServer(s.base_url, publisher) for s in servers]
    try:

        def written() -> tuple[int, list[int]]:
            return publisher.path(1).stat().st_mtime_ns, publisher.versions()

        await remotes[0].update_weights(random_weights, 1)
        first = await anyio.to_thread.run_sync(written)
        await remotes[1].update_weights(random_weights, 1)
        assert await anyio.to_thread.run_sync(written) == first  # published once, read by both
        assert first[1] == [1]
        assert [await served_version(r) for r in remotes] == [1, 1]
        after = [await greedy(s, helpers) for s in servers]
        assert [a["version"] for a in after] == [1, 1]
        assert after[0]["tokens"] == after[1]["tokens"]  # the same weights on both
        assert after[0]["tokens"] != before["tokens"] or after[0]["logprobs"] != pytest.approx(
            before["logprobs"]
        )

        # a late update for a version already passed is a no-op, never a rollback
        await remotes[0].update_weights(random_weights, 1)
        assert await served_version(remotes[0]) == 1
    finally:
        for remote in remotes:
            await remote.aclose()


async def test_weights_can_be_uploaded_when_the_server_has_no_shared_disk(
    servers: list[RolloutHTTPServer], random_weights: dict[str, Any], helpers: Any, tmp_path: Path
) -> None:
    async with RemoteRolloutServer(servers[0].base_url, WeightPublisher(tmp_path), upload=True) as remote:
        await remote.update_weights(random_weights, 3)
        assert await served_version(remote) == 3
    assert (await greedy(servers[0], helpers))["version"] == 3


async def test_a_partial_update_replaces_only_the_tensors_sent(
    servers: list[RolloutHTTPServer], random_weights: dict[str, Any], helpers: Any, tmp_path: Path
) -> None:
    before = await greedy(servers[0], helpers)
    norm = {"model.norm.weight": random_weights["model.norm.weight"] * 3.0}
    async with RemoteRolloutServer(servers[0].base_url, WeightPublisher(tmp_path)) as remote:
        await remote.update_weights(norm, 1)
    after = await greedy(servers[0], helpers)
    assert after["version"] == 1
    assert after["logprobs"] != pytest.approx(before["logprobs"])


async def test_bad_updates_are_refused_by_name_and_leave_the_weights_as_they_were(
    servers: list[RolloutHTTPServer], random_weights: dict[str, Any], helpers: Any, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    server = servers[0]
    before = await greedy(server, helpers)
    not_safetensors = tmp_path / "notes.txt"
    unknown = tmp_path / "unknown.safetensors"
    wrong_shape = tmp_path / "wrong.safetensors"
    empty = tmp_path / "empty.safetensors"

    def write_files() -> None:
        not_safetensors.write_text("hello")
        save_file({"model.layers.99.mlp.up_proj.weight": random_weights["model.norm.weight"]}, str(unknown))
        norm = random_weights["model.norm.weight"]
        save_file({"model.norm.weight": norm.new_ones(norm.shape[0] + 1)}, str(wrong_shape))
        save_file({}, str(empty))

    await anyio.to_thread.run_sync(write_files)

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"version": 1}}, 400, "path"),
        ({"json": {"version": "one", "path": str(unknown)}}, 400, "version"),
        ({"json": {"version": True, "path": str(unknown)}}, 400, "version"),
        ({"json": {"version": 0, "path": str(unknown)}}, 409, "not newer"),
        ({"json": {"version": 1, "path": str(tmp_path / "missing.safetensors")}}, 400, "no weights file"),
        ({"json": {"version": 1, "path": str(not_safetensors)}}, 400, "not a safetensors file"),
        ({"json": {"version": 1, "path": str(unknown)}}, 400, "unknown parameter names"),
        ({"json": {"version": 1, "path": str(wrong_shape)}}, 400, "model.norm.weight: shape"),
        ({"json": {"version": 1, "path": str(empty)}}, 400, "no tensors"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not JSON"),
        (
            {
                "content": b"garbage",
                "headers": {"content-type": "application/octet-stream"},
                "params": {"version": 1},
            },
            400,
            "not a safetensors file",
        ),
        ({"content": b"x", "headers": {"content-type": "application/octet-stream"}}, 400, "version"),
    ]
    for kwargs, status, needle in cases:
        response = await post_weights(server, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        message = response.json()["error"]["message"]
        assert needle in message, (kwargs, message)
    after = await greedy(server, helpers)
    assert after == before  # the same version, tokens and log-probs: nothing was half-loaded


async def test_the_publisher_side_reports_a_refusal_with_the_servers_message(
    servers: list[RolloutHTTPServer], random_weights: dict[str, Any], tmp_path: Path
) -> None:
    bad = {"model.norm.weight": random_weights["model.norm.weight"][:-1].clone()}
    async with RemoteRolloutServer(servers[0].base_url, WeightPublisher(tmp_path)) as remote:
        with pytest.raises(
            ModelError, match=r"answered 400: weights not loaded: parameter model.norm.weight"
        ):
            await remote.update_weights(bad, 1)
        assert await served_version(remote) == 0
    nowhere = RemoteRolloutServer("http://127.0.0.1:9", WeightPublisher(tmp_path))
    try:
        with pytest.raises(ModelError, match="unreachable"):
            await nowhere.update_weights(random_weights, 2)
        with pytest.raises(ModelError, match="unreachable"):
            await nowhere.__aenter__()  # entering reads the server's version
    finally:
        await nowhere.aclose()


def test_the_publisher_keeps_the_newest_versions_and_writes_whole_files(
    random_weights: dict[str, Any], tmp_path: Path
) -> None:
    import torch

    publisher = WeightPublisher(tmp_path / "w", keep=2)
    for version in (1, 2, 3):
        publisher.publish(random_weights, version)
    assert publisher.versions() == [2, 3]
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "policy-v00000002.safetensors",
        "policy-v00000003.safetensors",
    ]
    loaded = load_weights(publisher.path(3))
    assert loaded.keys() == random_weights.keys()
    assert all(torch.equal(loaded[k], random_weights[k]) for k in loaded)
    with pytest.raises(ValueError, match="keep"):
        WeightPublisher(tmp_path, keep=0)


async def test_with_a_token_every_request_must_carry_it(
    memorized_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    service = RolloutService(TorchEngine(memorized_dir, max_batch=2, max_seq_len=1024), tokenizer)
    async with service, RolloutHTTPServer(service, token="s3cret-token-for-tests") as server:
        root = server.base_url.removesuffix("/v1")
        async with httpx2.AsyncClient(base_url=root) as client:
            for method, url in (
                ("GET", "/weights"),
                ("POST", "/weights"),
                ("GET", "/stats"),
                ("POST", "/v1/chat/completions"),
            ):
                answer = await client.request(method, url)
                assert answer.status_code == 401, (method, url)
                assert answer.json()["error"]["type"] == "authentication_error"
            wrong = await client.get("/weights", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
        async with RemoteRolloutServer(
            root, WeightPublisher(tmp_path), token="s3cret-token-for-tests"
        ) as remote:
            assert remote.version == 0  # entering read it, with the token
    with pytest.raises(UsageError, match="give it a token"):
        RolloutHTTPServer(service, host="0.0.0.0")
