"""What a keyless sub-call costs: the user's `claude` program against the direct API adapter, both
answering from the same loopback fake of the Messages API in the same run.

Rows: one call's latency through `claude -p` and through the Anthropic adapter (the ratio is the
per-call overhead of starting an agent CLI), and 16 calls at concurrency 4 through `claude`.
Codex and the Gemini CLI are not measured: they would need fakes of the Responses and Gemini
APIs, which we do not have. Without `claude` (RLM_MCP_AGENT_BIN or PATH) there are no rows.

    python -m rlm_mcp.bench agents [--quick] [--calls 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from rlm_mcp.bench._table import BenchRow, format_table
from rlm_mcp.lm import ConcurrencyLimit, Message, resolve_lm
from rlm_mcp.testing.fake_provider import FakeProvider

__all__ = ["main", "measure"]


def _claude() -> str | None:
    where = os.environ.get("RLM_MCP_AGENT_BIN")
    if where and os.access(Path(where) / "claude", os.X_OK):
        return str(Path(where) / "claude")
    return shutil.which("claude")


def _home(base_url: str) -> str:
    home = tempfile.mkdtemp(prefix="rlm-bench-home-")
    (Path(home) / ".claude").mkdir()
    env = {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-bench",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    (Path(home) / ".claude" / "settings.json").write_text(json.dumps({"env": env}))
    return home


async def _times(lm: object, calls: int) -> list[float]:
    out = []
    for i in range(calls):
        start = time.perf_counter()
        await lm.complete([Message("user", f"question {i}")])  # type: ignore[attr-defined]
        out.append(time.perf_counter() - start)
    close = getattr(lm, "aclose", None)
    if close is not None:
        await close()
    return out


async def _batch(lm: object, n: int) -> float:
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(lm.complete, [Message("user", f"batch {i}")])  # type: ignore[attr-defined]
    return time.perf_counter() - start


def measure(*, quick: bool = False, calls: int = 5) -> list[BenchRow]:
    exe = _claude()
    if exe is None:
        print("agents: no `claude` program (RLM_MCP_AGENT_BIN or PATH): no rows", file=sys.stderr)
        return []
    calls = 2 if quick else calls
    with FakeProvider() as fake:  # answers "ok" to everything
        env = {"PATH": f"{Path(exe).parent}:/usr/bin:/bin", "HOME": _home(fake.anthropic_base_url)}
        agent = resolve_lm("claude-code", environ=env, executable=exe)
        direct = resolve_lm("anthropic", api_key="k", base_url=fake.anthropic_base_url)
        cli = anyio.run(_times, agent, calls)
        api = anyio.run(_times, direct, calls)
        n = 4 if quick else 16
        batched = resolve_lm("claude-code", environ=env, executable=exe, limit=ConcurrencyLimit(4))
        wall = anyio.run(_batch, batched, n)
    one_cli, one_api = statistics.median(cli), statistics.median(api)
    single = f"one call through `claude -p` (median of {calls})"
    fan = f"{n} calls through `claude`, at most 4 at once"
    return [
        BenchRow("agents", single, one_cli * 1000, "ms", one_api * 1000, "direct API adapter"),
        BenchRow("agents", fan, wall, "s", one_cli * n / 4, "ideal: n/4 x one call"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench agents", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 calls, a batch of 4")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args(argv)
    print(format_table(measure(quick=args.quick, calls=args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
