"""RemoteRolloutServer: a rollout server in another process, kept in sync through its ``POST /weights`` route."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx2

from agentscope.exceptions import ModelError
from agentscope.rl.rollout._weights import WeightPublisher

if TYPE_CHECKING:
    import torch

__all__ = ["RemoteRolloutServer"]

logger = logging.getLogger(__name__)


class RemoteRolloutServer:
    """The scheduler's weight receiver for a rollout app served elsewhere (:class:`RolloutHTTPServer`, or
    ``create_rollout_app`` under any ASGI server).

    :meth:`update_weights` publishes the version once through ``publisher`` (every server of a run shares one)
    and asks the server to load it: by path when the server reads the same disk (the default), or by uploading
    the file (``upload=True``). The call returns once the new weights serve there.

    Args:
        base_url: The app's address (``http://host:port``; a trailing ``/v1`` is accepted).
        publisher: Where versions are written.
        upload: Send the file's bytes instead of its path.
        timeout_s: Longest an update may take.
    """

    def __init__(
        self, base_url: str, publisher: WeightPublisher, *, upload: bool = False, timeout_s: float = 300.0
    ) -> None:
        root = base_url.rstrip("/")
        self.base_url = root.removesuffix("/v1")
        """The app's root address."""
        self.publisher = publisher
        self.upload = upload
        self._client = httpx2.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    def __repr__(self) -> str:
        return f"RemoteRolloutServer({self.base_url!r})"

    async def __aenter__(self) -> RemoteRolloutServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def version(self) -> int:
        """The version the server serves now."""
        response = await self._request("GET", "/weights")
        return int(response.json()["version"])

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Serve ``state_dict`` as ``version`` there. A server already serving this version or a newer one keeps
        it (a late update never rolls it back).

        Raises:
            ModelError: the server could not be reached or refused the weights (its message included).
        """
        path = await anyio.to_thread.run_sync(self.publisher.publish, state_dict, version)
        if self.upload:
            content = await anyio.to_thread.run_sync(Path(path).read_bytes)
            response = await self._request(
                "POST",
                "/weights",
                params={"version": version},
                content=content,
                headers={"content-type": "application/octet-stream"},
                allow=(409,),
            )
        else:
            response = await self._request(
                "POST", "/weights", json={"version": version, "path": str(path)}, allow=(409,)
            )
        if response.status_code == 409:
            logger.debug("%s already serves version %d or newer: %s", self.base_url, version, response.text)

    async def _request(
        self, method: str, url: str, *, allow: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx2.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx2.HTTPError as exc:
            raise ModelError(f"rollout server {self.base_url} unreachable: {exc!r}") from exc
        if response.status_code >= 400 and response.status_code not in allow:
            raise ModelError(
                f"rollout server {self.base_url} answered {response.status_code}: {_message(response)}"
            )
        return response


def _message(response: httpx2.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
