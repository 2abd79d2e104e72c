"""SamplingLM through a real in-memory MCP client session, and its clear failures."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CreateMessageResult, TextContent

from rlm_mcp.errors import SamplingUnavailableError
from rlm_mcp.lm import Message, SamplingLM

pytestmark = pytest.mark.anyio


def build_server() -> MCPServer:
    server = MCPServer("sampling-test")

    @server.tool()
    async def ask(question: str, ctx: Context) -> str:
        lm = SamplingLM(ctx, model_hint="claude-haiku")
        try:
            comp = await lm.complete(
                [Message("system", "be brief"), Message("user", question)],
                max_tokens=20,
                temperature=0,
            )
        except SamplingUnavailableError as exc:
            return f"unavailable: {exc}"
        return f"{comp.text}|{comp.usage.model}|{comp.usage.estimated}|{comp.usage.output_tokens}"

    return server


async def test_sampling_goes_through_the_clients_callback_with_messages_and_options() -> None:
    seen: list[Any] = []

    async def sampler(context: Any, params: Any) -> CreateMessageResult:
        seen.append(params)
        return CreateMessageResult(
            role="assistant",
            content=TextContent(type="text", text="forty-two!"),
            model="client-model",
            stop_reason="endTurn",
        )

    with anyio.fail_after(10):
        async with Client(build_server(), mode="legacy", sampling_callback=sampler) as client:
            result = await client.call_tool("ask", {"question": "meaning?"})
    assert result.content[0].text == "forty-two!|client-model|True|2"
    (params,) = seen
    assert params.system_prompt == "be brief"
    assert params.messages[0].content.text == "meaning?"
    assert params.max_tokens == 20
    assert params.temperature == 0
    assert params.model_preferences.hints[0].name == "claude-haiku"


async def test_sampling_fails_at_once_when_the_client_declared_no_sampling() -> None:
    with anyio.fail_after(10):
        async with Client(build_server(), mode="legacy") as client:
            result = await client.call_tool("ask", {"question": "x"})
    text = result.content[0].text
    assert text.startswith("unavailable:")
    assert "did not declare the sampling capability" in text


async def test_sampling_fails_at_once_on_the_modern_protocol_without_a_back_channel() -> None:
    async def sampler(context: Any, params: Any) -> CreateMessageResult:  # pragma: no cover
        raise AssertionError("must not be called")

    with anyio.fail_after(10):
        async with Client(build_server(), sampling_callback=sampler) as client:
            result = await client.call_tool("ask", {"question": "x"})
    text = result.content[0].text
    assert "no back channel" in text and "--backend openai" in text


async def test_sampling_outside_a_tool_says_there_is_no_session() -> None:
    lm = SamplingLM(object())
    with pytest.raises(SamplingUnavailableError, match="no MCP session"):
        await lm.complete([Message("user", "x")])
    assert lm.backend == "sampling" and lm.model == "sampling"
