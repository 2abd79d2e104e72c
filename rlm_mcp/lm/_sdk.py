"""What every adapter over a provider's official SDK shares, so a provider is one small file.

The SDK client is created lazily, once per event loop (an HTTP connection pool belongs to the loop
that opened it), on our HTTP client (`_http.sdk_http_client`). Retries are ours
(`retry.call_with_retries`, with the SDK's own switched off) so every provider behaves the same,
and each attempt holds one slot of the model's `ConcurrencyLimit`.

We send through the SDK's generic `client.post(path, body=..., cast_to=bytes)` and read the JSON
ourselves: the SDK still does auth, base URL, version headers, timeouts and status errors, but we
skip its typed request transform and response model, ~40% of the client's CPU per call, which
concurrent calls on one event loop pay in series (fan-out benchmark, `bench/fanout.py`).

A subclass names its SDK module, its endpoint, how to build the SDK client, the request body, and
how to read the response (text, reported token counts, finish reason). Token counts a provider
does not report are estimated and marked `estimated`.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES
from rlm_mcp.lm._common import is_malformed, preset_platform, priced
from rlm_mcp.lm._http import sdk_http_client
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.lm.limits import ConcurrencyLimit
from rlm_mcp.lm.prices import PriceTable
from rlm_mcp.lm.retry import RetryPolicy, call_with_retries, estimate_tokens

__all__ = ["CallOptions", "ReportedUsage", "SDKAdapter"]

#: (input tokens, output tokens, cached input tokens) as a provider reported them.
ReportedUsage = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class CallOptions:
    """The per-call options of `LM.complete`, as one value for the wire-format hooks."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: Sequence[str] | None = None


class SDKAdapter:
    """An LM over one provider API through its SDK; subclasses fill in the wire format."""

    sdk_module: ClassVar[str]  # "openai", "anthropic"
    client_class: ClassVar[str]  # the SDK's async client: "AsyncOpenAI", "AsyncAnthropic"
    endpoint: ClassVar[str]  # the path posted to, relative to the SDK's base URL

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        backend: str,
        timeout: float = DEFAULT_LM_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: PriceTable | None = None,
        retry_policy: RetryPolicy | None = None,
        limit: ConcurrencyLimit | None = None,
    ) -> None:
        self._model = model
        self._backend = backend
        self.api_key = api_key
        self.base_url = base_url
        self.prices = prices
        self.policy = retry_policy or RetryPolicy(max_retries=max_retries, timeout=timeout)
        self.limit = limit or ConcurrencyLimit()
        self._client: Any = None
        self._client_loop: object = None

    @property
    def model(self) -> str:
        return self._model

    @property
    def backend(self) -> str:
        return self._backend

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self._model!r}, backend={self._backend!r}, "
            f"base_url={self.base_url!r})"
        )

    # -- what a provider file supplies -----------------------------------------------------------

    def _client_extras(self) -> dict[str, Any]:
        """More keyword arguments for the SDK client (e.g. default headers); none by default."""
        return {}

    def _body(
        self, messages: Sequence[Message], opts: CallOptions
    ) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(
        self, data: Any
    ) -> tuple[str, ReportedUsage | None, str | None]:  # pragma: no cover - abstract
        """(text, reported usage or None, finish reason); raise on a malformed body."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------

    def _sdk(self) -> Any:
        import anyio.lowlevel

        token = anyio.lowlevel.current_token()
        if self._client is None or self._client_loop != token:
            sdk = importlib.import_module(self.sdk_module)
            self._client = getattr(sdk, self.client_class)(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=self.policy.timeout,
                max_retries=0,  # ours: retry.call_with_retries
                http_client=sdk_http_client(sdk, max_concurrency=self.limit.max_concurrency),
                **self._client_extras(),
            )
            preset_platform(self._client, f"{self.sdk_module}._base_client")
            self._client_loop = token
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client (its connection pool belongs to the current event loop)."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close()

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        client = self._sdk()
        body = self._body(messages, CallOptions(max_tokens, temperature, stop))
        started = time.monotonic()

        async def send() -> Completion:
            raw = await client.post(self.endpoint, body=body, cast_to=bytes)
            return self._parse(json.loads(raw), messages, time.monotonic() - started)

        return await call_with_retries(
            send,
            provider=self._backend,
            model=self._model,
            policy=self.policy,
            is_malformed=is_malformed,
            base_url=self.base_url,
            limit=self.limit,
        )

    def _parse(self, data: Any, messages: Sequence[Message], latency: float) -> Completion:
        text, reported, finish = self._read(data)
        if reported is not None:
            inp, out, cached = reported
            usage = Usage(
                model=self._model,
                input_tokens=inp,
                output_tokens=out,
                cached_tokens=cached,
                latency_s=latency,
            )
        else:
            usage = Usage(
                model=self._model,
                input_tokens=sum(estimate_tokens(m.content) for m in messages),
                output_tokens=estimate_tokens(text),
                latency_s=latency,
                estimated=True,
            )
        return Completion(text=text, usage=priced(usage, self.prices), finish_reason=finish)
