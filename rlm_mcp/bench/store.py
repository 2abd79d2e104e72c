"""`python -m rlm_mcp.bench store`: ingest time vs a plain file copy, and peak memory growth.

For each size a text file is generated, copied with `shutil.copyfile` (the baseline, same run,
same file), then ingested by `ContextStore.load_path` in a fresh subprocess that reports its
peak RSS growth (`VmHWM` after minus RSS before), so earlier runs cannot hide the cost.
Copy and ingest alternate `--repeat` times (default 3) and the best time of each counts, so a
burst of load from other processes on a shared machine does not decide the ratio.
Targets: ingest within 2x of the copy, peak memory growth under 100 MB at 1 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rlm_mcp.bench._table import BenchRow, format_table

__all__ = ["main", "measure"]

_UNITS = {"KB": 1000, "MB": 1000**2, "GB": 1000**3}
_CHILD = r"""
import json, resource, sys, time
from rlm_mcp.store import ContextStore
def status_kb(field):
    # VmHWM, not ru_maxrss: after fork+exec ru_maxrss starts at the *parent's* peak, so a
    # parent that generated big files made every size look ~50 MB hungrier
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = ContextStore(sys.argv[1])
before = status_kb('VmRSS')
t = time.perf_counter()
info = store.load_path(sys.argv[2])
elapsed = time.perf_counter() - t
peak = status_kb('VmHWM')
store.close()
print(json.dumps({"seconds": elapsed, "growth_kb": peak - before, "chars": info.chars}))
"""


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    for unit, mult in _UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * mult)
    return int(text)


def _label(n: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:g} {unit}"
    return f"{n} B"


def _generate(path: Path, size: int) -> None:
    """Mixed ASCII/multi-byte lines, written in 4 MB blocks (memory bounded)."""
    line = "The quick brown fox jumps over the lazy dog; naïve café — 東京 %d\n"
    block = "".join(line % i for i in range(60_000)).encode("utf-8")
    with open(path, "wb") as f:
        left = size
        while left > 0:
            piece = block[:left]
            f.write(piece)
            left -= len(piece)


def _copy_seconds(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    shutil.copyfile(src, dst)
    elapsed = time.perf_counter() - t
    dst.unlink()
    return elapsed


def _ingest(src: Path, store_dir: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store_dir), str(src)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    shutil.rmtree(store_dir, ignore_errors=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _measure_size(size: int, work: Path, repeat: int) -> list[BenchRow]:
    """Best of `repeat` for both the copy and the ingest, interleaved so load hits both alike."""
    src = work / f"input-{size}.txt"
    _generate(src, size)
    copies: list[float] = []
    runs: list[dict[str, float]] = []
    for i in range(repeat):
        copies.append(_copy_seconds(src, work / "copy.txt"))
        runs.append(_ingest(src, work / f"store-{size}-{i}"))
    src.unlink()
    copy_s = min(copies)
    res = {
        "seconds": min(r["seconds"] for r in runs),
        "growth_kb": max(r["growth_kb"] for r in runs),
    }
    label = _label(size)
    ingest = BenchRow(
        bench="store",
        case=f"ingest {label}",
        measured=res["seconds"],
        unit="s",
        baseline=copy_s,
        baseline_label="shutil.copyfile",
        target="ratio <= 2",
        passed=res["seconds"] <= 2 * copy_s,
    )
    growth_mb = res["growth_kb"] / 1024
    mem = BenchRow(
        bench="store",
        case=f"peak RSS growth {label}",
        measured=growth_mb,
        unit="MB",
        target="< 100 MB",
        passed=growth_mb < 100,
    )
    return [ingest, mem]


def measure(
    *, quick: bool = False, sizes: Sequence[int] | None = None, repeat: int = 3
) -> list[BenchRow]:
    """Rows for `rlm-mcp bench system`; quick means 1 MB and 10 MB only, one run each."""
    if sizes is None:
        sizes = [10**6, 10**7] if quick else [10**6, 10**7, 10**8, 10**9]
    if quick:
        repeat = 1
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-store-") as d:
        for size in sizes:
            rows.extend(_measure_size(size, Path(d), max(1, repeat)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench store", description=__doc__)
    parser.add_argument("--sizes", default="1MB,10MB,100MB,1GB", help="e.g. 1MB,10MB,100MB,1GB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; best time counts")
    args = parser.parse_args(argv)
    sizes = [_parse_size(s) for s in args.sizes.split(",") if s.strip()]
    rows = measure(sizes=sizes, repeat=args.repeat)
    print(format_table(rows))
    return 0
