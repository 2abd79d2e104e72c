"""The loop benchmark's compaction rows: on, a run longer than the root window finishes; off, it
fails the way a provider would. Both report the root's input tokens."""

from __future__ import annotations

from rlm_mcp.bench.loop import _compaction_rows


def test_compaction_lets_a_run_longer_than_the_root_window_finish() -> None:
    on, off = _compaction_rows()
    assert "compaction on" in on.case and "finished after 31 iterations" in on.case
    assert on.passed is True and on.unit == "tokens" and on.measured > 0
    assert "compaction off" in off.case and "failed: root window exceeded" in off.case
    assert off.passed is None and off.measured > 0
