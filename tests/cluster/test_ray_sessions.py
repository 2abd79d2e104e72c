"""Sessions as Ray actors (`RayPool`), on the real two-node cluster: the relay of llm_query to
the caller, expiry, and the attacks that must fail there exactly as on one machine."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from rlm_mcp.cluster import RayPool
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits
from rlm_mcp.store import ContextStore
from rlm_mcp.testing.infra import Bucket, RayCluster

pytestmark = pytest.mark.anyio


def _pool(bucket: Bucket, ray_nodes: RayCluster, tmp_path: Path, idle: float) -> RayPool:
    url = bucket.url("ray-" + secrets.token_hex(4))
    store = ContextStore(tmp_path / "replica", shared=url, shared_options=bucket.options)
    return RayPool(
        address=ray_nodes.address,
        store=store,
        store_url=url,
        store_options=bucket.options,
        cache_dir=str(tmp_path / "node"),
        limits=SandboxLimits(timeout=20),
        idle_seconds=idle,
    )


@pytest.fixture
async def pool(bucket: Bucket, ray_nodes: RayCluster, tmp_path: Path) -> AsyncIterator[RayPool]:
    made = _pool(bucket, ray_nodes, tmp_path, idle=600)
    yield made
    await made.aclose()  # its standby goes too: the cluster has room for 8 actors


async def test_llm_query_is_answered_by_the_calling_replica(pool: RayPool) -> None:
    info = pool.store.load_text("alpha beta gamma\n" * 100)
    seen: list[tuple[str, int]] = []

    async def model(prompts: Sequence[str], *, model: str | None = None) -> list[str]:
        seen.extend((p, os.getpid()) for p in prompts)  # runs here, in the replica's process
        return [p.upper() for p in prompts]

    key = ("t", secrets.token_hex(4))
    async with pool.lease(key, context=ContextSpec(handle=info.handle)) as s:
        r = await s.execute(
            "a = llm_query(context[:5])\nb = llm_query_batched(['x', 'y'])\nprint(a, b)",
            sub_calls=model,
        )
    assert r.status == "ok", r.error
    assert r.output.strip() == "ALPHA ['X', 'Y']"
    assert [p for p, _ in seen] == ["alpha", "x", "y"]
    assert {pid for _, pid in seen} == {os.getpid()}
    assert r.sub_calls == 3
    await pool.close(key)


async def test_a_failing_model_is_an_exception_in_the_code(pool: RayPool) -> None:
    async def broken(prompts: Sequence[str], *, model: str | None = None) -> list[str]:
        raise RuntimeError("provider said 429: slow down")

    key = ("t", secrets.token_hex(4))
    async with pool.lease(key) as s:
        r = await s.execute(
            "try:\n    llm_query('q')\nexcept RuntimeError as e:\n    print('caught', e)",
            sub_calls=broken,
        )
    assert "caught" in r.output and "429" in r.output
    await pool.close(key)


ATTACKS = [
    "import os",
    "open('/etc/passwd').read()",
    "__import__('os').environ",
    "print(().__class__.__base__.__subclasses__())",
    "import socket",
    "print(getattr(llm_query, '__globals__'))",
]


@pytest.mark.parametrize("code", ATTACKS)
async def test_attacks_fail_in_a_cluster_session_as_they_do_locally(
    pool: RayPool, code: str
) -> None:
    from rlm_mcp.sandbox import SandboxSession

    key = ("t", secrets.token_hex(4))
    async with pool.lease(key) as s:
        r = await s.execute(code)
    async with SandboxSession(limits=pool.limits) as local:
        want = await local.execute(code)
    assert r.status in ("violation", "error"), r
    assert (r.status, r.error) == (want.status, want.error)  # the same refusal, word for word
    await pool.close(key)


async def test_sessions_of_different_keys_never_share_variables(pool: RayPool) -> None:
    alice, bob = ("t", "alice-" + secrets.token_hex(3)), ("t", "bob-" + secrets.token_hex(3))
    async with pool.lease(alice) as s:
        await s.execute("secret = 'alice-secret'")
    async with pool.lease(bob) as s:
        r = await s.execute("print(secret)")
    assert r.status == "error" and "alice-secret" not in r.output
    await pool.close(alice)
    await pool.close(bob)


async def test_an_idle_session_expires_and_its_next_call_says_so(
    bucket: Bucket, ray_nodes: RayCluster, tmp_path: Path
) -> None:
    import anyio

    pool = _pool(bucket, ray_nodes, tmp_path, idle=1)
    key = ("t", secrets.token_hex(4))
    async with pool.lease(key) as s:
        await s.execute("y = 1")
    await anyio.sleep(3.5)  # the actor's own idle timer (checked every 0.5 s) ends it
    async with pool.lease(key) as s:
        r = await s.execute("z = 2")
    assert r.reset is True
    assert any("expired" in n for n in r.notes), r.notes
    await pool.close(key)
    await pool.aclose()


async def test_the_direct_channel_admits_only_the_holder_of_its_secret(pool: RayPool) -> None:
    import asyncio
    import json
    import struct

    key = ("t", secrets.token_hex(4))
    async with pool.lease(key) as s:
        await s.execute("secret_var = 41")
        endpoint = dict(await s.actor.channel.remote())

    async def attempt(hello: dict[str, object]) -> bytes:
        reader, writer = await asyncio.open_connection(endpoint["host"], endpoint["port"])
        for frame in (hello, {"op": "start", "call": "x", "code": "print(secret_var)"}):
            data = json.dumps(frame).encode()
            writer.write(struct.pack(">I", len(data)) + data)
        await writer.drain()
        try:  # a frame, or b"" when the actor closes the connection first
            return await asyncio.wait_for(reader.read(65536), 30)
        finally:
            writer.close()

    assert await attempt({"secret": "0" * 32}) == b""  # closed, nothing ran, nothing said
    assert await attempt({}) == b""
    assert b"41" in await attempt({"secret": endpoint["secret"]})  # the real one works
    await pool.close(key)


async def test_a_new_session_takes_the_standby_and_a_new_one_is_started(pool: RayPool) -> None:
    import anyio

    from rlm_mcp.cluster.actor import record_key
    from rlm_mcp.cluster.pool import session_name

    pool.warm()
    with anyio.fail_after(120):
        while not pool.ready_standbys():
            await anyio.sleep(0.1)
    standby = pool._spares[0][0]
    key = ("t", secrets.token_hex(4))
    async with pool.lease(key) as s:
        r = await s.execute("print(1)")
    assert r.output.strip() == "1"
    record = pool.store.get_record(record_key(session_name(key)))
    assert record == {"state": "live", "actor": standby}  # any replica finds it by this
    with anyio.fail_after(120):
        while not pool.ready_standbys():  # the replacement, started after the session's start
            await anyio.sleep(0.1)
    assert pool._spares[0][0] != standby
    await pool.close(key)
    assert pool.store.get_record(record_key(session_name(key))) is None


async def test_a_replica_knows_the_sessions_it_leased_until_they_close(pool: RayPool) -> None:
    from rlm_mcp.cluster.actor import record_key
    from rlm_mcp.cluster.pool import session_name
    from rlm_mcp.server.identity import SessionKey

    key = SessionKey("connection", None, "conn-" + secrets.token_hex(4), "default")
    async with pool.lease(key) as s:
        await s.execute("x = 1")
    assert key in pool.live_keys()  # what a legacy connection's end closes (AppState)
    await pool.close(key)
    assert key not in pool.live_keys()
    assert pool.store.get_record(record_key(session_name(key))) is None  # its actor is gone


async def test_warm_calls_on_the_same_context_do_not_look_it_up_again(pool: RayPool) -> None:
    import obstore

    from rlm_mcp.store.shared import key_path

    first = pool.store.load_text("first context\n" * 10)
    second = pool.store.load_text("second context\n" * 10)
    key = ("t", secrets.token_hex(4))
    async with pool.lease(key, context=ContextSpec(handle=first.handle)) as s:
        assert (await s.execute("n = len(context)")).status == "ok"
    # the replica has resolved the handle before every call; once the session holds the text,
    # the actor does not ask the bucket again (its metadata gone, a lookup would now fail)
    obstore.delete(pool.store._cache.objects, key_path(f"meta:{first.handle}"))  # type: ignore[attr-defined]
    async with pool.lease(key, context=ContextSpec(handle=first.handle)) as s:
        r = await s.execute("print(n, context[:5])")
    assert r.status == "ok" and r.output.strip() == "140 first", r.error
    async with pool.lease(key, context=ContextSpec(handle=second.handle)) as s:
        r = await s.execute("print(len(context), context[:6])")
    assert r.output.strip() == "150 second"  # a different handle is read, as before
    await pool.close(key)


async def test_a_context_the_session_cannot_read_is_that_error_and_the_session_stays(
    pool: RayPool,
) -> None:
    import obstore

    from rlm_mcp.errors import ContextDamagedError, ContextNotFoundError
    from rlm_mcp.store.shared import key_path

    good = pool.store.load_text("kept\n" * 10)
    damaged = pool.store.load_text("the real text\n" * 100)
    gone = pool.store.load_text("deleted elsewhere\n" * 10)
    objects = pool.store._cache.objects  # type: ignore[attr-defined]
    obstore.put(objects, key_path(f"text:{damaged.handle}"), b"tampered text\n" * 100)
    obstore.delete(objects, key_path(f"meta:{gone.handle}"))
    key = ("t", secrets.token_hex(4))
    async with pool.lease(key, context=ContextSpec(handle=good.handle)) as s:
        assert (await s.execute("x = 41")).status == "ok"
    # the node reads each from the bucket: the same errors as on one machine, not "session lost"
    with pytest.raises(ContextDamagedError, match="set aside"):
        async with pool.lease(key, context=ContextSpec(handle=damaged.handle)) as s:
            await s.execute("x += 1")
    with pytest.raises(ContextNotFoundError, match=gone.handle):
        async with pool.lease(key, context=ContextSpec(handle=gone.handle)) as s:
            await s.execute("x += 1")
    async with pool.lease(key) as s:  # nothing ran, nothing was lost
        r = await s.execute("print(x, context[:4])")
    assert r.status == "ok" and r.output.strip() == "41 kept" and not r.reset, r
    await pool.close(key)


async def test_a_first_attach_reads_the_text_as_it_downloads_and_runs_only_on_a_checked_one(
    pool: RayPool,
) -> None:
    """A new session's worker reads its context while the node downloads it (cluster.feed):
    texts over one frame, ASCII or not, arrive exactly; a text changed in the bucket (framed
    properly, so only its hash can tell) is read whole by the worker and still never seen."""
    import io

    import obstore

    from rlm_mcp.errors import ContextDamagedError
    from rlm_mcp.store import _frames
    from rlm_mcp.store.shared import key_path

    mb = 1024 * 1024
    line, accented = "%08d ascii line\n", "%08d ligne accentuée 東京\n"
    for pattern, size in ((line, 20 * mb), (accented, 3 * mb)):  # 3 frames; not ASCII
        text = "".join(pattern % i for i in range(size // len(pattern % 0)))
        info = pool.store.load_text(text)
        key = ("t", secrets.token_hex(4))
        at = _frames.FRAME_BYTES  # a frame's edge
        async with pool.lease(key, context=ContextSpec(handle=info.handle)) as s:
            r = await s.execute(f"print(len(context), repr(context[{at} - 3:{at} + 3]))")
        assert r.status == "ok", r.error
        assert r.output == f"{len(text)} {text[at - 3 : at + 3]!r}\n"
        await pool.close(key)

    real = "the real text, long enough to take the fast path\n" * (2 * mb // 49)
    damaged = pool.store.load_text(real)
    fake = real.replace("real", "fake").encode()
    tampered = b"".join(_frames.encode(io.BytesIO(fake)))  # a valid object of another text
    obstore.put(pool.store._cache.objects, key_path(f"text:{damaged.handle}"), tampered)  # type: ignore[attr-defined]
    key = ("t", secrets.token_hex(4))
    with pytest.raises(ContextDamagedError, match="set aside"):
        async with pool.lease(key, context=ContextSpec(handle=damaged.handle)) as s:
            await s.execute("print(context[:20])")
    async with pool.lease(key) as s:  # the session stays, and holds none of the fake text
        r = await s.execute("print(repr(context[:20]), 'fake' in context)")
    assert r.status == "ok" and r.output == "'' False\n" and not r.reset, r
    await pool.close(key)
