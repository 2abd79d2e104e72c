"""The session pool under load: warm sessions are never collateral damage, owners never evict or
starve each other, and a caller who cannot get room is told when to retry."""

from __future__ import annotations

import anyio
import pytest

from rlm_mcp.errors import SessionBusyError
from rlm_mcp.runtime import default_max_sessions
from rlm_mcp.sandbox import SandboxLimits, SessionPool

pytestmark = pytest.mark.anyio

LIMITS = SandboxLimits(timeout=5.0, hard_timeout_grace=1.0, memory_mb=256)


async def test_a_warm_session_is_not_closed_for_room_and_the_newcomer_is_told_to_retry() -> None:
    pool = SessionPool(
        limits=LIMITS, max_sessions=1, idle_seconds=3600, grace_seconds=600, wait_seconds=0.2
    )
    try:
        with anyio.fail_after(60):
            async with pool.lease("warm") as warm:
                await warm.execute("v = 41")
            with pytest.raises(SessionBusyError, match=r"retry in \d+ s"):
                async with pool.lease("newcomer"):
                    pass
            async with pool.lease("warm") as again:
                r = await again.execute("print(v + 1)")
            assert r.output == "42\n" and not r.reset
    finally:
        await pool.aclose()


async def test_a_session_idle_past_its_grace_makes_room_for_its_owners_next_one() -> None:
    pool = SessionPool(
        limits=LIMITS, max_sessions=1, idle_seconds=3600, grace_seconds=0.3, wait_seconds=10
    )
    try:
        with anyio.fail_after(60):
            async with pool.lease("old") as old:
                await old.execute("v = 1")
            # waits (bounded) until "old" passes its grace period, then takes its place
            async with pool.lease("new") as new:
                assert (await new.execute("print(2)")).output == "2\n"
            assert "old" not in pool and "new" in pool
    finally:
        await pool.aclose()


async def test_a_spare_session_makes_room_at_once_and_its_next_user_is_told() -> None:
    """A finished rlm_complete run's REPL (a spare) never makes anyone wait for its grace."""
    pool = SessionPool(
        limits=LIMITS, max_sessions=1, idle_seconds=3600, grace_seconds=600, wait_seconds=0.2
    )
    try:
        with anyio.fail_after(60):
            async with pool.lease("run", spare=True) as run:
                await run.execute("v = 1")
            async with pool.lease("newcomer") as new:  # no SessionBusyError: the spare goes
                assert (await new.execute("print(2)")).output == "2\n"
            assert "run" not in pool
        with anyio.fail_after(60):
            with pytest.raises(SessionBusyError):  # the newcomer is warm: it stays
                async with pool.lease("run", spare=True):
                    pass
            await pool.close("newcomer")
            async with pool.lease("run", spare=True) as again:
                r = await again.execute("print(1)")
            assert r.reset and "kept only while there is room" in " ".join(r.notes)
    finally:
        await pool.aclose()


async def test_one_owner_never_evicts_another_owners_session() -> None:
    pool = SessionPool(
        limits=LIMITS,
        max_sessions=2,
        idle_seconds=3600,
        grace_seconds=0,
        wait_seconds=0.2,
        owner_max_sessions=1,
    )
    try:
        with anyio.fail_after(60):
            async with pool.lease("a1", owner="alice") as a1:
                await a1.execute("secret = 'alice'")
            async with pool.lease("b1", owner="bob") as b1:
                await b1.execute("pass")
            # bob is at his share: his own idle session makes room, never alice's
            async with pool.lease("b2", owner="bob") as b2:
                await b2.execute("pass")
            assert "a1" in pool and "b1" not in pool
            async with pool.lease("a1", owner="alice") as again:
                assert (await again.execute("print(secret)")).output == "alice\n"
    finally:
        await pool.aclose()


async def test_an_owners_busy_calls_queue_on_its_own_run_slots_not_on_everyone() -> None:
    pool = SessionPool(
        limits=LIMITS,
        max_sessions=4,
        idle_seconds=3600,
        grace_seconds=0,
        owner_max_sessions=2,
        owner_max_running=1,
    )
    order: list[str] = []
    gate = anyio.Event()

    async def hog(key: str) -> None:
        async with pool.lease(key, owner="hog") as s:
            order.append(f"start {key}")
            if key == "h1":
                await gate.wait()  # holds hog's only run slot until the victim has run
            await s.execute("pass")
            order.append(f"end {key}")

    async def victim() -> None:
        async with pool.lease("v", owner="victim") as s:
            order.append("start v")
            await s.execute("pass")
            order.append("end v")
        gate.set()

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hog, "h1")
                await anyio.sleep(0.2)
                tg.start_soon(hog, "h2")
                await anyio.sleep(0.2)
                tg.start_soon(victim)
    finally:
        await pool.aclose()
    # h2 waited for h1 (same owner, one slot); the victim did not wait for either
    assert order.index("end v") < order.index("start h2")
    assert order.index("start h2") > order.index("end h1")


def test_the_default_session_limit_follows_memory_and_the_worker_limit() -> None:
    gib = 1024**3
    assert default_max_sessions(2048, memory=24 * gib) == 24
    assert default_max_sessions(4096, memory=24 * gib) == 12
    assert default_max_sessions(2048, memory=1 * gib) == 4  # never fewer than 4
    assert default_max_sessions(256, memory=1024 * gib) == 64  # never more than 64
