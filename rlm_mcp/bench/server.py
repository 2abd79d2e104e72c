"""Server benchmark: start-up, warm run_repl round trip, and tools/list size.

Each figure has a baseline measured in the same run: a minimal one-tool MCPServer script for
start-up, a no-op tool on the same server for the round trip, the 10,000-char budget for size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.bench._table import BenchRow, format_table
from rlm_mcp.server.models import ReplResult  # module level: the tool's annotation is evaluated

_MINIMAL = """
from mcp.server import MCPServer
m = MCPServer("minimal")
@m.tool()
def noop() -> str:
    return "ok"
m.run()
"""


async def _spawn_to_initialize(command: str, args: list[str], env: dict[str, str]) -> float:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=command, args=args, env=env)
    start = time.perf_counter()
    async with Client(params, mode="legacy"):
        elapsed = time.perf_counter() - start
    return elapsed


async def _measure(quick: bool) -> list[BenchRow]:
    from mcp import Client

    from rlm_mcp.config import Settings
    from rlm_mcp.server import build_server

    runs = 3 if quick else 7
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory() as home:
        env = {"RLM_MCP_HOME": home}
        script = Path(home) / "minimal.py"
        script.write_text(_MINIMAL)
        cmd = str(Path(sys.executable).with_name("rlm-mcp"))
        ours, base = [], []
        for _ in range(runs):
            base.append(await _spawn_to_initialize(sys.executable, [str(script)], env))
            ours.append(await _spawn_to_initialize(cmd, ["serve"], env))
        rows.append(
            BenchRow(
                "server",
                "spawn to initialize (stdio, median)",
                statistics.median(ours),
                "s",
                statistics.median(base),
                "one-tool MCPServer",
                "ratio <= 1.15",
                statistics.median(ours) <= 1.15 * statistics.median(base),
            )
        )

        server = build_server(Settings(home=Path(home)))

        @server.tool()
        async def noop() -> str:
            return "ok"

        @server.tool()
        async def noop_same_type() -> ReplResult:
            # run_repl's result type: the client validates the same output schema
            return ReplResult(
                status="ok",
                output="",
                session="default",
                variables=[],
                truncated=False,
                reset=False,
                usage=None,
            )

        calls = 10 if quick else 50

        async def per_call_ms(
            client: Client, name: str, args: Callable[[int], dict[str, Any]]
        ) -> float:
            t0 = time.perf_counter()
            for i in range(calls):
                await client.call_tool(name, args(i))
            return (time.perf_counter() - t0) / calls * 1000

        async with Client(server) as client:
            await client.call_tool("run_repl", {"code": "x = 1"})
            await client.call_tool("noop", {})
            await client.call_tool("noop_same_type", {})
            repl = await per_call_ms(client, "run_repl", lambda i: {"code": "x += 1"})
            fresh = await per_call_ms(client, "run_repl", lambda i: {"code": f"x += {i + 2}"})
            nop = await per_call_ms(client, "noop", lambda i: {})
            same = await per_call_ms(client, "noop_same_type", lambda i: {})
        rows += [
            BenchRow(
                "server",
                "warm run_repl round trip",
                repl,
                "ms",
                nop,
                "no-op tool",
                "ratio <= 2",
                repl <= 2 * nop,
            ),
            BenchRow(
                "server",
                "warm run_repl, new code each call",
                fresh,
                "ms",
                nop,
                "no-op tool",
            ),
            BenchRow(
                "server",
                "warm run_repl vs a no-op with its result type",
                repl,
                "ms",
                same,
                "no-op returning ReplResult",
            ),
        ]
        async with Client(build_server(Settings(home=Path(home)))) as client:
            size = len((await client.list_tools()).model_dump_json(exclude_none=True))
        rows.append(
            BenchRow(
                "server",
                "tools/list size",
                size,
                "chars",
                10_000.0,
                "budget",
                "<= 10,000 chars",
                size <= 10_000,
            )
        )
        rows.append(BenchRow("server", "tools/list est. tokens (chars/4)", size / 4, "tokens"))
    return rows


def measure(*, quick: bool = False) -> list[BenchRow]:
    """Run the server benchmark and return its rows."""
    return anyio.run(_measure, quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench server")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(format_table(measure(quick=args.quick)))
    return 0
