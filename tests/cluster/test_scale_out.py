"""Two `rlm-mcp serve --stateless` replicas behind a real HAProxy, over real SeaweedFS and a real
two-node Ray cluster: the scenario a team running a shared server depends on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.testing import infra
from rlm_mcp.testing.fake_provider import FakeProvider

ERRORS_EVERY = 997


def _big_log(path: Path, megabytes: int) -> int:
    """A log of about `megabytes` MB; returns how many ERROR lines it has."""
    block = []
    errors = 0
    for i in range(20_000):
        level = "ERROR" if i % ERRORS_EVERY == 0 else "INFO"
        errors += level == "ERROR"
        block.append(f"2026-12-05 10:{i % 60:02d} {level} worker-{i % 7} request {i} done é\n")
    chunk = "".join(block).encode()
    reps = max(1, megabytes * 1024 * 1024 // len(chunk))
    with path.open("wb") as fh:
        for _ in range(reps):
            fh.write(chunk)
    return errors * reps


def _root_reply(request: dict[str, Any]) -> str:
    return "```repl\nFINAL(str(context.count(' ERROR ')))\n```"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(_root_reply) as f:
        yield f


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[Any]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(timeout=120) as h,
        Client(streamable_http_client(url, http_client=h), mode="auto") as c,
    ):
        yield c


async def _repl(url: str, code: str, session: str | None = None, **extra: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"code": code, **extra}
    if session is not None:
        args["session"] = session
    async with _client(url) as c:
        res = await c.call_tool("run_repl", args)
    assert not res.is_error, res.content
    return dict(res.structured_content)


def _text_object(bucket: infra.Bucket, prefix: str, handle: str) -> dict[str, Any]:
    import obstore

    from rlm_mcp.store.shared import key_path

    return dict(obstore.head(bucket.objects(prefix), key_path(f"text:{handle}")))


@pytest.mark.anyio
async def test_two_replicas_behind_haproxy_share_contexts_and_sessions(
    bucket: infra.Bucket,
    ray_nodes: infra.RayCluster,
    fake: FakeProvider,
    serve_http: Callable[..., Any],
    tmp_path: Path,
) -> None:
    why = infra.missing("haproxy")
    if why:
        pytest.skip(why)
    import ray

    from rlm_mcp.cluster import NAMESPACE, session_name
    from rlm_mcp.cluster.actor import record_key
    from rlm_mcp.server.identity import SessionKey
    from rlm_mcp.store import ContextStore

    log = tmp_path / "app.log"
    errors = _big_log(log, 100)
    prefix = "scale-" + os.urandom(4).hex()
    env = {
        **bucket.env(),
        "RLM_MCP_STORE": bucket.url(prefix),
        "RLM_MCP_RAY_ADDRESS": ray_nodes.address,
        "RLM_MCP_BACKEND": "openai",
        "RLM_MCP_MODEL": "fake-root",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.openai_base_url,
    }
    a = serve_http("--stateless", **env)
    b = serve_http("--stateless", **env)
    with infra.haproxy([a.port, b.port], tmp_path) as lb_port:
        lb = f"http://127.0.0.1:{lb_port}/mcp"
        with anyio.fail_after(240):
            # load 100 MB through A
            async with _client(a.url) as c:
                res = await c.call_tool("load_context", {"path": str(log), "name": "applog"})
            assert not res.is_error, res.content
            handle = res.structured_content["handle"]
            uploaded = _text_object(bucket, prefix, handle)
            assert 0 < uploaded["size"] < log.stat().st_size / 2  # whole, in compressed frames

            # run_repl alternating A and B keeps its variables
            first = await _repl(a.url, "n = context.count(' ERROR '); print(n)", handle=handle)
            assert first["output"].strip() == str(errors)
            session = first["session"]
            second = await _repl(b.url, "n2 = n + 1; print(n2)", session)
            assert second["output"].strip() == str(errors + 1)
            third = await _repl(a.url, "print(n2 - n, len(context))", session)
            assert third["output"].split()[0] == "1"
            # and through the balancer, request after request
            for i in range(4):
                got = await _repl(lb, "n2 += 1; print(n2)", session)
                assert got["output"].strip() == str(errors + 2 + i)

            # rlm_complete through B with the fake provider is correct
            async with _client(b.url) as c:
                res = await c.call_tool(
                    "rlm_complete", {"query": "How many ERROR lines?", "handle": "applog"}
                )
            assert not res.is_error, res.content
            assert res.structured_content["answer"].strip() == str(errors)
            # its follow-up continues on A, which never saw the run, and through the balancer
            run_id = res.structured_content["run_id"]
            for url in (a.url, lb):
                async with _client(url) as c:
                    more = await c.call_tool("rlm_complete", {"query": "Again?", "run_id": run_id})
                assert not more.is_error, more.content
                assert more.structured_content["answer"].strip() == str(errors)
                assert more.structured_content["run_id"] == run_id

            # a second load of the same text through B uploads nothing
            async with _client(b.url) as c:
                res = await c.call_tool("load_context", {"path": str(log)})
            assert res.structured_content["handle"] == handle
            assert _text_object(bucket, prefix, handle) == uploaded

            # kill replica A mid-call: B keeps serving, and the session lives on
            async def doomed() -> None:
                with contextlib.suppress(Exception):  # A is killed under it
                    await _repl(a.url, "t = 0\nfor i in range(20_000_000):\n  t += i", session)

            async with anyio.create_task_group() as tg:
                tg.start_soon(doomed)
                await anyio.sleep(1.0)
                a.process.kill()
            for _ in range(3):
                got = await _repl(lb, "print(n)", session)
                assert got["output"].strip() == str(errors)
            async with _client(lb) as c:
                res = await c.call_tool("list_contexts", {})
            assert not res.is_error

            # kill the Ray node that holds the session: the next call says "session lost"
            if not ray.is_initialized():  # another test's RayPool may have connected
                ray.init(address=ray_nodes.address, namespace=NAMESPACE, log_to_driver=False)
            records = ContextStore(
                tmp_path / "probe", shared=bucket.url(prefix), shared_options=bucket.options
            )
            name = session_name(SessionKey("handle", None, "", session))
            held_by = records.get_record(record_key(name))["actor"]
            actor = ray.get_actor(held_by, namespace=NAMESPACE)
            node = ray.get(actor.ping.remote(), timeout=30)
            ray_nodes.kill(ray_nodes.node_of(node))
            lost = await _repl(lb, "print('n' in locals())", session)
            assert lost["reset"] is True
            assert any("session lost" in note for note in lost["notes"])
            again = await _repl(lb, "m = 1; print(m)", session)
            assert again["output"].strip() == "1" and not again.get("reset")
