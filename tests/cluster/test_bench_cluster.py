"""`python -m rlm_mcp.bench cluster` runs end to end on a small text (its own SeaweedFS and Ray
cluster), so the benchmark quoted in the docs keeps working."""

from __future__ import annotations

import pytest

from rlm_mcp.testing import infra


def test_the_cluster_benchmark_measures_every_row() -> None:
    why = infra.missing("s3", "ray")
    if why:
        pytest.skip(why)
    from rlm_mcp.bench.cluster import measure

    rows = measure(megabytes=4, warm=5, rounds=1, settle=3.0)
    assert len(rows) == 3
    load, attach, warm = rows
    assert "upload" in load.case and load.measured > 0 and load.baseline
    assert "first attach" in attach.case and attach.measured > 0 and attach.baseline
    assert warm.unit == "ms" and 0 < warm.measured < 1000
