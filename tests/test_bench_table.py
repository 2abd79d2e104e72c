from __future__ import annotations

from rlm_mcp.bench.__main__ import main as bench_main
from rlm_mcp.bench._table import BenchRow, format_table


def test_a_row_reports_its_ratio_to_the_same_run_baseline() -> None:
    row = BenchRow("store", "ingest 1 MB", 0.3, "s", baseline=0.25, baseline_label="cp")
    assert row.ratio == 1.2
    assert row.to_dict()["ratio"] == 1.2
    assert BenchRow("x", "y", 1.0, "s").ratio is None


def test_the_table_shows_every_row_with_its_ratio_and_verdict() -> None:
    rows = [
        BenchRow("store", "ingest 1 MB", 0.3, "s", 0.25, "cp", "ratio <= 2", True),
        BenchRow("sandbox", "peak memory", 180.0, "MB", target="<= 100 MB", passed=False),
    ]
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert "1.20" in lines[2] and "yes" in lines[2]
    assert "NO" in lines[3]


def test_an_unknown_benchmark_is_refused_with_the_list(capsys) -> None:  # type: ignore[no-untyped-def]
    assert bench_main(["no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
