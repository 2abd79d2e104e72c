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
    assert [r.case for r in rows][:3] == [
        "spawn to initialize (stdio, median)",
        "warm run_repl round trip",
        "tools/list size",
    ]
    assert all(r.measured > 0 for r in rows)
