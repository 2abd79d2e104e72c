"""Sessions and the pool against real workers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from rlm_mcp.errors import SandboxError
from rlm_mcp.sandbox import ContextSpec, SandboxLimits, SandboxSession, SessionPool

pytestmark = pytest.mark.anyio

LIMITS = SandboxLimits(timeout=2.0, hard_timeout_grace=1.0, memory_mb=256, max_output_chars=50)


async def test_state_persists_and_reset_forgets_it() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            await s.execute("x = 41")
            assert (await s.execute("print(x + 1)")).output == "42\n"
            await s.reset()
            r = await s.execute("print(x)")
    assert r.error is not None and r.error.type == "NameError"


async def test_closed_session_refuses_to_run() -> None:
    s = SandboxSession(limits=LIMITS)
    with anyio.fail_after(30):
        await s.execute("pass")
        assert s.is_alive
        await s.close()
    assert not s.is_alive
    with pytest.raises(SandboxError):
        await s.execute("pass")


async def test_context_from_a_file_with_documents_and_set_context(tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("first doc|second")
    spec = ContextSpec(path=path, documents=[("a.txt", 0, 9), ("b.txt", 10, 6)])
    async with SandboxSession(context=spec, limits=LIMITS) as s:
        with anyio.fail_after(30):
            r = await s.execute("keep = 1\nprint(documents[1], document('b.txt'), len(context))")
            assert r.output == "('b.txt', 10, 6) second 16\n"
            await s.set_context(ContextSpec(text="new"))
            r = await s.execute("print(context, keep)")
    assert r.output == "new 1\n"


async def test_missing_context_file_is_a_sandbox_error(tmp_path: Path) -> None:
    s = SandboxSession(context=ContextSpec(path=tmp_path / "nope.txt"), limits=LIMITS)
    with anyio.fail_after(30), pytest.raises(SandboxError, match="context"):
        await s.start()
    await s.close()


async def test_output_cap_note_error_line_and_variables_cross_the_pipe() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            r = await s.execute("for i in range(100):\n    print('0123456789')")
            e = await s.execute("a = [1, 2]\n\nraise ValueError('bad')")
    assert len(r.output) == 50 and r.truncated and r.output_chars == 1100
    assert "truncated" in r.notes[0]
    assert e.status == "error" and e.error is not None
    assert (e.error.type, e.error.message, e.error.line) == ("ValueError", "bad", 3)
    assert [(v.name, v.summary) for v in e.variables] == [("a", "list, 2 items")]


async def test_final_markers_and_variable_text() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            r1 = await s.execute("FINAL('yes')")
            r2 = await s.execute("out = 'v'\nFINAL_VAR('out')")
            r3 = await s.execute("answer = {'content': 'c', 'ready': True}")
            r4 = await s.execute("FINAL_VAR('nothing')")
            text = await s.get_variable_text("out")
            none = await s.get_variable_text("nothing")
    assert r1.final is not None and r1.final.value == "yes"
    assert r2.final is not None and (r2.final.source, r2.final.variable) == ("FINAL_VAR", "out")
    assert r3.final is not None and r3.final.source == "answer"
    assert r4.final is None and r4.error is not None and "out" in r4.error.message
    assert (text, none) == ("v", None)


class Recorder:
    """Test double for SubCallHandler: answers after waiting, records concurrency."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.calls: list[tuple[list[str], str | None]] = []

    async def __call__(self, prompts: Sequence[str], *, model: str | None = None) -> list[str]:
        self.calls.append((list(prompts), model))
        if "fail" in prompts:
            raise RuntimeError("provider down")

        async def one(i: int, p: str) -> None:
            self.active += 1
            self.peak = max(self.peak, self.active)
            await anyio.sleep(0.01)
            self.active -= 1
            out[i] = p.upper()

        out = [""] * len(prompts)
        async with anyio.create_task_group() as tg:
            for i, p in enumerate(prompts):
                tg.start_soon(one, i, p)
        return out


async def test_llm_query_and_batched_reach_the_handler_concurrently() -> None:
    handler = Recorder()
    async with SandboxSession(limits=LIMITS, sub_calls=handler) as s:
        with anyio.fail_after(30):
            r = await s.execute(
                "a = llm_query('x', model='m')\nb = llm_query_batched(['p', 'q', 'r'])\nprint(a, b)"
            )
            err = await s.execute("llm_query('fail')")
    assert r.output == "X ['P', 'Q', 'R']\n"
    assert r.sub_calls == 4
    assert handler.calls[0] == (["x"], "m")
    assert handler.peak == 3
    assert err.error is not None
    assert (err.error.type, err.error.message) == ("RuntimeError", "provider down")


async def test_llm_query_without_handler_is_a_clear_error() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            r = await s.execute("llm_query('x')")
    assert r.error is not None and "no sub-model" in r.error.message


async def test_code_stuck_in_c_is_killed_and_reported_reset() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            await s.execute("kept = 1")
            r = await s.execute("x = sum(range(10**13))")  # a C loop with no signal checks
            after = await s.execute("print(kept)")
    assert r.status == "timeout" and r.reset is True
    assert "every variable" in r.notes[0]
    assert after.error is not None and after.error.type == "NameError"


async def test_cancellation_mid_execute_leaves_a_usable_session() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            with anyio.move_on_after(0.3) as scope:
                await s.execute("while True:\n    pass", timeout=60)
            assert scope.cancelled_caught
            r = await s.execute("print('alive')")
    assert r.output == "alive\n"


async def test_pool_reuses_isolates_caps_and_reaps() -> None:
    pool = SessionPool(limits=LIMITS, max_sessions=2, idle_seconds=3600, grace_seconds=0)
    try:
        with anyio.fail_after(60):
            a = await pool.get("a", context=ContextSpec(text="A"), sub_calls=None)
            await a.execute("v = 'a'")
            assert await pool.get("a", context=ContextSpec(text="A"), sub_calls=None) is a
            b = await pool.get("b", context=None, sub_calls=None)
            await b.execute("pass")  # b is now more recent than a
            again = await pool.get("a", context=ContextSpec(text="A2"), sub_calls=None)
            assert (await again.execute("print(context, v)")).output == "A2 a\n"
            await pool.get("c", context=None, sub_calls=None)  # cap: oldest idle (b) closed
            assert len(pool) == 2 and "b" not in pool and "a" in pool
            assert not b.is_alive
            pool.idle_seconds = 0
            assert await pool.reap_idle() == 2
            assert len(pool) == 0
    finally:
        await pool.aclose()


async def test_pool_never_closes_a_busy_session_and_a_new_caller_waits_for_room() -> None:
    # Six callers at once on a pool of three once closed running sessions under their code
    # ("this sandbox session is closed"); now the extra callers wait and every call succeeds.
    pool = SessionPool(limits=LIMITS, max_sessions=3, idle_seconds=3600, grace_seconds=0)
    results: dict[str, str] = {}
    live: list[int] = []

    async def one(key: str) -> None:
        async with pool.lease(key) as sess:
            live.append(len(pool))
            r = await sess.execute("x = sum(range(300_000))\nprint(x % 7)")
            results[key] = r.output if r.status == "ok" else f"{r.status}: {r.error}"

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(one, f"p{i}")
    finally:
        await pool.aclose()
    assert results == {f"p{i}": f"{sum(range(300_000)) % 7}\n" for i in range(6)}
    assert max(live) <= 3


async def test_a_session_closed_for_room_or_idleness_says_so_on_its_next_call() -> None:
    pool = SessionPool(limits=LIMITS, max_sessions=1, idle_seconds=3600, grace_seconds=0)
    try:
        with anyio.fail_after(60):
            async with pool.lease("a") as a:
                await a.execute("v = 1")
            async with pool.lease("b") as b:  # closes a: the only slot
                await b.execute("w = 2")
            async with pool.lease("a") as a2:
                r = await a2.execute("pass")
            assert r.reset and "RLM_MCP_MAX_SESSIONS" in r.notes[0]
            assert "variables are gone" in r.notes[0]
            async with pool.lease("a") as a3:
                assert not (await a3.execute("pass")).notes  # told once
            pool.idle_seconds = 0
            await pool.reap_idle()
            async with pool.lease("a") as a4:
                r = await a4.execute("pass")
            assert r.reset and "idle" in r.notes[0] and "RLM_MCP_SESSION_IDLE_SECONDS" in r.notes[0]
    finally:
        await pool.aclose()


async def test_a_call_without_a_context_keeps_the_one_the_session_has() -> None:
    pool = SessionPool(limits=LIMITS, max_sessions=2, idle_seconds=3600)
    try:
        with anyio.fail_after(60):
            async with pool.lease("a", context=ContextSpec(text="loaded")) as sess:
                await sess.execute("pass")
            async with pool.lease("a") as sess:
                r = await sess.execute("print(context)")
    finally:
        await pool.aclose()
    assert r.output == "loaded\n"


async def test_worker_environment_holds_no_parent_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_mcp.sandbox.session import _worker_env

    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    env = _worker_env()
    assert "OPENAI_API_KEY" not in env and "HOME" not in env
    assert set(env) <= {"PATH", "LC_ALL"}


async def test_soft_timeout_runs_finally_blocks_and_keeps_what_they_did() -> None:
    code = (
        "state = 'started'\n"
        "try:\n"
        "    while True:\n"
        "        pass\n"
        "finally:\n"
        "    state = 'cleaned up'\n"
        "    print('finally ran')\n"
    )
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            r = await s.execute(code, timeout=0.5)
            after = await s.execute("print(state)")
    assert (r.status, r.reset) == ("timeout", False)
    assert r.error is not None and r.error.type == "TimeoutError" and r.error.line in (3, 4)
    assert "variables kept" in r.error.message
    assert r.output == "finally ran\n"
    assert [(v.name, v.summary) for v in r.variables] == [("state", "str, 10 chars")]
    assert after.output == "cleaned up\n"


class Slow:
    """A sub-model that answers after `delay` seconds (or never)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cancelled = 0

    async def __call__(self, prompts: Sequence[str], *, model: str | None = None) -> list[str]:
        try:
            await anyio.sleep(self.delay)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        return ["late" for _ in prompts]


async def test_timeout_during_a_sub_call_keeps_the_session_and_the_frames_in_step() -> None:
    limits = SandboxLimits(timeout=0.5, hard_timeout_grace=3.0, memory_mb=256)
    handler = Slow(60)
    async with SandboxSession(limits=limits, sub_calls=handler) as s:
        with anyio.fail_after(30):
            await s.execute("kept = 7")
            r = await s.execute("x = llm_query('slow')")
            a = await s.execute("print(kept)")
            b = await s.execute("print(kept + 1)")
    assert (r.status, r.reset) == ("timeout", False)
    assert handler.cancelled == 1
    assert (a.output, b.output) == ("7\n", "8\n")


async def test_cancellation_interrupts_softly_and_keeps_variables() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            await s.execute("kept = 'yes'")
            with anyio.move_on_after(0.3) as scope:
                await s.execute(
                    "try:\n    while True:\n        pass\nfinally:\n    tidy = 1", timeout=60
                )
            assert scope.cancelled_caught
            assert s.last_cancellation == "interrupted"
            r = await s.execute("print(kept, tidy)")
            again = await s.execute("print('clean')")
    assert r.output == "yes 1\n" and r.reset is False
    assert "cancelled" in r.notes[0] and "variables kept" in r.notes[0]
    assert again.notes == ()


async def test_cancellation_of_code_stuck_in_c_kills_after_the_grace_period() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            await s.execute("kept = 1")
            with anyio.move_on_after(0.3):
                await s.execute("x = sum(range(10**13))", timeout=60)
            assert s.last_cancellation == "killed"
            r = await s.execute("print(kept)")
    assert r.reset is True and "every variable" in r.notes[0]
    assert r.error is not None and r.error.type == "NameError"


async def test_cancellation_during_a_sub_call_interrupts_softly() -> None:
    handler = Slow(3600)
    async with SandboxSession(limits=LIMITS, sub_calls=handler) as s:
        with anyio.fail_after(30):
            await s.execute("kept = 3")
            with anyio.move_on_after(0.3):
                await s.execute(
                    "while True:\n    try:\n        llm_query('x')\n"
                    "    except Exception:\n        pass",
                    timeout=60,
                )
            r = await s.execute("print(kept)")
    assert s.last_cancellation == "interrupted"
    assert handler.cancelled == 1
    assert (r.output, r.reset) == ("3\n", False)


async def test_sub_call_count_per_execute_is_capped_with_a_clear_error() -> None:
    limits = SandboxLimits(timeout=10, hard_timeout_grace=1.0, memory_mb=256, max_sub_calls=5)
    handler = Recorder()
    async with SandboxSession(limits=limits, sub_calls=handler) as s:
        with anyio.fail_after(30):
            r = await s.execute("for i in range(1000000):\n    llm_query(str(i))")
            batch = await s.execute("llm_query_batched(['a'] * 6)")
            fine = await s.execute("print(len(llm_query_batched(['a'] * 5)))")
    assert r.status == "error" and r.error is not None and r.error.line == 2
    assert "at most 5 sub-calls per execute" in r.error.message
    assert "SandboxLimits.max_sub_calls" in r.error.message
    assert r.sub_calls == 5 and len(handler.calls) == 5 + 1
    assert batch.error is not None and "6 more asked" in batch.error.message
    assert fine.output == "5\n"


async def test_sub_call_prompt_size_is_capped_with_a_clear_error() -> None:
    limits = SandboxLimits(timeout=10, hard_timeout_grace=1.0, memory_mb=256, max_prompt_chars=100)
    handler = Recorder()
    async with SandboxSession(limits=limits, sub_calls=handler) as s:
        with anyio.fail_after(30):
            r = await s.execute("llm_query('x' * 101)")
    assert r.error is not None and "101 characters" in r.error.message
    assert "max_prompt_chars" in r.error.message
    assert handler.calls == []


async def test_reset_after_a_cancellation_drops_the_stale_note() -> None:
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            with anyio.move_on_after(0.3):
                await s.execute("while True:\n    pass", timeout=60)
            await s.reset()
            r = await s.execute("print('fresh')")
    assert s.last_cancellation == "interrupted"
    assert (r.output, r.notes, r.reset) == ("fresh\n", (), False)


async def test_printing_a_lone_surrogate_keeps_the_worker_and_its_variables() -> None:
    # '\ud800' is a valid str but not UTF-8: it once killed the worker when its reply was framed
    async with SandboxSession(limits=LIMITS) as s:
        with anyio.fail_after(30):
            await s.execute("kept = 7")
            r = await s.execute("print('a\\ud800b')\nFINAL('\\udcff')")
            after = await s.execute("print(kept)")
    assert r.status == "ok" and not r.reset
    assert r.output == "a\ufffdb\n"
    assert r.final is not None and r.final.value == "\ufffd"
    assert after.output == "7\n"
