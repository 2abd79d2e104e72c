"""Smoke run of the sandbox benchmark at a tiny size (speed lives in the benchmark itself)."""

from __future__ import annotations

import pytest

from rlm_mcp.bench import sandbox as bench


def test_sandbox_benchmark_smoke_run_prints_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench.measure(chars=20_000, warm=3)
    assert [r.case.split(" (")[0] for r in rows] == [
        "first call",
        "warm trivial call",
        "re.findall over context",
        "python loop over all lines",
        "counts[w] += 1 over the words of 20,000 chars",
        "worker peak RSS after context read",
        "worker RSS after context read",
        "worker peak RSS after the line loop",
        "worker start + first call, confined",
        "warm trivial call, confined",
    ]
    assert all(r.measured > 0 for r in rows)
    bench.main(["--chars", "5000", "--warm", "2"])
    assert "re.findall over context" in capsys.readouterr().out
