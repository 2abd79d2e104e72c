"""One size budget for the whole result, through stdio (how the 16-80 MB results came back)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

RLM_MCP = shutil.which("rlm-mcp") or str(Path(sys.executable).with_name("rlm-mcp"))

pytestmark = pytest.mark.anyio

BUDGET = 100_000  # the default RLM_MCP_MAX_RESULT_CHARS


@asynccontextmanager
async def _stdio(tmp_path: Path, **env: str) -> AsyncIterator[Any]:
    params = StdioServerParameters(
        command=RLM_MCP, args=["serve"], env={"RLM_MCP_HOME": str(tmp_path), **env}
    )
    async with Client(params) as client:
        yield client


def _size(res: Any) -> int:
    """Characters on the wire for a result: structured content plus every text block."""
    texts = sum(len(c.text) for c in res.content if c.type == "text")
    return len(json.dumps(res.structured_content)) + texts


@pytest.mark.parametrize(
    "code",
    [
        "FINAL('F' * 40_000_000)",
        "from collections import namedtuple\nT = namedtuple('T' * 10_000_000, 'a')\nt = T(1)",
        "\n".join(f"v{i} = {i}" for i in range(150_000)),
        "x = (\n" * 30_000 + "1",
        "1 +* 2\n" * 40_000,
    ],
    ids=["final-80MB", "type-name-10M", "150k-assignments", "deep-source", "300KB-invalid"],
)
async def test_no_run_repl_result_exceeds_the_budget(tmp_path: Path, code: str) -> None:
    with anyio.fail_after(120):
        async with _stdio(tmp_path) as client:
            res = await client.call_tool("run_repl", {"code": code})
            assert _size(res) < 2 * BUDGET + 10_000, _size(res)
            follow = await client.call_tool("run_repl", {"code": "print('next')"})
            assert _size(follow) < 5_000


async def test_a_persistent_ready_answer_is_not_sent_again_on_every_call(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with _stdio(tmp_path) as client:
            first = await client.call_tool(
                "run_repl", {"code": "answer = {'ready': True, 'content': 'Q' * 20_000_000}"}
            )
            assert _size(first) < 2 * BUDGET + 10_000
            for _ in range(3):
                later = await client.call_tool("run_repl", {"code": "print(1)"})
                assert _size(later) < 5_000
                assert "final" not in later.structured_content


async def test_a_huge_final_answer_is_stored_once_and_can_be_sliced(tmp_path: Path) -> None:
    with anyio.fail_after(120):
        async with _stdio(tmp_path) as client:
            res = await client.call_tool("run_repl", {"code": "FINAL('ab' * 1_000_000)"})
            got = res.structured_content
            stored = got["final_context"]
            assert stored.startswith("ctx_") and stored in got["final"]
            part = await client.read_resource(f"rlm://contexts/{stored}/chars/1999990-2000000")
            assert part.contents[0].text == "ab" * 5
            links = [c.uri for c in res.content if c.type == "resource_link"]
            assert links == [f"rlm://contexts/{stored}"]
