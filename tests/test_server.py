"""The MCP server through the real protocol (in-memory Client, both eras)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp import Client

from rlm_mcp.config import Settings
from rlm_mcp.server import build_server

MODES = ["auto", "legacy"]


def _server(tmp_path: Path):  # type: ignore[no-untyped-def]
    return build_server(Settings(home=tmp_path))


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_load_list_delete_context_round_trip(tmp_path: Path, mode: str) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path), mode=mode) as client:
            res = await client.call_tool("load_context", {"text": "hello\nworld", "name": "hw"})
            assert not res.is_error
            handle = res.structured_content["handle"]
            assert handle.startswith("ctx_")
            listed = await client.call_tool("list_contexts", {})
            assert [c["handle"] for c in listed.structured_content["contexts"]] == [handle]
            gone = await client.call_tool("delete_context", {"handle": handle})
            assert gone.structured_content["deleted"] is True
            again = await client.call_tool("delete_context", {"handle": handle})
            assert again.is_error
            assert "list_contexts" in again.content[0].text


@pytest.mark.anyio
async def test_load_context_needs_exactly_one_source(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool("load_context", {})
            assert res.is_error
            assert "exactly one" in res.content[0].text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_run_repl_sees_context_and_keeps_variables(tmp_path: Path, mode: str) -> None:
    with anyio.fail_after(120):
        async with Client(_server(tmp_path), mode=mode) as client:
            res = await client.call_tool("load_context", {"text": "abc" * 10})
            handle = res.structured_content["handle"]
            r1 = await client.call_tool(
                "run_repl", {"code": "n = len(context)\nprint(n)", "handle": handle}
            )
            assert not r1.is_error, r1.content
            assert r1.structured_content["output"].strip() == "30"
            r2 = await client.call_tool("run_repl", {"code": "print(n * 2)", "handle": handle})
            assert r2.structured_content["output"].strip() == "60"


@pytest.mark.anyio
async def test_run_repl_unknown_handle_tells_what_to_do(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool("run_repl", {"code": "print(1)", "handle": "ctx_nope"})
            assert res.is_error
            assert res.content[0].text.count("list_contexts") == 1  # the advice, once


@pytest.mark.anyio
async def test_tools_list_fits_the_size_budget(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            tools = await client.list_tools()
            names = {t.name for t in tools.tools}
            assert {"load_context", "run_repl", "list_contexts", "delete_context"} <= names
            size = len(tools.model_dump_json(exclude_none=True))
            assert size <= 10_000


@pytest.mark.parametrize(
    "client", ["claude-desktop", "claude-code", "cursor", "vscode", "windsurf"]
)
def test_client_snippets_name_the_installed_command(client: str) -> None:
    from rlm_mcp.clients import snippet

    text = snippet(client, command="/opt/bin/rlm-mcp")
    assert "/opt/bin/rlm-mcp" in text
    assert "serve" in text


def test_client_snippet_rejects_unknown_client() -> None:
    from rlm_mcp.clients import snippet

    with pytest.raises(ValueError, match="choose one of"):
        snippet("emacs")


def test_config_command_prints_the_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    from rlm_mcp.cli import main

    assert main(["config", "claude-desktop"]) == 0
    assert '"mcpServers"' in capsys.readouterr().out


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_context_resources_list_describe_and_range(tmp_path: Path, mode: str) -> None:
    import json

    with anyio.fail_after(60):
        async with Client(_server(tmp_path), mode=mode) as client:
            res = await client.call_tool("load_context", {"text": "0123456789" * 5})
            handle = res.structured_content["handle"]
            listed = await client.read_resource("rlm://contexts")
            assert handle in listed.contents[0].text
            meta = await client.read_resource(f"rlm://contexts/{handle}")
            assert json.loads(meta.contents[0].text)["chars"] == 50
            part = await client.read_resource(f"rlm://contexts/{handle}/chars/3-7")
            assert part.contents[0].text == "3456"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_rlm_complete_answers_and_reports_progress(tmp_path: Path, mode: str) -> None:
    from rlm_mcp.lm.scripted import ScriptedLM

    script = ["```repl\nprint(len(context))\n```", "FINAL(it has 30 chars)"]
    server = build_server(
        Settings(home=tmp_path), lm_factory=lambda m, s: (ScriptedLM(script), ScriptedLM(["x"]))
    )
    seen: list[float] = []

    async def progress(p: float, total: float | None, msg: str | None) -> None:
        seen.append(p)

    with anyio.fail_after(120):
        async with Client(server, mode=mode, log_level="info") as client:
            res = await client.call_tool(
                "rlm_complete",
                {"query": "how long?", "text": "abc" * 10},
                progress_callback=progress,
            )
            assert not res.is_error, res.content
            assert "30" in res.structured_content["answer"]
            assert seen


@pytest.mark.anyio
async def test_rlm_complete_without_a_provider_says_what_to_set(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool("rlm_complete", {"query": "q", "text": "t"})
            assert res.is_error
            assert "Traceback" not in res.content[0].text


@pytest.mark.anyio
async def test_cancelled_rlm_complete_leaves_the_server_healthy(tmp_path: Path) -> None:
    from rlm_mcp.lm.scripted import ScriptedLM

    script = ["```repl\nwhile True:\n    pass\n```"] * 5
    server = build_server(
        Settings(home=tmp_path, exec_timeout=120.0),
        lm_factory=lambda m, s: (ScriptedLM(script), ScriptedLM(["x"])),
    )
    started = anyio.Event()

    async def progress(p: float, total: float | None, msg: str | None) -> None:
        started.set()

    with anyio.fail_after(60):
        async with Client(server, log_level="info") as client:
            with anyio.move_on_after(1.5) as scope:
                await client.call_tool(
                    "rlm_complete", {"query": "q", "text": "t"}, progress_callback=progress
                )
            assert scope.cancelled_caught
            listed = await client.call_tool("list_contexts", {})
            assert not listed.is_error
            again = await client.call_tool("run_repl", {"code": "print(7)"})
            assert again.structured_content["output"].strip() == "7"


@pytest.mark.anyio
async def test_llm_query_appends_the_handle_slice(tmp_path: Path) -> None:
    from rlm_mcp.lm.scripted import ScriptedLM

    sub = ScriptedLM(lambda messages: messages[-1].content[-4:])
    server = build_server(Settings(home=tmp_path), lm_factory=lambda m, s: (sub, sub))
    with anyio.fail_after(60):
        async with Client(server) as client:
            res = await client.call_tool("load_context", {"text": "0123456789"})
            handle = res.structured_content["handle"]
            out = await client.call_tool(
                "llm_query", {"prompt": "echo", "handle": handle, "start": 2, "end": 6}
            )
            assert not out.is_error, out.content
            assert out.structured_content["text"] == "2345"
            bad = await client.call_tool("llm_query", {"prompt": "x", "handle": "ctx_nope"})
            assert bad.is_error


@pytest.mark.anyio
async def test_tool_annotations_mark_read_only_and_destructive_tools(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert tools["list_contexts"].annotations.read_only_hint is True
            assert tools["delete_context"].annotations.destructive_hint is True
            assert tools["rlm_complete"].annotations.open_world_hint is True
            assert tools["run_repl"].output_schema is not None
