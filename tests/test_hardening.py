"""Every input gets the right answer or a one-line error (issue 12), through the real protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.config import Settings
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.server import build_server

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
TEXT = "ERROR disk full\nINFO ok\nERROR net down\n"


def _len_then_final() -> list[str]:
    return ["```repl\nn = len(context)\nprint(n)\n```", "FINAL_VAR(n)"]


def _server(tmp_path: Path, **settings: Any) -> Any:
    return build_server(
        Settings(home=tmp_path, **settings),
        lm_factory=lambda m, s: (ScriptedLM(_len_then_final()), ScriptedLM(_echo)),
    )


def _echo(messages: Any) -> str:
    return f"saw {len(messages[-1].content)} chars"


def _error(res: Any) -> str:
    assert res.is_error, res.structured_content
    text: str = res.content[0].text
    assert "\n" not in text and "Traceback" not in text and len(text) < 1_000, text
    return text


# -- 1. one way to name a stored context --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_tool_and_resource_resolves_a_name_to_its_context(
    tmp_path: Path, mode: str
) -> None:
    with anyio.fail_after(120):
        async with Client(_server(tmp_path), mode=mode) as client:
            loaded = await client.call_tool("load_context", {"text": TEXT, "name": "biglog"})
            handle = loaded.structured_content["handle"]
            repl = await client.call_tool(
                "run_repl", {"code": "print(len(context))", "handle": "biglog"}
            )
            assert repl.structured_content["output"] == f"{len(TEXT)}\n"
            # rlm_complete over the name answers about the stored text, not the word "biglog"
            done = await client.call_tool(
                "rlm_complete", {"query": "how long?", "handle": "biglog"}
            )
            assert done.structured_content["answer"] == str(len(TEXT))
            asked = await client.call_tool("llm_query", {"prompt": "q", "handle": "biglog"})
            assert asked.structured_content["text"] == f"saw {len('q') + 2 + len(TEXT)} chars"
            meta = json.loads(
                (await client.read_resource("rlm://contexts/biglog")).contents[0].text
            )
            assert meta["handle"] == handle
            part = await client.read_resource("rlm://contexts/biglog/chars/0-5")
            assert part.contents[0].text == "ERROR"
            gone = await client.call_tool("delete_context", {"handle": "biglog"})
            assert gone.structured_content == {"handle": handle, "deleted": True}
            assert "not found" in _error(
                await client.call_tool("run_repl", {"code": "1", "handle": handle})
            )


async def test_text_that_looks_like_a_handle_is_text(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            loaded = await client.call_tool("load_context", {"text": TEXT})
            handle = loaded.structured_content["handle"]
            done = await client.call_tool("rlm_complete", {"query": "how long?", "text": handle})
            assert done.structured_content["answer"] == str(len(handle))


async def test_names_are_validated_and_never_take_handle_form(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            first = await client.call_tool("load_context", {"text": "first"})
            handle = first.structured_content["handle"]
            for bad in [handle, "ctx_0123456789ab", "", "   ", "a\u202eb", "tab\there", "x" * 500]:
                res = await client.call_tool("load_context", {"text": "impostor", "name": bad})
                assert "name" in _error(res).lower(), bad
            # the handle still means the first text
            res = await client.call_tool("run_repl", {"code": "print(context)", "handle": handle})
            assert res.structured_content["output"] == "first\n"


async def test_repointing_a_name_needs_replace(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            await client.call_tool("load_context", {"text": "one", "name": "doc"})
            refused = await client.call_tool("load_context", {"text": "two", "name": "doc"})
            assert "replace" in _error(refused)
            seen = await client.call_tool("run_repl", {"code": "print(context)", "handle": "doc"})
            assert seen.structured_content["output"] == "one\n"
            moved = await client.call_tool(
                "load_context", {"text": "two", "name": "doc", "replace": True}
            )
            assert not moved.is_error
            seen = await client.call_tool("run_repl", {"code": "print(context)", "handle": "doc"})
            assert seen.structured_content["output"] == "two\n"


# -- 2. paths mean what the user typed ----------------------------------------------------------


async def test_an_empty_path_is_refused_and_a_relative_one_is_explained(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            assert "empty" in _error(await client.call_tool("load_context", {"path": ""}))
            rel = _error(await client.call_tool("load_context", {"path": "no/such/file.log"}))
            assert "working directory" in rel and "absolute" in rel


async def test_a_directory_load_reports_what_it_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "node_modules").mkdir(parents=True)
    (folder / "node_modules" / "x.js").write_text("skip me")
    (folder / "a.txt").write_text("keep me")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with anyio.fail_after(60):
        async with Client(_server(tmp_path / "home")) as client:
            res = await client.call_tool("load_context", {"path": str(folder)})
            skipped = res.structured_content["skipped"]
            assert skipped.get("binary") == 1 and skipped.get("ignored", 0) >= 1


# -- 3. rlm_complete is bounded -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "value", "ceiling"),
    [
        ("max_iterations", 10**9, "RLM_MCP_LIMIT_ITERATIONS"),
        ("max_depth", 50, "RLM_MCP_LIMIT_DEPTH"),
        ("max_time", 10**7, "RLM_MCP_LIMIT_TIME"),
        ("max_tokens", 10**12, "RLM_MCP_LIMIT_TOKENS"),
    ],
)
async def test_rlm_complete_refuses_budgets_above_the_servers_ceiling(
    tmp_path: Path, arg: str, value: int, ceiling: str
) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool("rlm_complete", {"query": "q", "text": "t", arg: value})
            text = _error(res)
            assert arg in text and ceiling in text


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize(
    "arg", ["max_iterations", "max_depth", "max_time", "max_cost", "max_tokens"]
)
async def test_rlm_complete_refuses_zero_and_negative_budgets(
    tmp_path: Path, arg: str, value: int
) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool("rlm_complete", {"query": "q", "text": "t", arg: value})
            assert arg in _error(res)


async def test_an_operator_ceiling_is_stated_and_a_client_may_go_lower(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path, limit_iterations=7, limit_cost=0.5)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "max_iterations 7" in (tools["rlm_complete"].description or "")
            assert "max_cost $0.5" in (tools["rlm_complete"].description or "")
            ok = await client.call_tool(
                "rlm_complete", {"query": "q", "text": "t", "max_iterations": 3}
            )
            assert ok.structured_content["answer"] == "1"


# -- 4. argument errors are one line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "args", "words"),
    [
        ("run_repl", {}, ["code", "required"]),
        ("run_repl", {"code": 5}, ["code", "string"]),
        ("load_context", {"text": ["a"]}, ["text", "string"]),
        ("rlm_complete", {"query": "q", "text": "t", "max_iterations": "many"}, ["max_iterations"]),
        ("llm_query", {"prompt": "p", "start": -3, "handle": "x"}, ["start", "0"]),
        ("delete_context", {"handle": None}, ["handle"]),
        ("list_contexts", {"unexpected": 1}, []),
    ],
)
async def test_argument_errors_are_one_line_naming_the_argument(
    tmp_path: Path, tool: str, args: dict[str, Any], words: list[str]
) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool(tool, args)
            if not words:  # extra arguments are ignored, as the MCP SDK does
                assert not res.is_error
                return
            text = _error(res)
            assert text.startswith(f"{tool}: ")
            for word in words:
                assert word in text
            assert "pydantic" not in text and "errors.pydantic.dev" not in text


async def test_an_unusable_data_folder_is_one_line_naming_rlm_mcp_home(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    with anyio.fail_after(60):
        async with Client(build_server(Settings(home=home))) as client:
            text = _error(await client.call_tool("load_context", {"text": "x"}))
            assert "RLM_MCP_HOME" in text and "bug" not in text


async def test_a_bad_resource_range_is_one_line_and_logs_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mcp import MCPError

    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            handle = (await client.call_tool("load_context", {"text": TEXT})).structured_content[
                "handle"
            ]
            for bad in ["a-b", "9-2", "999-1000"]:
                with pytest.raises(MCPError) as err:
                    await client.read_resource(f"rlm://contexts/{handle}/chars/{bad}")
                assert "\n" not in str(err.value)
    assert not [r for r in caplog.records if r.exc_info]


# -- 5. llm_query never sends what the caller didn't mean --------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "word"), [(5, 2, "end"), (10**6, None, "past the end"), (4, 4, "end")]
)
async def test_llm_query_refuses_empty_reversed_and_out_of_range_slices(
    tmp_path: Path, start: int, end: int | None, word: str
) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            await client.call_tool("load_context", {"text": TEXT, "name": "log"})
            args: dict[str, Any] = {"prompt": "p", "handle": "log", "start": start}
            if end is not None:
                args["end"] = end
            assert word in _error(await client.call_tool("llm_query", args))


async def test_llm_query_flags_a_cut_slice_and_stores_a_huge_reply(tmp_path: Path) -> None:
    huge = "R" * 5_000_000

    def reply(messages: Any) -> str:
        return huge

    server = build_server(
        Settings(home=tmp_path), lm_factory=lambda m, s: (ScriptedLM(reply), None)
    )
    with anyio.fail_after(120):
        async with Client(server) as client:
            await client.call_tool("load_context", {"text": "z" * 250_000, "name": "big"})
            res = await client.call_tool("llm_query", {"prompt": "p", "handle": "big"})
            got = res.structured_content
            assert got["slice_cut"] is True and any("start=100000" in n for n in got["notes"])
            assert len(json.dumps(got)) < 30_000  # not the 10 MB of before
            stored = got["text_context"]
            meta = json.loads(
                (await client.read_resource(f"rlm://contexts/{stored}")).contents[0].text
            )
            assert meta["chars"] == len(huge)
            links = [c for c in res.content if c.type == "resource_link"]
            assert links and links[0].uri == f"rlm://contexts/{stored}"


# -- 9. results leave defaults out ---------------------------------------------------------------


async def test_a_plain_load_result_leaves_out_null_name_and_zero_documents(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with Client(_server(tmp_path)) as client:
            res = await client.call_tool("load_context", {"text": "plain"})
            assert "name" not in res.structured_content
            assert "documents" not in res.structured_content
            assert '"name":null' not in res.content[0].text
