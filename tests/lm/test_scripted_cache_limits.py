"""ScriptedLM, the sub-call cache, the process-wide concurrency limit and the retry helpers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anyio
import pytest

from rlm_mcp.errors import ConfigError, ProviderError
from rlm_mcp.lm import (
    LM,
    CachedLM,
    Completion,
    ConcurrencyLimit,
    Message,
    ScriptedLM,
    Usage,
    complete_many,
    complete_sync,
)
from rlm_mcp.lm.retry import RetryPolicy, parse_retry_after

USER = [Message("user", "what is 6*7?")]


# --- ScriptedLM -------------------------------------------------------------------------------
def test_scripted_replays_in_order_records_calls_and_estimates_tokens() -> None:
    lm = ScriptedLM(["first", "second answer"])
    a = complete_sync(lm, USER, max_tokens=5, temperature=0, stop=["x"])
    b = complete_sync(lm, [Message("user", "again")])
    assert (a.text, b.text) == ("first", "second answer")
    assert lm.calls == [USER, [Message("user", "again")]]
    assert lm.requests[0].max_tokens == 5 and lm.requests[0].stop == ["x"]
    assert a.usage == Usage("scripted", input_tokens=3, output_tokens=1, cost=0.0, estimated=True)
    assert lm.remaining == 0


def test_scripted_running_out_is_a_clear_error() -> None:
    lm = ScriptedLM(["only"])
    complete_sync(lm, USER)
    with pytest.raises(ProviderError, match="ran out of responses: call 2 but only 1 scripted"):
        complete_sync(lm, USER)


def test_scripted_can_answer_with_a_function_of_the_messages() -> None:
    lm = ScriptedLM(lambda msgs: msgs[-1].content.upper(), model="echo")
    comp = complete_sync(lm, USER)
    assert comp.text == "WHAT IS 6*7?" and comp.usage.model == "echo" and lm.backend == "scripted"


# --- CachedLM ---------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_cache_answers_a_repeated_temperature_zero_request_without_calling(
    tmp_path: Path,
) -> None:
    inner = ScriptedLM(["42", "43"])
    lm = CachedLM(inner, tmp_path / "cache")
    first = await lm.complete(USER, temperature=0)
    second = await lm.complete(USER, temperature=0)
    assert (first.text, second.text) == ("42", "42")
    assert len(inner.calls) == 1
    assert first.usage.cached is False
    assert second.usage.cached is True and second.usage.cost == 0.0
    assert second.usage.latency_s == 0.0
    assert second.usage.output_tokens == first.usage.output_tokens
    assert (lm.hits, lm.misses) == (1, 1)
    lm.close()
    # it survives a restart: a new wrapper on the same folder still hits
    again = CachedLM(ScriptedLM([]), tmp_path / "cache")
    assert (await again.complete(USER, temperature=0)).text == "42"
    await again.aclose()


@pytest.mark.anyio
async def test_cache_key_covers_options_and_skips_nonzero_or_default_temperature(
    tmp_path: Path,
) -> None:
    inner = ScriptedLM(["a", "b", "c", "d", "e"])
    lm = CachedLM(inner, tmp_path)
    await lm.complete(USER, temperature=0)
    await lm.complete(USER, temperature=0, max_tokens=9)  # different options: miss
    await lm.complete(USER)  # provider default temperature: never cached
    await lm.complete(USER, temperature=0.7)
    assert (await lm.complete(USER, temperature=0.7)).text == "e"
    assert len(inner.calls) == 5 and lm.hits == 0
    lm.close()


@pytest.mark.anyio
async def test_disabled_cache_always_calls_the_model(tmp_path: Path) -> None:
    inner = ScriptedLM(["a", "b"])
    lm = CachedLM(inner, tmp_path, enabled=False)
    assert [(await lm.complete(USER, temperature=0)).text for _ in range(2)] == ["a", "b"]
    assert (lm.model, lm.backend) == ("scripted", "scripted")
    assert not any(tmp_path.iterdir())


# --- concurrency ------------------------------------------------------------------------------
class SlotLM:
    """An LM that takes a provider slot like the adapters and records the peak in flight."""

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self.peak = 0
        self.model = "slot"
        self.backend = "test"
        self.limit = limit

    async def complete(self, messages: Sequence[Message], **_: object) -> Completion:
        async with self.limit.slot():
            self.peak = max(self.peak, self.limit.in_flight())
            await anyio.sleep(0.01)
        return Completion(messages[-1].content, Usage(self.model))


class NestedLM:
    """Each call fans out a nested batch, as an llm_query inside a child RLM would."""

    def __init__(self, inner: SlotLM) -> None:
        self.inner = inner
        self.model = "nested"
        self.backend = "test"

    async def complete(self, messages: Sequence[Message], **_: object) -> Completion:
        subs = await complete_many(self.inner, [[Message("user", f"{i}")] for i in range(8)])
        return Completion(",".join(c.text for c in subs), Usage(self.model))


@pytest.mark.anyio
async def test_nested_batches_never_exceed_the_shared_limit() -> None:
    leaf = SlotLM(ConcurrencyLimit(4))
    nested: LM = NestedLM(leaf)  # type: ignore[assignment]
    with anyio.fail_after(20):
        results = await complete_many(nested, [[Message("user", "q")] for _ in range(6)])
    assert len(results) == 6 and results[0].text == "0,1,2,3,4,5,6,7"
    assert leaf.peak == 4  # reached, never exceeded; parents held no slot (no deadlock)


@pytest.mark.anyio
async def test_complete_many_keeps_request_order_and_raises_the_first_failure() -> None:
    lm = ScriptedLM(lambda m: m[-1].content * 2)
    out = await complete_many(lm, [[Message("user", c)] for c in "abc"])
    assert [c.text for c in out] == ["aa", "bb", "cc"]
    with anyio.fail_after(5), pytest.raises(ProviderError, match="ran out"):
        await complete_many(ScriptedLM(["one"]), [USER, USER])


def test_max_concurrency_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="RLM_MCP_MAX_CONCURRENCY"):
        ConcurrencyLimit(0)


@pytest.mark.anyio
async def test_two_limits_in_one_process_neither_share_nor_reset_each_other() -> None:
    small, big = SlotLM(ConcurrencyLimit(2)), SlotLM(ConcurrencyLimit(5))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for lm in (small, big):
                tg.start_soon(complete_many, lm, [[Message("user", f"{i}")] for i in range(12)])
    assert (small.peak, big.peak) == (2, 5)


def test_each_runtime_gives_its_models_its_own_limit(tmp_path: Path) -> None:
    from rlm_mcp.config import Settings
    from rlm_mcp.runtime import Runtime

    env = {"OPENAI_API_KEY": "k"}
    a = Runtime(Settings(home=tmp_path / "a", max_concurrency=3), environ=env)
    b = Runtime(Settings(home=tmp_path / "b", max_concurrency=9), environ=env)
    (ra, _), (rb, _) = a.lms(), b.lms()
    later = Runtime(Settings(home=tmp_path / "c", max_concurrency=1), environ=env).lms()[0]
    assert ra.limit is a.limit and rb.limit is b.limit  # type: ignore[attr-defined]
    assert (ra.limit.max_concurrency, rb.limit.max_concurrency) == (3, 9)  # type: ignore[attr-defined]
    assert later.limit.max_concurrency == 1  # type: ignore[attr-defined]
    assert ra.limit.max_concurrency == 3  # building another runtime's models reset nothing  # type: ignore[attr-defined]


# --- retry helpers ----------------------------------------------------------------------------
def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    assert parse_retry_after(format_datetime(now, usegmt=True), now=now.timestamp() + 5) == 0.0


def test_backoff_grows_exponentially_with_jitter_and_caps_retry_after() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0, retry_after_max=10.0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 8.0)]:
        delay = policy.backoff(attempt, None)
        assert ceiling / 2 <= delay <= ceiling
    assert policy.backoff(0, 3600.0) == 10.0
