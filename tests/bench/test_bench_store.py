"""Smoke run of the store benchmark at a tiny size (figures are not asserted: speed lives there)."""

from __future__ import annotations

from rlm_mcp.bench.store import _parse_size, measure


def test_store_bench_measures_ingest_and_memory_rows_at_a_tiny_size() -> None:
    rows = measure(sizes=[_parse_size("200KB")], repeat=1)
    assert [r.case for r in rows] == ["ingest 200 KB", "peak RSS growth 200 KB"]
    assert rows[0].baseline is not None and rows[0].ratio is not None
    assert all(r.bench == "store" and r.measured >= 0 for r in rows)
