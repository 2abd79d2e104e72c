"""rlm_complete's continued runs (run_id) and typed answers (answer_schema) through the protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.config import Settings
from rlm_mcp.errors import SessionExpiredError
from rlm_mcp.lm.base import Message
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.server import build_server
from rlm_mcp.server.runs import RunRegistry

MODES = ["auto", "legacy"]
pytestmark = pytest.mark.anyio


def repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def by_question(replies: dict[str, list[str]]) -> ScriptedLM:
    """A root that answers each question with its own script (turn by turn within a run)."""

    def reply(messages: Sequence[Message]) -> str:
        first = messages[1].content
        question = next(q for q in replies if f"The question: {q}" in first)
        turn = sum(1 for m in messages if m.role == "assistant")
        return replies[question][turn]

    return ScriptedLM(reply)


def _server(tmp_path: Path, root: ScriptedLM, **settings: Any) -> Any:
    return build_server(
        Settings(home=tmp_path, **settings), lm_factory=lambda m, s: (root, ScriptedLM(["x"]))
    )


@pytest.mark.parametrize("mode", MODES)
async def test_a_run_id_continues_the_same_repl_with_a_recap(tmp_path: Path, mode: str) -> None:
    root = by_question(
        {
            "count words": [repl("words = context.split()\nn = len(words)"), "FINAL_VAR(n)"],
            "longest?": [repl("best = max(words, key=len)"), "FINAL_VAR(best)"],
        }
    )
    with anyio.fail_after(120):
        async with Client(_server(tmp_path, root), mode=mode) as client:
            loaded = await client.call_tool("load_context", {"text": "ox giraffe cat"})
            handle = loaded.structured_content["handle"]
            first = await client.call_tool(
                "rlm_complete", {"query": "count words", "handle": handle}
            )
            assert not first.is_error, first.content
            got = first.structured_content
            assert got["answer"] == "3" and got["run_id"].startswith("run_")
            assert "partial" not in got  # a final answer
            second = await client.call_tool(
                "rlm_complete", {"query": "longest?", "run_id": got["run_id"]}
            )
            assert not second.is_error, second.content
            assert second.structured_content["answer"] == "giraffe"  # `words` survived
            assert second.structured_content["run_id"] == got["run_id"]
            other = await client.call_tool("rlm_complete", {"query": "count words", "text": "a b"})
            assert other.structured_content["run_id"] != got["run_id"]
    recap = next(c[1].content for c in root.calls if "The question: longest?" in c[1].content)
    assert "Turn 1: question: count words" in recap and "answer (final): 3" in recap


async def test_an_unknown_run_id_is_one_line_that_says_how_to_start_again(tmp_path: Path) -> None:
    root = ScriptedLM(["FINAL(x)"])
    with anyio.fail_after(60):
        async with Client(_server(tmp_path, root)) as client:
            for bad in ("run_" + "0" * 32, "nonsense", "run_../../etc"):
                res = await client.call_tool("rlm_complete", {"query": "q", "run_id": bad})
                assert res.is_error
                text = res.content[0].text
                assert text.startswith("rlm_complete: run_id") and "\n" not in text
                assert "handle or text to start a new run" in text
            res = await client.call_tool("rlm_complete", {"query": "q"})
            assert res.is_error and "give handle or text" in res.content[0].text
    assert root.requests == []


def test_a_run_id_belongs_to_its_tenant_and_expires() -> None:
    from rlm_mcp.conversation import Conversation

    now = [0.0]
    runs = RunRegistry(100.0, clock=lambda: now[0])
    run_id, conv = runs.mint("tenant-a", lambda rid: Conversation())
    assert runs.get("tenant-a", run_id).conversation is conv
    for tenant in ("tenant-b", None):
        with pytest.raises(SessionExpiredError, match="unknown or expired"):
            runs.get(tenant, run_id)
    now[0] = 99.0
    runs.get("tenant-a", run_id)  # use renews it
    now[0] = 198.0
    runs.get("tenant-a", run_id)
    now[0] = 299.0
    with pytest.raises(SessionExpiredError, match="expire after 100s unused"):
        runs.get("tenant-a", run_id)


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["city", "year"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("mode", MODES)
async def test_answer_schema_returns_the_validated_answer_as_answer_json(
    tmp_path: Path, mode: str
) -> None:
    root = ScriptedLM(
        [
            'FINAL({"city": "Oslo", "year": "1624"})',  # wrong type: sent back
            repl("res = {'city': 'Oslo', 'year': 1624}"),
            "FINAL_VAR(res)",
        ]
    )
    with anyio.fail_after(120):
        async with Client(_server(tmp_path, root), mode=mode) as client:
            res = await client.call_tool(
                "rlm_complete",
                {"query": "when was it founded?", "text": "Oslo ... 1624", "answer_schema": SCHEMA},
            )
            assert not res.is_error, res.content
            got = res.structured_content
    assert got["answer_json"] == {"city": "Oslo", "year": 1624}
    assert got["stop_reason"] == "final" and got["iterations"] == 3
    assert "does not match the required JSON Schema" in root.calls[1][-1].content


async def test_an_answer_that_never_fits_the_schema_is_marked_and_has_no_answer_json(
    tmp_path: Path,
) -> None:
    root = ScriptedLM(["FINAL(Oslo, 1624)"] * 3)
    with anyio.fail_after(120):
        async with Client(_server(tmp_path, root)) as client:
            res = await client.call_tool(
                "rlm_complete",
                {"query": "q", "text": "t", "answer_schema": SCHEMA, "max_iterations": 2},
            )
            got = res.structured_content
    assert got["stop_reason"] == "invalid_answer" and got["partial"] is True
    assert "answer_json" not in got and any("schema" in n for n in got["notes"])


async def test_a_bad_answer_schema_is_refused_naming_the_argument(tmp_path: Path) -> None:
    root = ScriptedLM([])
    with anyio.fail_after(60):
        async with Client(_server(tmp_path, root)) as client:
            res = await client.call_tool(
                "rlm_complete",
                {"query": "q", "text": "t", "answer_schema": {"type": 12}},
            )
    assert res.is_error
    text = res.content[0].text
    assert text.startswith("rlm_complete: answer_schema: schema is not a valid JSON Schema")
    assert root.requests == []


async def test_a_partial_answer_says_so_through_the_protocol(tmp_path: Path) -> None:
    root = ScriptedLM([repl("answer['content'] = 'about 40'\n1/0")] * 5)
    with anyio.fail_after(120):
        async with Client(_server(tmp_path, root)) as client:
            res = await client.call_tool(
                "rlm_complete", {"query": "q", "text": "t", "max_errors": 2}
            )
            got = res.structured_content
    assert got["answer"] == "about 40" and got["partial"] is True
    assert got["stop_reason"] == "max_errors" and got["iterations"] == 2


async def test_finished_runs_kept_for_follow_ups_never_lock_other_work_out(
    tmp_path: Path,
) -> None:
    root = ScriptedLM(lambda messages: "FINAL(ok)")
    server = _server(tmp_path, root, max_sessions=2, session_wait_seconds=0.5)
    with anyio.fail_after(120):
        async with Client(server) as client:
            ids = []
            for _ in range(4):  # each leaves its REPL for a follow-up, as a spare
                res = await client.call_tool("rlm_complete", {"query": "q", "text": "t"})
                assert not res.is_error, res.content
                ids.append(res.structured_content["run_id"])
            repl_call = await client.call_tool("run_repl", {"code": "print(1)"})
            assert not repl_call.is_error and repl_call.structured_content["output"] == "1\n"
            # a follow-up of a run whose REPL made room still answers, in a fresh REPL
            again = await client.call_tool("rlm_complete", {"query": "q2", "run_id": ids[0]})
            assert not again.is_error and again.structured_content["answer"] == "ok"


def test_a_run_continues_on_another_replica_from_its_shared_record(tmp_path: Path) -> None:
    """Two registries over one store, as two replicas over one bucket: the turns and the
    context's handle travel, the variables do not, and the recap says so."""
    from rlm_mcp.conversation import Conversation
    from rlm_mcp.store import ContextStore
    from rlm_mcp.store.ref import StoredContext

    store = ContextStore(tmp_path / "shared")
    wall = [1000.0]
    a = RunRegistry(100.0, records=lambda: store, wall=lambda: wall[0])
    b = RunRegistry(100.0, records=lambda: store, wall=lambda: wall[0])
    info = store.load_text("ox giraffe cat")
    run_id, conv = a.mint("tenant-a", lambda rid: Conversation())
    conv.context = StoredContext(store, info.handle)
    conv.record("count words", "3", "final")
    a.save(run_id)

    moved = b.get("tenant-a", run_id, lambda rid: Conversation())
    assert moved.handle == info.handle and moved.conversation.context is None
    assert [t.answer for t in moved.conversation.turns] == ["3"]
    recap = moved.conversation.recap()
    assert "ran on another server" in recap and "may be missing" in recap
    assert "answer (final): 3" in recap
    assert "still defined" in a.get("tenant-a", run_id).conversation.recap()  # A keeps its REPL
    for tenant in ("tenant-b", None):  # another tenant's id looks unknown on every replica
        with pytest.raises(SessionExpiredError):
            RunRegistry(100.0, records=lambda: store).get(tenant, run_id, lambda r: Conversation())
    wall[0] += 101  # the record says when it expires; the store's eviction pass removes it then
    with pytest.raises(SessionExpiredError):
        RunRegistry(100.0, records=lambda: store, wall=lambda: wall[0]).get(
            "tenant-a", run_id, lambda r: Conversation()
        )
    assert store.get_record(("run", run_id)) is not None
    store.evict(now=wall[0])
    assert store.get_record(("run", run_id)) is None


def test_without_a_shared_store_a_run_never_leaves_its_server(tmp_path: Path) -> None:
    from rlm_mcp.conversation import Conversation

    a, b = RunRegistry(100.0), RunRegistry(100.0)
    run_id, _ = a.mint(None, lambda rid: Conversation())
    a.save(run_id)  # a no-op
    with pytest.raises(SessionExpiredError, match="unknown or expired"):
        b.get(None, run_id, lambda rid: Conversation())
