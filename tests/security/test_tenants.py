"""Sessions and stored things belong to their caller: over streamable HTTP on loopback (the way
the attacks came), and in memory for the legacy-connection rules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from rlm_mcp.config import Settings
from rlm_mcp.runtime import Runtime
from rlm_mcp.server import build_server
from rlm_mcp.server.identity import SessionKey

pytestmark = pytest.mark.anyio

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef00"


@asynccontextmanager
async def _client(url: str, token: str | None = None, mode: str = "auto") -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        yield client


def _tokens_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"# token tenant\n{ALICE} alice\n{BOB} bob\n")
    return str(path)


async def test_http_without_a_token_mints_session_handles_and_refuses_chosen_names(
    serve_http: Callable[..., Any],
) -> None:
    server = serve_http(RLM_MCP_SESSION_IDLE_SECONDS="2")
    with anyio.fail_after(90):
        async with _client(server.url) as a, _client(server.url) as b:
            first = await a.call_tool("run_repl", {"code": "secret = 'a-42'"})
            handle = first.structured_content["session"]
            assert handle.startswith("sess_") and len(handle) == 37
            again = await a.call_tool("run_repl", {"code": "print(secret)", "session": handle})
            assert again.structured_content["output"] == "a-42\n"
            # b cannot choose a guessable name, nor make up a handle
            named = await b.call_tool("run_repl", {"code": "print(1)", "session": "main"})
            assert named.is_error and "token" in named.content[0].text
            forged = await b.call_tool(
                "run_repl", {"code": "print(secret)", "session": "sess_" + "0" * 32}
            )
            assert forged.is_error and "expired" in forged.content[0].text
            # a call without a session is a fresh sandbox, not a's
            fresh = await b.call_tool("run_repl", {"code": "print(secret)"})
            assert "a-42" not in str(fresh.structured_content)
            tools = {t.name: t for t in (await b.list_tools()).tools}
            assert "expire after 2s" in (tools["run_repl"].description or "")
            await anyio.sleep(2.5)  # the handle's idle expiry is what is under test
            late = await a.call_tool("run_repl", {"code": "print(secret)", "session": handle})
            assert late.is_error and "expired" in late.content[0].text


async def test_tenants_see_only_their_own_contexts_names_sessions_and_runs(
    serve_http: Callable[..., Any], tmp_path: Path
) -> None:
    server = serve_http(RLM_MCP_TOKENS_FILE=_tokens_file(tmp_path))
    with anyio.fail_after(90):
        async with _client(server.url, ALICE) as alice, _client(server.url, BOB) as bob:
            mine = await alice.call_tool(
                "load_context", {"text": "alice private text", "name": "main"}
            )
            assert not mine.is_error, mine.content
            handle = mine.structured_content["handle"]
            assert (await bob.call_tool("list_contexts", {})).structured_content["contexts"] == []
            peek = await bob.call_tool("run_repl", {"code": "print(context)", "handle": handle})
            assert peek.is_error and "not found" in peek.content[0].text
            by_name = await bob.call_tool("run_repl", {"code": "print(context)", "handle": "main"})
            assert by_name.is_error
            # bob may use the same name for his own text, and the same session name
            await bob.call_tool("load_context", {"text": "bob text", "name": "main"})
            await alice.call_tool("run_repl", {"code": "v = 'alice'", "session": "main"})
            await bob.call_tool("run_repl", {"code": "v = 'bob'", "session": "main"})
            a = await alice.call_tool(
                "run_repl", {"code": "print(v, context)", "session": "main", "handle": "main"}
            )
            b = await bob.call_tool(
                "run_repl", {"code": "print(v, context)", "session": "main", "handle": "main"}
            )
            assert a.structured_content["output"] == "alice alice private text\n"
            assert b.structured_content["output"] == "bob bob text\n"
            # a stored answer or reply spilled for alice is hers too
            listed = (await alice.call_tool("list_contexts", {})).structured_content
            assert [c["name"] for c in listed["contexts"]] == ["main"]


async def test_a_session_id_spelled_into_a_session_name_reaches_nothing(
    serve_http: Callable[..., Any], tmp_path: Path
) -> None:
    server = serve_http(RLM_MCP_TOKENS_FILE=_tokens_file(tmp_path))
    with anyio.fail_after(90):
        async with _client(server.url, ALICE, mode="legacy") as legacy:
            await legacy.call_tool("run_repl", {"code": "secret = 'legacy-42'"})
            sid = legacy.session_id if hasattr(legacy, "session_id") else None
            async with _client(server.url, ALICE) as modern:
                for name in [f"{sid}:default", "default", ":default"]:
                    res = await modern.call_tool(
                        "run_repl", {"code": "print(secret)", "session": name}
                    )
                    assert "legacy-42" not in str(res.structured_content), name


async def test_a_legacy_clients_sandboxes_end_with_its_mcp_session(tmp_path: Path) -> None:
    runtime = Runtime(Settings(home=tmp_path))
    server = build_server(runtime=runtime)
    with anyio.fail_after(60):
        async with Client(server, mode="legacy") as other:
            await other.call_tool("run_repl", {"code": "x = 1", "session": "keep"})
            async with Client(server, mode="legacy") as client:
                await client.call_tool("run_repl", {"code": "x = 1"})
                await client.call_tool("run_repl", {"code": "x = 2", "session": "second"})
                pool = runtime.started_pool
                assert pool is not None and len(pool.live_keys()) == 3
            deadline = time.monotonic() + 10
            while len(pool.live_keys()) != 1 and time.monotonic() < deadline:
                await anyio.sleep(0.05)  # the connection's cleanup runs as its task ends
            (left,) = pool.live_keys()
            assert isinstance(left, SessionKey) and left.name == "keep"


async def test_a_legacy_http_clients_workers_stop_after_its_delete(
    serve_http: Callable[..., Any],
) -> None:
    server = serve_http()
    with anyio.fail_after(90):
        async with _client(server.url, mode="legacy") as client:
            await client.call_tool("run_repl", {"code": "x = 1"})
            assert len(server.worker_pids()) == 1
        deadline = time.monotonic() + 20
        while server.worker_pids() and time.monotonic() < deadline:
            await anyio.sleep(0.1)  # the server closes the worker after the session's DELETE
        assert server.worker_pids() == set()
