"""The real openai and anthropic SDKs against our fake server, over both wire formats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from rlm_mcp.errors import ProviderError, ProviderTimeoutError
from rlm_mcp.lm import LM, Message, RetryPolicy, UsageTracker, resolve_lm
from rlm_mcp.testing.fake_provider import FakeProvider

from .conftest import SleepRecorder

pytestmark = pytest.mark.anyio

BACKENDS = ["openai", "anthropic"]
MESSAGES = [Message("system", "be brief"), Message("user", "hello")]


def make_lm(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder | None = None, **policy: Any
) -> LM:
    base = fake.openai_base_url if backend == "openai" else fake.anthropic_base_url
    options: dict[str, Any] = {"max_retries": 2, "timeout": 5.0, "backoff_base": 0.01}
    options.update(policy)
    if sleeps is not None:
        options["sleep"] = sleeps
    return resolve_lm(
        backend,
        model_name="test-model",
        api_key="sk-test",
        base_url=base,
        retry_policy=RetryPolicy(**options),
    )


@pytest.fixture
async def closing() -> AsyncIterator[list[LM]]:
    """Adapters registered here get their SDK client closed inside the test's event loop."""
    lms: list[LM] = []
    yield lms
    for lm in lms:
        await lm.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_successful_call_returns_text_and_records_usage_with_cached_tokens(
    backend: str, fake: FakeProvider, closing: list[LM]
) -> None:
    fake.usage = {"input_tokens": 120, "output_tokens": 7, "cached_tokens": 100}
    lm = make_lm(backend, fake)
    closing.append(lm)
    tracker = UsageTracker()
    with anyio.fail_after(10):
        comp = await lm.complete(MESSAGES, max_tokens=33, temperature=0, stop=["END"])
    tracker.record(comp.usage, path=("root",))
    assert comp.text == "ok"
    assert comp.usage.model == "test-model"
    assert comp.usage.output_tokens == 7
    assert comp.usage.cached_tokens == 100
    assert comp.usage.estimated is False
    # Anthropic reports cache reads beside input_tokens; we count them as input too.
    assert comp.usage.input_tokens == (120 if backend == "openai" else 220)
    summary = tracker.summary()
    assert summary.total_calls == 1
    assert summary.models["test-model"].cached_tokens == 100


async def test_openai_sdk_sends_path_auth_model_messages_and_options(
    fake: FakeProvider, closing: list[LM]
) -> None:
    lm = make_lm("openai", fake)
    closing.append(lm)
    with anyio.fail_after(10):
        await lm.complete(MESSAGES, max_tokens=33, temperature=0, stop=["END"])
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.json["model"] == "test-model"
    assert req.json["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert req.json["max_tokens"] == 33
    assert req.json["temperature"] == 0
    assert req.json["stop"] == ["END"]


async def test_anthropic_sdk_sends_system_apart_and_temperature_in_the_body(
    fake: FakeProvider, closing: list[LM]
) -> None:
    lm = make_lm("anthropic", fake)
    closing.append(lm)
    with anyio.fail_after(10):
        await lm.complete(MESSAGES, max_tokens=33, temperature=0, stop=["END"])
    (req,) = fake.requests
    assert req.path == "/v1/messages"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.json["model"] == "test-model"
    assert req.json["system"] == "be brief"
    assert req.json["messages"] == [{"role": "user", "content": "hello"}]
    assert req.json["max_tokens"] == 33
    assert req.json["temperature"] == 0
    assert req.json["stop_sequences"] == ["END"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_429_with_retry_after_is_retried_after_the_given_wait(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake.fail_next(429, headers={"retry-after": "7"})
    lm = make_lm(backend, fake, sleeps)
    closing.append(lm)
    with anyio.fail_after(10):
        comp = await lm.complete(MESSAGES)
    assert comp.text == "ok"
    assert sleeps.waits == [7.0]
    assert len(fake.requests) == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_500_is_retried_with_backoff_then_succeeds(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake.fail_next(500)
    lm = make_lm(backend, fake, sleeps)
    closing.append(lm)
    with anyio.fail_after(10):
        comp = await lm.complete(MESSAGES)
    assert comp.text == "ok"
    assert len(sleeps.waits) == 1 and 0 < sleeps.waits[0] <= 0.01


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_persistent_500_raises_provider_error_naming_provider_model_and_status(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake.fail_next(503, times=3)
    lm = make_lm(backend, fake, sleeps)
    closing.append(lm)
    with anyio.fail_after(10), pytest.raises(ProviderError) as info:
        await lm.complete(MESSAGES)
    err = info.value
    assert (err.provider, err.model, err.status) == (backend, "test-model", 503)
    text = str(err)
    assert backend in text and "test-model" in text and "503" in text and "3 attempts" in text
    assert "To fix" in text
    assert len(fake.requests) == 3
    # exponential: the second wait's ceiling is twice the first's
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_client_error_is_not_retried(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake.fail_next(401)
    lm = make_lm(backend, fake, sleeps)
    closing.append(lm)
    with anyio.fail_after(10), pytest.raises(ProviderError, match="check the API key"):
        await lm.complete(MESSAGES)
    assert sleeps.waits == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_slow_server_raises_provider_timeout_error(
    backend: str, fake: FakeProvider, closing: list[LM]
) -> None:
    fake.latency = 2.0
    lm = make_lm(backend, fake, max_retries=0, timeout=0.2)
    closing.append(lm)
    with anyio.fail_after(10), pytest.raises(ProviderTimeoutError) as info:
        await lm.complete(MESSAGES)
    assert info.value.provider == backend
    assert "timed out" in str(info.value) and "RLM_MCP_LM_TIMEOUT" in str(info.value)
    assert "no answer within 0.2 s" in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_malformed_body_raises_provider_error_without_retrying(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake.malformed_next()
    lm = make_lm(backend, fake, sleeps)
    closing.append(lm)
    with anyio.fail_after(10), pytest.raises(ProviderError, match="malformed"):
        await lm.complete(MESSAGES)
    assert sleeps.waits == []


async def test_openai_null_content_becomes_empty_text_not_a_crash(
    fake: FakeProvider, closing: list[LM]
) -> None:
    fake.respond_next(
        200,
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": None},
                }
            ],
        },
    )
    lm = make_lm("openai", fake)
    closing.append(lm)
    with anyio.fail_after(10):
        comp = await lm.complete(MESSAGES)
    assert comp.text == ""
    assert comp.usage.estimated is True  # no usage in the body: estimated, not zero


async def test_anthropic_empty_content_list_becomes_empty_text(
    fake: FakeProvider, closing: list[LM]
) -> None:
    fake.respond_next(
        200,
        {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "test-model",
            "content": [],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 0},
        },
    )
    lm = make_lm("anthropic", fake)
    closing.append(lm)
    with anyio.fail_after(10):
        comp = await lm.complete(MESSAGES)
    assert comp.text == ""
    assert comp.usage.input_tokens == 3


async def test_a_refused_connection_is_retried_then_reported(
    sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake = FakeProvider().start()
    url = fake.openai_base_url
    fake.close()
    lm = resolve_lm(
        "openai",
        model_name="m",
        api_key="k",
        base_url=url,
        retry_policy=RetryPolicy(max_retries=1, timeout=5, sleep=sleeps),
    )
    closing.append(lm)
    with anyio.fail_after(10), pytest.raises(ProviderError, match="connection") as info:
        await lm.complete(MESSAGES)
    assert len(sleeps.waits) == 1
    # the transport's reason (not only the SDK's "Connection error.") and the URL to check
    message = str(info.value)
    assert "(connection error): " in message and "refused" in message.lower(), message
    assert f"check the base URL ({url})" in message
    assert "Connection error" not in message and ".." not in message


async def test_the_sdk_client_is_reused_across_calls_in_one_event_loop(
    fake: FakeProvider, closing: list[LM]
) -> None:
    lm = make_lm("openai", fake)
    closing.append(lm)
    with anyio.fail_after(10):
        await lm.complete(MESSAGES)
        first = lm._client  # type: ignore[attr-defined]
        await lm.complete(MESSAGES)
    assert lm._client is first  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_first_call_of_a_new_sdk_client_makes_no_thread_hop(
    backend: str, fake: FakeProvider, closing: list[LM]
) -> None:
    # The SDKs probe the OS in a worker thread on a client's first request unless we fill it in;
    # we make a client per event loop, and that hop stalled for seconds on a loaded machine.
    import asyncio

    lm = make_lm(backend, fake)
    closing.append(lm)
    with anyio.fail_after(10):
        await lm.complete(MESSAGES)
    assert asyncio.get_running_loop()._default_executor is None  # type: ignore[attr-defined]
    assert lm._client._platform is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_json_body_of_the_wrong_shape_raises_malformed_without_retrying(
    backend: str, fake: FakeProvider, sleeps: SleepRecorder, closing: list[LM]
) -> None:
    fake.respond_next(200, {"id": "x", "object": "something else"})
    lm = make_lm(backend, fake, sleeps)
    closing.append(lm)
    with anyio.fail_after(10), pytest.raises(ProviderError, match="malformed"):
        await lm.complete(MESSAGES)
    assert sleeps.waits == []
    assert len(fake.requests) == 1


async def test_openai_content_as_a_list_of_text_parts_is_joined(
    fake: FakeProvider, closing: list[LM]
) -> None:
    # Some OpenAI-compatible servers answer with content parts instead of a string.
    parts = [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}]
    fake.respond_next(
        200,
        {
            "choices": [{"index": 0, "finish_reason": "length", "message": {"content": parts}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        },
    )
    lm = make_lm("openai", fake)
    closing.append(lm)
    with anyio.fail_after(10):
        comp = await lm.complete(MESSAGES)
    assert (comp.text, comp.finish_reason) == ("hello", "length")
    assert (comp.usage.input_tokens, comp.usage.output_tokens, comp.usage.cached_tokens) == (
        4,
        2,
        0,
    )
