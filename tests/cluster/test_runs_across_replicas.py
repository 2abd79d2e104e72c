"""An rlm_complete follow-up that the balancer sends to another replica: two servers over one
real SeaweedFS bucket, each with its own pool, driven through MCP clients."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from test_server_runs import by_question, repl  # the same scripted root, per question

from rlm_mcp.config import Settings
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.server import build_server
from rlm_mcp.testing.infra import Bucket

pytestmark = pytest.mark.anyio


def _replica(home: Path, url: str, bucket: Bucket, root: ScriptedLM) -> Any:
    return build_server(
        Settings(home=home, store=url),
        lm_factory=lambda m, s: (root, ScriptedLM(["x"])),
        environ=bucket.env(),
    )


async def test_a_follow_up_on_another_replica_continues_the_run(
    bucket: Bucket, tmp_path: Path
) -> None:
    url = bucket.url("runs-" + secrets.token_hex(4))
    script = {
        "count words": [repl("words = context.split()\nn = len(words)"), "FINAL_VAR(n)"],
        # on B the REPL is fresh: the model is told, and recomputes from `context`
        "longest?": [repl("best = max(context.split(), key=len)"), "FINAL_VAR(best)"],
        "first word": [repl("w = context.split()[0]"), "FINAL_VAR(w)"],
    }
    root_a, root_b = by_question(script), by_question(script)
    a = _replica(tmp_path / "a", url, bucket, root_a)
    b = _replica(tmp_path / "b", url, bucket, root_b)
    with anyio.fail_after(120):
        async with Client(a) as on_a, Client(b) as on_b:
            loaded = await on_a.call_tool("load_context", {"text": "ox giraffe cat"})
            handle = loaded.structured_content["handle"]
            first = await on_a.call_tool("rlm_complete", {"query": "count words", "handle": handle})
            run_id = first.structured_content["run_id"]
            second = await on_b.call_tool("rlm_complete", {"query": "longest?", "run_id": run_id})
            assert not second.is_error, second.content
            assert second.structured_content["answer"] == "giraffe"
            assert second.structured_content["run_id"] == run_id
            # and back on A, which kept its REPL: the turn B answered is in A's recap too, marked
            third = await on_a.call_tool("rlm_complete", {"query": "first word", "run_id": run_id})
            assert third.structured_content["answer"] == "ox", third.content

            inline = await on_a.call_tool("rlm_complete", {"query": "count words", "text": "a b"})
            moved = await on_b.call_tool(
                "rlm_complete", {"query": "longest?", "run_id": inline.structured_content["run_id"]}
            )
            assert moved.is_error and "send the text again" in moved.content[0].text
    recap_b = next(c[1].content for c in root_b.calls if "The question: longest?" in c[1].content)
    assert "ran on another server" in recap_b and "answer (final): 3" in recap_b
    recap_a = next(c[1].content for c in root_a.calls if "The question: first word" in c[1].content)
    assert "some or all of which ran on another server" in recap_a
    assert "answer (final): 3" in recap_a and "answer (final): giraffe" in recap_a
