"""Our own retry loop, used by both SDK adapters (whose built-in retries are switched off).

One loop means the same behaviour for every provider and a loop that tests can drive: retry on
429, 5xx, connection errors and timeouts with exponential backoff plus jitter, honour
`Retry-After` (seconds or an HTTP date, capped), then raise a ProviderError that names the
provider, model, status and what to do. The concurrency slot is held per attempt only, never
while sleeping between attempts.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import anyio

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES
from rlm_mcp.errors import ProviderError, ProviderTimeoutError
from rlm_mcp.lm.limits import ConcurrencyLimit

__all__ = ["RetryPolicy", "call_with_retries", "parse_retry_after"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. `sleep` is injectable so tests can see the waits without waiting."""

    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_LM_TIMEOUT
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        delay: float = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay * (0.5 + random.random() / 2)  # jitter: 50-100% of the step


@dataclass(frozen=True, slots=True)
class _Failure:
    retryable: bool
    status: int | None
    retry_after: float | None
    timeout: bool
    detail: str
    label: str  # what kind of failure, for the message: "status 401", "connection error", ...


def classify(exc: BaseException) -> _Failure:
    """Map an SDK or transport exception to what the loop should do (works for both SDKs)."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return _Failure(True, None, None, True, "no answer within the timeout", "timed out")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        headers: Mapping[str, str] = getattr(getattr(exc, "response", None), "headers", {}) or {}
        retry_after = parse_retry_after(headers.get("retry-after"))
        retryable = status in RETRY_STATUSES or status >= 500
        return _Failure(retryable, status, retry_after, False, _short(exc), f"status {status}")
    if "Connection" in name:
        return _Failure(True, None, None, False, _root_cause(exc), "connection error")
    return _Failure(False, None, None, False, _short(exc), "error")


def _root_cause(exc: BaseException) -> str:
    """The SDK says "Connection error.", httpx "All connection attempts failed"; the OS error at
    the bottom of the chain says which: refused, unknown host, unreachable."""
    found: BaseException = exc
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, OSError) and cause.errno is not None:
            found = cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if isinstance(found, OSError) and found.errno is not None:
        reason = (found.strerror or "").strip()
        if found.errno > 0:  # "Connection refused: Connect call failed ('127.0.0.1', 9)"
            name = os.strerror(found.errno)
            return reason if name in reason else f"{name}: {reason}" if reason else name
        if reason:  # resolver errors (negative codes): "Name or service not known"
            return reason
    return _short(found)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return text[:300] or type(exc).__name__


def _advice(status: int | None, timeout: bool, base_url: str | None = None) -> str:
    if timeout:
        return "raise the timeout (RLM_MCP_LM_TIMEOUT) or check that the server is responsive"
    if status in (401, 403):
        return "check the API key"
    if status == 404:
        return "check the model name and base URL"
    if status == 429:
        return "wait, lower RLM_MCP_MAX_CONCURRENCY, or raise your rate limit"
    if status is not None and status >= 500:
        return "the provider is failing; try again later or raise RLM_MCP_MAX_RETRIES"
    if status is None:
        where = f" ({base_url})" if base_url else ""
        return f"check the base URL{where} and that the server is reachable"
    return "check the request options"


async def call_with_retries(
    send: Callable[[], Awaitable[T]],
    *,
    provider: str,
    model: str,
    policy: RetryPolicy,
    is_malformed: Callable[[BaseException], bool] = lambda exc: False,
    base_url: str | None = None,
    limit: ConcurrencyLimit,
) -> T:
    """Call `send()` under `limit` and the per-attempt timeout, retrying as documented."""
    attempt = 0
    while True:
        try:
            async with limit.slot():
                with anyio.fail_after(policy.timeout):
                    return await send()
        except ProviderError:
            raise
        except Exception as exc:
            if is_malformed(exc):
                raise ProviderError(
                    f"{provider} returned a malformed response for model {model!r}: {_short(exc)}."
                    " Check that base_url points at a compatible server.",
                    provider=provider,
                    model=model,
                ) from exc
            failure = classify(exc)
            if failure.retryable and attempt < policy.max_retries:
                delay = policy.backoff(attempt, failure.retry_after)
                logger.info(
                    "%s %s failed (%s, status %s); retry %d/%d in %.2fs",
                    provider,
                    model,
                    failure.detail,
                    failure.status,
                    attempt + 1,
                    policy.max_retries,
                    delay,
                )
                attempt += 1
                await policy.sleep(delay)
                continue
            tries = attempt + 1
            detail = f"no answer within {policy.timeout:g} s" if failure.timeout else failure.detail
            message = (
                f"{provider} call to model {model!r} failed after {tries} "
                f"attempt{'s' if tries != 1 else ''} ({failure.label}): "
                f"{detail.rstrip('.')}. "
                f"To fix: {_advice(failure.status, failure.timeout, base_url)}."
            )
            cls = ProviderTimeoutError if failure.timeout else ProviderError
            raise cls(message, provider=provider, model=model, status=failure.status) from exc


def estimate_tokens(text: str) -> int:
    """A rough token count (4 characters per token) for providers that report none."""
    return max(1, len(text) // 4) if text else 0


def kwargs_without_none(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}
