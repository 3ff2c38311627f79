"""MCP content <-> ours, both ways: what a tool result looks like to each side.

From a server (the client's side, :func:`mcp_result_to_response`): text stays text, images come inline (base64),
embedded text resources become their text; audio, links and binary resources become a one-line description;
``structuredContent`` is kept in ``ToolResponse.structured``. To a client (the server's side,
:func:`tool_response_to_mcp`): text becomes ``text`` content, base64 images ``image`` content, image URLs
``resource_link`` content, and structured data ``structuredContent``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import mcp_types as mtypes
from pydantic import JsonValue

from agentscope.message import Base64Source, ImageBlock, TextBlock
from agentscope.types import ToolResponse

__all__ = ["mcp_content_to_blocks", "mcp_result_to_response", "tool_response_to_mcp"]


def mcp_content_to_blocks(content: Sequence[mtypes.ContentBlock]) -> list[TextBlock | ImageBlock]:
    """MCP content as blocks a model can see: text as text, images inline (base64), embedded text resources
    as their text; audio, links and binary resources as a one-line description."""
    blocks: list[TextBlock | ImageBlock] = []
    for item in content:
        if isinstance(item, mtypes.TextContent):
            blocks.append(TextBlock(text=item.text))
        elif isinstance(item, mtypes.ImageContent):
            blocks.append(ImageBlock(source=Base64Source(media_type=item.mime_type, data=item.data)))
        elif isinstance(item, mtypes.EmbeddedResource):
            resource = item.resource
            if isinstance(resource, mtypes.TextResourceContents):
                blocks.append(TextBlock(text=resource.text))
            elif (resource.mime_type or "").startswith("image/"):
                blocks.append(
                    ImageBlock(source=Base64Source(media_type=resource.mime_type or "", data=resource.blob))
                )
            else:
                size = len(resource.blob) * 3 // 4
                blocks.append(
                    TextBlock(
                        text=f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'}, ~{size} bytes)]"
                    )
                )
        elif isinstance(item, mtypes.ResourceLink):
            about = f": {item.description}" if item.description else ""
            blocks.append(TextBlock(text=f"[resource {item.name} <{item.uri}>{about}]"))
        else:
            blocks.append(TextBlock(text=f"[audio ({item.mime_type}), not shown]"))
    return blocks


def mcp_result_to_response(result: mtypes.CallToolResult, *, server: str, tool: str) -> ToolResponse:
    """An MCP tool result as a :class:`ToolResponse`: content blocks converted (see
    :func:`mcp_content_to_blocks`), ``structuredContent`` kept in ``structured`` (and shown as JSON text when
    the result has no content), ``isError`` kept."""
    blocks: list[TextBlock | ImageBlock] = mcp_content_to_blocks(result.content)
    structured = cast("JsonValue", result.structured_content)
    if not blocks and structured is not None:
        blocks = [TextBlock(text=json.dumps(structured, ensure_ascii=False))]
    return ToolResponse(
        content=blocks,
        structured=structured,
        is_error=result.is_error,
        metadata={"mcp_server": server, "mcp_tool": tool},
    )


def tool_response_to_mcp(response: ToolResponse, *, modern: bool = False) -> mtypes.CallToolResult:
    """A :class:`ToolResponse` as an MCP tool result.

    ``structured`` becomes ``structuredContent``; before protocol 2026-07-28 that must be a JSON object, so
    any other value is wrapped as ``{"result": value}``.
    """
    content: list[mtypes.ContentBlock] = []
    for block in response.content:
        if isinstance(block, TextBlock):
            content.append(mtypes.TextContent(text=block.text))
        elif isinstance(block.source, Base64Source):
            content.append(mtypes.ImageContent(data=block.source.data, mime_type=block.source.media_type))
        else:
            url = block.source.url
            content.append(mtypes.ResourceLink(uri=url, name=url.rsplit("/", 1)[-1][:100] or "image"))
    structured: Any = response.structured
    if structured is not None and not modern and not isinstance(structured, dict):
        structured = {"result": structured}
    return mtypes.CallToolResult(content=content, structured_content=structured, is_error=response.is_error)
