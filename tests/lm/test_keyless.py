"""No API key anywhere: the server, started like a desktop client starts it, finds the user's
logged-in `claude` on PATH (`auto`) and answers rlm_complete and llm_query_batched through it.

The real Claude Code CLI runs offline against the loopback fake of the Messages API; its login is
in `$HOME/.claude/settings.json`, so the server's own environment holds no key at all.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from rlm_mcp.testing.fake_provider import FakeProvider

from .test_agent_cli import agent_bin, logged_in_home

pytestmark = pytest.mark.anyio

RLM_MCP = shutil.which("rlm-mcp") or str(Path(sys.executable).with_name("rlm-mcp"))
CODE = "answers = llm_query_batched(['capital of France?', 'capital of Italy?'])\nprint(answers)"


def reply(request: dict[str, Any]) -> str:
    """The root writes code, then answers; each sub-call names a capital."""
    text = json.dumps(request.get("messages", []))
    if "<system>" in text:  # a root turn: our system prompt travels in the transcript
        return "FINAL_VAR(answers)" if "Block 1" in text else f"```repl\n{CODE}\n```"
    return "Paris" if "France" in text else "Rome"


async def test_rlm_complete_and_run_repl_through_the_users_claude_with_no_key(
    tmp_path: Path,
) -> None:
    exe = agent_bin("claude")
    with FakeProvider(reply) as fake:
        home = logged_in_home(tmp_path, fake)
        env = {
            "PATH": f"{exe.parent}:/usr/bin:/bin",
            "HOME": str(home),
            "RLM_MCP_HOME": str(tmp_path / "data"),
            "RLM_MCP_BACKEND": "auto",
        }
        params = StdioServerParameters(command=RLM_MCP, args=["serve"], env=env)
        with anyio.fail_after(180):
            async with Client(params) as client:
                repl = await client.call_tool("run_repl", {"code": CODE})
                done = await client.call_tool(
                    "rlm_complete", {"query": "Capitals?", "text": "France and Italy"}
                )
    assert not repl.is_error, repl.content
    assert repl.structured_content["output"] == "['Paris', 'Rome']\n"
    assert repl.structured_content["usage"]["total_calls"] == 2
    assert not done.is_error, done.content
    got = done.structured_content
    assert got["answer"] == "['Paris', 'Rome']" and got["stop_reason"] == "final"
    assert got["usage"]["total_calls"] == 4  # two root turns, two sub-calls
    assert got["usage"]["total_cost"] > 0  # Claude Code reports its cost
