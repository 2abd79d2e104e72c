"""Server behaviour beyond the basic round trips: llm_query inside run_repl (provider, sampling,
missing key), isolation between clients, error masking, load progress, trajectory resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import CreateMessageResult, TextContent

from rlm_mcp.config import Settings
from rlm_mcp.errors import SessionExpiredError
from rlm_mcp.lm.scripted import ScriptedLM
from rlm_mcp.server import build_server
from rlm_mcp.server.identity import Caller, SessionRegistry

pytestmark = pytest.mark.anyio


def _echo_sub() -> ScriptedLM:
    return ScriptedLM(lambda messages: "ANSWER:" + messages[-1].content.upper())


async def test_llm_query_inside_run_repl_uses_the_sub_model_and_reports_usage(
    tmp_path: Path,
) -> None:
    sub = _echo_sub()
    server = build_server(Settings(home=tmp_path), lm_factory=lambda m, s: (sub, sub))
    with anyio.fail_after(120):
        async with Client(server) as client:
            res = await client.call_tool(
                "run_repl",
                {"code": "a = llm_query('hi')\nb = llm_query_batched(['x', 'y'])\nprint(a, b)"},
            )
            assert not res.is_error, res.content
            out = res.structured_content
            assert out["output"].strip() == "ANSWER:HI ['ANSWER:X', 'ANSWER:Y']"
            assert out["sub_calls"] == 3
            assert out["usage"]["total_calls"] == 3
            # a call without llm_query reports no usage: usage is per call, not cumulative
            again = await client.call_tool("run_repl", {"code": "print(a)"})
            assert "usage" not in again.structured_content  # left out at its default


async def test_concurrent_run_repl_calls_on_one_session_each_report_their_own_usage(
    tmp_path: Path,
) -> None:
    # the session runs them one after another; each call's llm_query calls (1, 2, 3 ... of
    # them) must be counted in that call's result, never in a neighbour's
    sub = _echo_sub()
    server = build_server(Settings(home=tmp_path), lm_factory=lambda m, s: (sub, sub))
    results: dict[int, dict[str, Any]] = {}

    async def call(client: Client, n: int) -> None:
        code = f"r{n} = llm_query_batched([str(i) for i in range({n})])\nprint(len(r{n}))"
        res = await client.call_tool("run_repl", {"code": code})
        assert not res.is_error, res.content
        results[n] = res.structured_content or {}

    with anyio.fail_after(120):
        async with Client(server) as client, anyio.create_task_group() as tg:
            for n in range(1, 6):
                tg.start_soon(call, client, n)
    for n, out in results.items():
        assert out["output"].strip() == str(n)
        assert (out["sub_calls"], out["usage"]["total_calls"]) == (n, n)
    assert len(sub.calls) == 15


async def test_llm_query_inside_run_repl_without_a_key_says_where_to_put_it(
    tmp_path: Path,
) -> None:
    server = build_server(Settings(home=tmp_path), environ={})
    with anyio.fail_after(120):
        async with Client(server) as client:
            res = await client.call_tool("run_repl", {"code": "x = 1\nllm_query('hi')"})
            assert not res.is_error
            out = res.structured_content
            assert out["status"] == "error"
            assert "OPENAI_API_KEY" in out["error"]
            # the MCP advice (the client config's "env" block), not the CLI's --backend flag
            assert '"env" block' in out["error"] and "--backend" not in out["error"]
            ok = await client.call_tool("run_repl", {"code": "print(x + 1)"})
            assert ok.structured_content["output"].strip() == "2"


async def _sampler(context: Any, params: Any) -> CreateMessageResult:
    prompt = params.messages[-1].content.text
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=f"sampled:{len(prompt)}"),
        model="client-model",
    )


async def test_sampling_backend_answers_llm_query_with_the_clients_model(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="sampling")
    with anyio.fail_after(120):
        async with Client(
            build_server(settings), mode="legacy", sampling_callback=_sampler
        ) as client:
            res = await client.call_tool("run_repl", {"code": "print(llm_query('abcd'))"})
            assert not res.is_error, res.content
            assert res.structured_content["output"].strip() == "sampled:4"
            usage = res.structured_content["usage"]
            assert usage["total_calls"] == 1
            q = await client.call_tool("llm_query", {"prompt": "hello"})
            assert q.structured_content["text"] == "sampled:5"


@pytest.mark.parametrize("backend", ["sampling", "auto"])
async def test_the_modern_protocol_samples_llm_query_through_a_round_trip(
    tmp_path: Path, backend: str
) -> None:
    # 2026-07-28 has no server-to-client requests: the tool returns an input request, the
    # client samples and calls again (multi-round-trip); code in run_repl cannot wait for that
    settings = Settings(home=tmp_path, backend=backend)
    with anyio.fail_after(120):
        async with Client(build_server(settings, environ={}), sampling_callback=_sampler) as client:
            assert client.protocol_version == "2026-07-28"
            q = await client.call_tool("llm_query", {"prompt": "hello"})
            assert not q.is_error, q.content
            assert q.structured_content["text"] == "sampled:5"
            assert any("estimated" in n for n in q.structured_content["notes"])
            res = await client.call_tool("run_repl", {"code": "print(llm_query('abcd'))"})
            text = res.structured_content.get("error") or ""
            assert "round trip" in text and "llm_query tool" in text


async def test_two_legacy_clients_never_see_each_others_variables(tmp_path: Path) -> None:
    server = build_server(Settings(home=tmp_path))
    with anyio.fail_after(120):
        async with (
            Client(server, mode="legacy") as alice,
            Client(server, mode="legacy") as bob,
        ):
            set_ = await alice.call_tool("run_repl", {"code": "secret = 'alice-42'"})
            assert set_.structured_content["status"] == "ok"
            peek = await bob.call_tool("run_repl", {"code": "print(secret)"})
            assert peek.structured_content["status"] == "error"
            assert "alice-42" not in json.dumps(peek.structured_content)
            own = await alice.call_tool("run_repl", {"code": "print(secret)"})
            assert own.structured_content["output"].strip() == "alice-42"


def test_modern_http_calls_without_a_session_get_a_fresh_unguessable_one() -> None:
    registry = SessionRegistry(idle_seconds=60)
    alice = Caller(tenant="t", legacy=False, http=True)
    k1, n1 = registry.key_for(alice, None)
    k2, n2 = registry.key_for(alice, None)
    assert n1 != n2 and k1 != k2
    assert n1.startswith("sess_") and len(n1) == len("sess_") + 32  # 128 random bits
    # passing the returned handle back reaches the same session
    assert registry.key_for(alice, n1)[0] == k1
    # the same handle from another tenant is refused, not a session of its own
    with pytest.raises(SessionExpiredError, match="unknown or expired"):
        registry.key_for(Caller(tenant="u", legacy=False, http=True), n1)


async def test_an_unexpected_exception_becomes_a_readable_tool_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(model: str | None, sub: str | None) -> Any:
        raise ZeroDivisionError("boom in a factory")

    server = build_server(Settings(home=tmp_path), lm_factory=broken)
    with anyio.fail_after(60):
        async with Client(server) as client:
            res = await client.call_tool("rlm_complete", {"query": "q", "text": "t"})
            assert res.is_error
            text = res.content[0].text
            assert "ZeroDivisionError: boom in a factory" in text
            assert "bug in rlm-mcp" in text
            assert "Traceback" not in text
            ok = await client.call_tool("list_contexts", {})
            assert not ok.is_error
    assert any(r.exc_info for r in caplog.records if "rlm_complete" in r.getMessage())


async def test_loading_a_big_file_reports_progress(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("line of text\n" * 1_000_000)  # 13 MB: several 4 MB chunks
    seen: list[tuple[float, float | None]] = []

    async def progress(p: float, total: float | None, msg: str | None) -> None:
        seen.append((p, total))

    with anyio.fail_after(120):
        async with Client(build_server(Settings(home=tmp_path / "home"))) as client:
            res = await client.call_tool(
                "load_context", {"path": str(big)}, progress_callback=progress
            )
            assert not res.is_error, res.content
            assert res.structured_content["lines"] == 1_000_000
    assert len(seen) >= 2
    assert seen[-1][0] == seen[-1][1] == big.stat().st_size


async def test_finished_runs_are_resources_and_run_ids_cannot_escape(tmp_path: Path) -> None:
    script = ["```repl\nprint(len(context))\n```", "FINAL(done)"]
    server = build_server(
        Settings(home=tmp_path), lm_factory=lambda m, s: (ScriptedLM(script), None)
    )
    (tmp_path / "secret.jsonl").write_text('{"key": "sk-live"}\n')
    with anyio.fail_after(120):
        async with Client(server) as client:
            res = await client.call_tool("rlm_complete", {"query": "q", "text": "abc"})
            assert not res.is_error, res.content
            uri = res.structured_content["trajectory_resource"]
            assert uri.startswith("rlm://trajectories/rlm_")
            listed = json.loads((await client.read_resource("rlm://trajectories")).contents[0].text)
            assert [r["uri"] for r in listed] == [uri]
            body = (await client.read_resource(uri)).contents[0].text
            kinds = [json.loads(line)["type"] for line in body.splitlines()]
            assert kinds[0] == "config" and kinds[-1] == "result"
            page = (await client.read_resource(uri + "/view")).contents[0]
            assert page.mime_type == "text/html"
            assert page.text.lstrip().lower().startswith("<!doctype html")
            for bad in ("rlm://trajectories/..%2Fsecret", "rlm://trajectories/secret"):
                with pytest.raises(Exception) as err:
                    await client.read_resource(bad)
                assert "sk-live" not in str(err.value)


async def test_rlm_complete_can_run_entirely_on_the_clients_model(tmp_path: Path) -> None:
    replies = iter(["```repl\nprint(context.count('a'))\n```", "FINAL(three)"])

    async def root(context: Any, params: Any) -> CreateMessageResult:
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=next(replies)), model="m"
        )

    settings = Settings(home=tmp_path, backend="sampling")
    with anyio.fail_after(120):
        async with Client(build_server(settings), mode="legacy", sampling_callback=root) as c:
            res = await c.call_tool("rlm_complete", {"query": "how many a?", "text": "aaa"})
            assert not res.is_error, res.content
            out = res.structured_content
            assert out["answer"] == "three"
            assert out["iterations"] == 2
            assert out["usage"]["total_calls"] == 2


async def test_cancelling_run_repl_stops_the_code_and_keeps_the_sessions_variables(
    tmp_path: Path,
) -> None:
    server = build_server(Settings(home=tmp_path, exec_timeout=300.0))
    with anyio.fail_after(120):
        async with Client(server, mode="legacy") as client:
            await client.call_tool("run_repl", {"code": "kept = 41"})
            with anyio.move_on_after(1.0) as scope:
                await client.call_tool("run_repl", {"code": "while True:\n    kept += 0"})
            assert scope.cancelled_caught
            after = await client.call_tool("run_repl", {"code": "print(kept + 1)"})
            out = after.structured_content
            assert out["status"] == "ok", out
            assert out["output"].strip() == "42"


async def test_run_repl_reports_notes_and_enforces_the_sub_call_cap(tmp_path: Path) -> None:
    sub = _echo_sub()
    settings = Settings(home=tmp_path, max_sub_calls=2, max_output_chars=200)
    server = build_server(settings, lm_factory=lambda m, s: (sub, sub))
    with anyio.fail_after(120):
        async with Client(server) as client:
            long = await client.call_tool("run_repl", {"code": "print('x' * 5000)"})
            out = long.structured_content
            assert out["truncated"] is True and out["notes"], out
            capped = await client.call_tool(
                "run_repl", {"code": "llm_query_batched(['a', 'b', 'c'])"}
            )
            err = capped.structured_content["error"]
            assert "max_sub_calls" in err or "RLM_MCP_MAX_SUB_CALLS" in err, err
            assert sub.calls == []  # refused before any model call was paid for


async def test_load_context_honours_allowed_paths_and_the_context_size_cap(tmp_path: Path) -> None:
    # both come from the server's settings (RLM_MCP_ALLOWED_PATHS, RLM_MCP_MAX_CONTEXT_BYTES)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "small.txt").write_text("ok\n")
    (allowed / "big.txt").write_text("x" * 5000)
    (tmp_path / "private.txt").write_text("private\n")
    settings = Settings.from_env(
        {"RLM_MCP_ALLOWED_PATHS": str(allowed), "RLM_MCP_MAX_CONTEXT_BYTES": "4096"},
        home=tmp_path / "home",
    )
    with anyio.fail_after(60):
        async with Client(build_server(settings)) as client:
            ok = await client.call_tool("load_context", {"path": str(allowed / "small.txt")})
            assert not ok.is_error, ok.content
            refused = await client.call_tool(
                "load_context", {"path": str(tmp_path / "private.txt")}
            )
            assert refused.is_error
            text = refused.content[0].text  # type: ignore[union-attr]
            assert "outside the folders this server may read" in text
            big = await client.call_tool("load_context", {"path": str(allowed / "big.txt")})
            assert big.is_error and "4,096-byte limit" in big.content[0].text  # type: ignore[union-attr]


async def test_load_context_reports_how_many_bytes_were_undecodable(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("café olé\n".encode("latin-1"))
    (tmp_path / "utf8.txt").write_text("café olé\n")
    with anyio.fail_after(60):
        async with Client(build_server(Settings(home=tmp_path / "home"))) as client:
            bad = await client.call_tool("load_context", {"path": str(tmp_path / "latin1.txt")})
            good = await client.call_tool("load_context", {"path": str(tmp_path / "utf8.txt")})
    assert (bad.structured_content or {})["replaced"] == 2
    assert "replaced" not in (good.structured_content or {})
