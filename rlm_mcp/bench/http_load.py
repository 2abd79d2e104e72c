"""HTTP load: many clients, each on its own sandbox session, against one `rlm-mcp serve`.

Each client keeps a counter in its own session and reads it back on every call, so a call that
lands in another client's session (cross-talk) or loses its variables shows up as a wrong value;
a failed call is an error result or an exception. Clients speak the 2026-07-28 protocol (a
server-minted `sess_` handle passed back on every call) or 2025-11-25 (their `Mcp-Session-Id`).

    python -m rlm_mcp.bench http_load [--clients 16] [--calls 50] [--mode auto|legacy] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from rlm_mcp.bench._table import BenchRow, format_table
from rlm_mcp.testing.infra import free_port

__all__ = ["LoadReport", "main", "measure", "run_load", "serve_for_load"]


@dataclass
class LoadReport:
    clients: int
    calls: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    crosstalk: list[str] = field(default_factory=list)
    wall: float = 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _client(url: str, who: int, calls: int, mode: str, report: LoadReport) -> None:
    from mcp import Client

    session: str | None = None
    async with Client(url, mode=mode) as client:
        for n in range(calls):
            code = f"box = {{'who': {who}, 'n': 0}}" if n == 0 else "box['n'] += 1"
            code += "\nprint(box['who'], box['n'])"
            args: dict[str, Any] = {"code": code}
            if session is not None:
                args["session"] = session
            start = time.perf_counter()
            try:
                res = await client.call_tool("run_repl", args)
            except Exception as exc:  # a transport failure is a failed call, not a crash here
                report.failures.append(f"client {who} call {n}: {type(exc).__name__}: {exc}")
                continue
            report.latencies.append(time.perf_counter() - start)
            if res.is_error:
                text = "".join(getattr(c, "text", "") for c in res.content)
                report.failures.append(f"client {who} call {n}: {text[:200]}")
                continue
            got = res.structured_content or {}
            session = session or got.get("session")
            if got.get("output") != f"{who} {n}\n":
                report.crosstalk.append(f"client {who} call {n} read {got.get('output')!r}")


async def run_load(url: str, *, clients: int, calls: int, mode: str = "auto") -> LoadReport:
    """`clients` concurrent clients × `calls` run_repl calls, each on its own session."""
    report = LoadReport(clients, calls)
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for who in range(clients):
            tg.start_soon(_client, url, who, calls, mode, report)
    report.wall = time.perf_counter() - start
    return report


@contextmanager
def serve_for_load(**env: str) -> Iterator[str]:
    """An `rlm-mcp serve --transport http` subprocess on loopback with default settings."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rlm-load-") as home:
        full = {k: v for k, v in os.environ.items() if not k.startswith("RLM_MCP_")}
        full.update({"RLM_MCP_HOME": home, **env})
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlm_mcp", "serve", "--transport", "http", "--port", str(port)],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("rlm-mcp serve did not start") from None
                    time.sleep(0.05)  # the port is not open yet
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _rows(report: LoadReport, mode: str) -> list[BenchRow]:
    total = report.clients * report.calls
    label = f"{report.clients} clients x {report.calls} run_repl ({mode})"
    failed, crossed = len(report.failures), len(report.crosstalk)
    slowest = max(report.latencies, default=0.0)
    rate = total / report.wall if report.wall else 0.0
    return [
        BenchRow("http", f"{label}: failed calls", failed, "calls", target="0", passed=not failed),
        BenchRow("http", f"{label}: cross-talk", crossed, "calls", target="0", passed=not crossed),
        BenchRow("http", f"{label}: p50 latency", report.percentile(50) * 1000, "ms"),
        BenchRow("http", f"{label}: p99 latency", report.percentile(99) * 1000, "ms"),
        BenchRow("http", f"{label}: max latency", slowest * 1000, "ms"),
        BenchRow("http", f"{label}: throughput", rate, "calls/s"),
    ]


async def _load(url: str, clients: int, calls: int, mode: str) -> LoadReport:
    return await run_load(url, clients=clients, calls=calls, mode=mode)


def measure(
    *, quick: bool = False, clients: int = 16, calls: int = 50, modes: tuple[str, ...] = ("auto",)
) -> list[BenchRow]:
    """Run the load against a fresh server per mode and return the table rows."""
    if quick:
        clients, calls = 4, 5
    rows: list[BenchRow] = []
    for mode in modes:
        with serve_for_load() as url:
            report = anyio.run(_load, url, clients, calls, mode)
        rows.extend(_rows(report, mode))
        if report.latencies:
            mean = statistics.mean(report.latencies) * 1000
            rows.append(BenchRow("http", f"mean latency ({mode})", mean, "ms"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench http_load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 clients x 5 calls")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--mode", default="auto,legacy", help="auto, legacy or both")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.mode.split(",") if m.strip())
    rows = measure(quick=args.quick, clients=args.clients, calls=args.calls, modes=modes)
    print(format_table(rows))
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
