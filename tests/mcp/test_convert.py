"""MCP content and results as AgentScope blocks and responses (and back), for every content type."""

from __future__ import annotations

import base64

import mcp_types as mtypes

from agentscope.message import Base64Source, ImageBlock, TextBlock, URLSource
from agentscope.tools import ToolResponse
from agentscope.tools._mcp_convert import mcp_content_to_blocks, mcp_result_to_response, tool_response_to_mcp

PNG = base64.b64encode(b"\x89PNG fake").decode()


def test_every_content_type_becomes_something_a_model_can_see() -> None:
    blocks = mcp_content_to_blocks(
        [
            mtypes.TextContent(text="plain"),
            mtypes.ImageContent(data=PNG, mime_type="image/png"),
            mtypes.EmbeddedResource(
                resource=mtypes.TextResourceContents(uri="file:///a.txt", text="embedded text")
            ),
            mtypes.EmbeddedResource(
                resource=mtypes.BlobResourceContents(uri="file:///b.png", blob=PNG, mime_type="image/png")
            ),
            mtypes.EmbeddedResource(
                resource=mtypes.BlobResourceContents(
                    uri="file:///c.bin", blob="AAAA", mime_type="application/zip"
                )
            ),
            mtypes.ResourceLink(uri="file:///d.md", name="d.md", description="the docs"),
            mtypes.AudioContent(data="AAAA", mime_type="audio/wav"),
        ]
    )
    assert blocks == [
        TextBlock(text="plain"),
        ImageBlock(source=Base64Source(media_type="image/png", data=PNG)),
        TextBlock(text="embedded text"),
        ImageBlock(source=Base64Source(media_type="image/png", data=PNG)),
        TextBlock(text="[binary resource file:///c.bin (application/zip, ~3 bytes)]"),
        TextBlock(text="[resource d.md <file:///d.md>: the docs]"),
        TextBlock(text="[audio (audio/wav), not shown]"),
    ]


def test_results_keep_structured_content_and_errors() -> None:
    only_structured = mcp_result_to_response(
        mtypes.CallToolResult(content=[], structured_content={"t": 21.5}), server="s", tool="t"
    )
    assert only_structured.text_content == '{"t": 21.5}'  # shown as JSON when there is no text
    assert only_structured.structured == {"t": 21.5}
    assert only_structured.metadata == {"mcp_server": "s", "mcp_tool": "t"}
    error = mcp_result_to_response(
        mtypes.CallToolResult(content=[mtypes.TextContent(text="bad")], is_error=True), server="s", tool="t"
    )
    assert error.is_error
    assert error.text_content == "bad"


def test_tool_responses_become_mcp_results() -> None:
    response = ToolResponse(
        content=[
            TextBlock(text="hi"),
            ImageBlock(source=Base64Source(media_type="image/png", data=PNG)),
            ImageBlock(source=URLSource(url="https://example.com/pic.png")),
        ],
        structured={"k": 1},
    )
    result = tool_response_to_mcp(response)
    assert result.content[0] == mtypes.TextContent(text="hi")
    assert result.content[1] == mtypes.ImageContent(data=PNG, mime_type="image/png")
    link = result.content[2]
    assert isinstance(link, mtypes.ResourceLink)
    assert (link.uri, link.name) == ("https://example.com/pic.png", "pic.png")
    assert result.structured_content == {"k": 1}
    assert not result.is_error
