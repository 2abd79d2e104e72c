from __future__ import annotations

from rlm_mcp.bench import fanout


def test_fanout_benchmark_smoke_run_reports_both_timings_against_ideals() -> None:
    rows = fanout.measure(quick=True)
    assert [r.bench for r in rows] == ["fanout"] * 6
    one_by_one, batched, limiter_only, floor, cpu, speedup = rows
    assert limiter_only.baseline == batched.baseline == floor.baseline
    assert "raw sockets" in floor.case and floor.measured > 0
    assert one_by_one.baseline == 8 * 0.02 and batched.baseline == 2 * 0.02
    assert (
        one_by_one.measured > 0 and batched.measured > 0 and speedup.unit == "x" and cpu.unit == "s"
    )
    assert batched.target == "ratio <= 1.2" and batched.passed is not None
