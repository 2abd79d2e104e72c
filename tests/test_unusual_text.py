"""Text no UTF-8 encoder accepts (lone surrogates: a provider's escape cut from its pair, a file
name that is not UTF-8, code that builds one) and paths the OS refuses never break a result, a
listing or a trajectory: they become U+FFFD or a one-line error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from rlm_mcp.config import Settings
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.server import build_server
from rlm_mcp.testing.fake_provider import FakeProvider
from rlm_mcp.text import clean, clean_text

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
CUT = "half an emoji: \ud83d."  # what json.loads gives for a JSON escape cut from its pair


def _sendable(res: Any) -> dict[str, Any]:
    """The result encodes as UTF-8 JSON (what HTTP needs) and is not a crash."""
    text = res.content[0].text
    json.dumps(res.structured_content, ensure_ascii=False).encode("utf-8")
    text.encode("utf-8")
    assert "failed unexpectedly" not in text and "Error executing tool" not in text, text
    return res.structured_content or {}


def test_clean_text_replaces_each_lone_surrogate_and_keeps_everything_else() -> None:
    assert clean_text(CUT) == "half an emoji: \ufffd."
    ok = "déjà vu 😀"
    assert clean_text(ok) is ok
    assert clean({"a\udcff": ["x\ud800", 3, None]}) == {"a\ufffd": ["x\ufffd", 3, None]}


@pytest.mark.parametrize("mode", MODES)
async def test_lone_surrogates_from_models_and_code_reach_results_as_u_fffd(
    tmp_path: Path, mode: str
) -> None:
    root = ScriptedLM([f"```repl\nprint({CUT!r})\n```", f"FINAL(x {CUT})"])
    server = build_server(
        Settings(home=tmp_path), lm_factory=lambda m, s: (root, ScriptedLM([CUT]))
    )
    with anyio.fail_after(120):
        async with Client(server, mode=mode) as client:
            done = _sendable(
                await client.call_tool("rlm_complete", {"query": "q \ud800", "text": "t \udc00"})
            )
            sub = _sendable(await client.call_tool("llm_query", {"prompt": "hi"}))
            repl = _sendable(
                await client.call_tool("run_repl", {"code": "s = 'a\\ud800'\nprint(s)\nFINAL(s)"})
            )
            bad = _sendable(await client.call_tool("run_repl", {"code": "1", "handle": "x\ud800"}))
    assert done["answer"] == "x half an emoji: \ufffd." and done["stop_reason"] == "final"
    assert sub["text"] == "half an emoji: \ufffd."
    assert repl["output"] == "a\ufffd\n" and repl["final"] == "a\ufffd"
    assert bad == {}  # an error, one line
    (trajectory,) = (tmp_path / "trajectories").rglob("*.jsonl")
    for line in trajectory.read_text(encoding="utf-8").splitlines():
        json.loads(line)  # every line is still JSON


async def test_a_provider_reply_cut_mid_pair_reaches_an_http_client(
    serve_http: Callable[..., Any],
) -> None:
    """The realistic path: the provider's JSON holds "\\ud83d", the SDK decodes it, and the
    llm_query result must still be valid JSON on the wire."""
    with FakeProvider(lambda request: CUT) as fake:
        server = serve_http(
            OPENAI_API_KEY="dummy",
            OPENAI_BASE_URL=fake.openai_base_url,
            RLM_MCP_BACKEND="openai",
            RLM_MCP_MODEL="gpt-4o-mini",
        )
        with anyio.fail_after(60):
            async with (
                httpx2.AsyncClient(timeout=60) as http,
                Client(streamable_http_client(server.url, http_client=http)) as client,  # type: ignore[arg-type]
            ):
                res = await client.call_tool("llm_query", {"prompt": "hi"})
    assert _sendable(res)["text"] == "half an emoji: \ufffd."


async def test_paths_the_os_refuses_are_one_line_errors(tmp_path: Path) -> None:
    server = build_server(Settings(home=tmp_path / "home"))
    with anyio.fail_after(60):
        async with Client(server) as client:
            for path, why in (
                ("~no-such-user-zz/notes.txt", "names no user on the server"),
                ("/tmp/" + "a" * 300 + "/x.txt", "File name too long"),
                (str(tmp_path / "file.txt" / "below"), "does not exist"),
            ):
                if "file.txt" in path:
                    (tmp_path / "file.txt").write_text("x")
                res = await client.call_tool("load_context", {"path": path})
                assert res.is_error
                text = res.content[0].text
                assert text.startswith("load_context: ") and "\n" not in text
                assert "failed unexpectedly" not in text and why in text, text


async def test_a_folder_whose_name_is_not_utf8_keeps_listing_working(tmp_path: Path) -> None:
    folder = os.path.join(os.fsencode(tmp_path), b"dir\xff")
    os.mkdir(folder)
    with open(os.path.join(folder, b"note\xfe.txt"), "w") as fh:
        fh.write("hello")
    link = tmp_path / "link"
    os.symlink(folder, link)
    server = build_server(Settings(home=tmp_path / "home"))
    with anyio.fail_after(60):
        async with Client(server) as client:
            loaded = _sendable(await client.call_tool("load_context", {"path": str(link)}))
            listed = _sendable(await client.call_tool("list_contexts", {}))
            resource = await client.read_resource(f"rlm://contexts/{loaded['handle']}")
            repl = _sendable(
                await client.call_tool(
                    "run_repl", {"code": "print(documents)", "handle": loaded["handle"]}
                )
            )
    assert loaded["source"].endswith("dir\ufffd")
    assert listed["contexts"][0]["source"] == loaded["source"]
    assert "dir\ufffd" in resource.contents[0].text  # type: ignore[union-attr]
    assert "note\ufffd.txt" in repl["output"]
