"""MCPClient's list requests follow the server's cursors to the last page: tools, resources, resource templates
and prompts, against an in-process ``mcp`` server that pages its lists two items at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mcp_types as mtypes
import pytest
from mcp.server import Server
from mcp.server.context import ServerRequestContext

from agentscope.tools import MCPClient

PAGE = 2
COUNT = 5
"""Items of each list: three pages (2, 2, 1)."""


def _page(params: mtypes.PaginatedRequestParams | None, seen: list[str | None]) -> tuple[range, str | None]:
    """The items of the requested page and the cursor of the next one (None on the last page)."""
    cursor = params.cursor if params is not None else None
    seen.append(cursor)
    start = int(cursor) if cursor else 0
    end = min(start + PAGE, COUNT)
    return range(start, end), (str(end) if end < COUNT else None)


def _lister(seen: list[str | None], result: type[Any], field: str, make: Callable[[int], Any]) -> Any:
    """A list handler that serves item ``make(i)`` for each i of the requested page, in ``result.<field>``."""

    async def handler(ctx: ServerRequestContext[Any], params: mtypes.PaginatedRequestParams | None) -> Any:
        items, cursor = _page(params, seen)
        return result(**{field: [make(i) for i in items]}, next_cursor=cursor)

    return handler


def _paging_server(seen: dict[str, list[str | None]]) -> Server[Any]:
    return Server(
        "paging",
        on_list_tools=_lister(
            seen["tools"],
            mtypes.ListToolsResult,
            "tools",
            lambda i: mtypes.Tool(name=f"tool{i}", input_schema={"type": "object"}),
        ),
        on_list_resources=_lister(
            seen["resources"],
            mtypes.ListResourcesResult,
            "resources",
            lambda i: mtypes.Resource(uri=f"page://r{i}", name=f"r{i}"),
        ),
        on_list_resource_templates=_lister(
            seen["templates"],
            mtypes.ListResourceTemplatesResult,
            "resource_templates",
            lambda i: mtypes.ResourceTemplate(uri_template=f"page://t{i}/{{x}}", name=f"t{i}"),
        ),
        on_list_prompts=_lister(
            seen["prompts"], mtypes.ListPromptsResult, "prompts", lambda i: mtypes.Prompt(name=f"p{i}")
        ),
    )


@pytest.mark.integration
async def test_every_list_request_follows_the_cursors_to_the_last_page() -> None:
    seen: dict[str, list[str | None]] = {"tools": [], "resources": [], "templates": [], "prompts": []}
    async with MCPClient(_paging_server(seen)) as client:
        assert [t.name for t in await client.list_tools()] == [f"tool{i}" for i in range(COUNT)]
        assert [r.name for r in await client.list_resources()] == [f"r{i}" for i in range(COUNT)]
        assert [t.name for t in await client.list_resource_templates()] == [f"t{i}" for i in range(COUNT)]
        assert [p.name for p in await client.list_prompts()] == [f"p{i}" for i in range(COUNT)]
        # (tool entries come from the same pages)
        assert len(await client.tool_entries()) == COUNT
    pages = [None, "2", "4"]
    assert seen == {"tools": pages * 2, "resources": pages, "templates": pages, "prompts": pages}
