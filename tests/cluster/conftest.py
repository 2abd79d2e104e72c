"""Real SeaweedFS and a real two-node Ray cluster, started once per test session; every test
here skips with the one-line reason when they cannot be installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rlm_mcp.testing import infra


@pytest.fixture(scope="session")
def bucket() -> Iterator[infra.Bucket]:
    why = infra.missing("s3")
    if why:
        pytest.skip(why)
    with infra.seaweedfs() as b:
        yield b


@pytest.fixture(scope="session")
def ray_nodes() -> Iterator[infra.RayCluster]:
    why = infra.missing("ray")
    if why:
        pytest.skip(why)
    with infra.ray_cluster(nodes=2) as cluster:
        yield cluster
