from __future__ import annotations

from collections.abc import Iterator

import pytest

from rlm_mcp.testing.fake_provider import FakeProvider


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """A fake OpenAI/Anthropic server on 127.0.0.1 (the real SDKs talk to it)."""
    with FakeProvider() as server:
        yield server


class SleepRecorder:
    """A RetryPolicy.sleep that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()
