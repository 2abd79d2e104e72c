"""The installed `rlm-mcp serve` as a real subprocess (the only test file that spawns servers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from rlm_mcp.testing.infra import free_port

RLM_MCP = shutil.which("rlm-mcp") or str(Path(sys.executable).with_name("rlm-mcp"))


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_serve_loads_a_context_and_runs_code(tmp_path: Path, mode: str) -> None:
    params = StdioServerParameters(
        command=RLM_MCP, args=["serve"], env={"RLM_MCP_HOME": str(tmp_path)}
    )
    with anyio.fail_after(120):
        async with Client(params, mode=mode) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"load_context", "run_repl", "list_contexts", "delete_context"} <= names
            res = await client.call_tool("load_context", {"text": "x" * 42})
            handle = res.structured_content["handle"]
            run = await client.call_tool(
                "run_repl", {"code": "print(len(context))", "handle": handle}
            )
            assert run.structured_content["output"].strip() == "42"


def test_server_start_up_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys; from rlm_mcp.server import build_server; build_server(); "
        "heavy = [m for m in ('anthropic', 'openai', 'RestrictedPython', 'diskcache') "
        "if m in sys.modules]; print(heavy)"
    )
    env = {**os.environ, "RLM_MCP_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_server_benchmark_smoke_run_reports_every_row() -> None:
    from rlm_mcp.bench.server import measure

    rows = measure(quick=True)
    assert [r.case for r in rows] == [
        "spawn to initialize (stdio, median)",
        "warm run_repl round trip",
        "warm run_repl, new code each call",
        "warm run_repl vs a no-op with its result type",
        "tools/list size",
        "tools/list est. tokens (chars/4)",
    ]
    assert all(r.measured > 0 for r in rows)
    assert all(r.baseline for r in rows[:5])  # every ratio has its same-run baseline


async def _wait_listening(port: int) -> None:
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            await anyio.sleep(0.05)  # polling a port that is not open yet, not synchronisation
            continue
        await stream.aclose()
        return


@pytest.mark.anyio
@pytest.mark.parametrize("token", [None, "s3cret"])
async def test_http_serve_checks_token_host_and_origin(tmp_path: Path, token: str | None) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    env = {**os.environ, "RLM_MCP_HOME": str(tmp_path)}
    env.pop("RLM_MCP_TOKEN", None)
    if token:
        env["RLM_MCP_TOKEN"] = token
    proc = subprocess.Popen(
        [RLM_MCP, "serve", "--transport", "http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with anyio.fail_after(60):
            await _wait_listening(port)
            for mode in ("auto", "legacy"):
                async with (
                    httpx2.AsyncClient(headers=headers) as h,
                    Client(streamable_http_client(url, http_client=h), mode=mode) as c,
                ):
                    res = await c.call_tool("load_context", {"text": "hi"})
                    assert not res.is_error
            body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            accept = {"Accept": "application/json, text/event-stream"}
            async with httpx2.AsyncClient() as h:
                bad_host = await h.post(
                    url, json=body, headers={**headers, **accept, "Host": "evil.example"}
                )
                assert bad_host.status_code in (400, 403, 421)
                bad_origin = await h.post(
                    url, json=body, headers={**headers, **accept, "Origin": "http://evil.example"}
                )
                assert bad_origin.status_code in (400, 403)
                if token:
                    no_token = await h.post(url, json=body, headers=accept)
                    assert no_token.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_http_serve_refuses_non_loopback_without_token(tmp_path: Path) -> None:
    env = {**os.environ, "RLM_MCP_HOME": str(tmp_path)}
    env.pop("RLM_MCP_TOKEN", None)
    out = subprocess.run(
        [RLM_MCP, "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "RLM_MCP_TOKEN" in out.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_clients_never_see_each_others_repl_variables(tmp_path: Path, mode: str) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    env = {**os.environ, "RLM_MCP_HOME": str(tmp_path)}
    env.pop("RLM_MCP_TOKEN", None)
    proc = subprocess.Popen(
        [RLM_MCP, "serve", "--transport", "http", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        with anyio.fail_after(90):
            await _wait_listening(port)
            async with (
                httpx2.AsyncClient() as h1,
                httpx2.AsyncClient() as h2,
                Client(streamable_http_client(url, http_client=h1), mode=mode) as alice,
                Client(streamable_http_client(url, http_client=h2), mode=mode) as bob,
            ):
                first = await alice.call_tool("run_repl", {"code": "secret = 'alice-42'"})
                assert first.structured_content["status"] == "ok", first.content
                session = first.structured_content["session"]
                peek = await bob.call_tool("run_repl", {"code": "print(secret)"})
                assert peek.structured_content["status"] == "error"
                assert "alice-42" not in peek.structured_content["output"]
                # alice continues her own session by passing its name back
                own = await alice.call_tool(
                    "run_repl", {"code": "print(secret)", "session": session}
                )
                assert own.structured_content["output"].strip() == "alice-42"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
