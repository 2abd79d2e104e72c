"""Smoke run of the viewer benchmark at a tiny size (its figures are not asserted here)."""

from __future__ import annotations

import pytest

from rlm_mcp.bench.viewer import main, measure, synthetic_records
from rlm_mcp.viewer._model import build_view
from rlm_mcp.viewer.browser import find_chromium


def test_synthetic_records_have_the_asked_size() -> None:
    summary = build_view(synthetic_records(3, 7))["summary"]
    assert (summary["iterations"], summary["sub_calls"], summary["stop"]) == (3, 7, "final")


def test_viewer_bench_measures_render_time_and_page_size_at_a_tiny_size() -> None:
    rows = measure(3, 7, browser=False, repeat=1)
    assert [r.case for r in rows] == [
        "render_html 3 it x 7 sub-calls",
        "page size 3 it x 7 sub-calls",
    ]
    assert all(r.bench == "viewer" and r.measured > 0 and r.ratio is not None for r in rows)


def test_viewer_bench_main_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--iterations", "2", "--sub-calls", "3", "--no-browser", "--repeat", "1"]) == 0
    assert "render_html 2 it x 3 sub-calls" in capsys.readouterr().out


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary: the browser rows need it")
def test_viewer_bench_browser_rows_at_a_tiny_size() -> None:
    rows = measure(2, 3, browser=True, repeat=1)
    assert [r.case for r in rows][2:] == [
        "browser: navigation -> rendered",
        "browser: open all 3 sub-calls",
    ]
    assert all(r.measured > 0 and r.baseline is not None for r in rows)
