"""OpenAI Chat Completions, and through `base_url` every OpenAI-compatible server.

The SDK's own retries are off (`max_retries=0`): `retry.call_with_retries` owns retries so both
SDK adapters behave the same. The SDK client is created lazily, once per event loop, because an
httpx client's connection pool belongs to the loop that opened it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES
from rlm_mcp.lm._common import is_malformed, priced
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.lm.prices import PriceTable
from rlm_mcp.lm.retry import RetryPolicy, call_with_retries, estimate_tokens, kwargs_without_none

__all__ = ["OpenAILM"]


class OpenAILM:
    """An LM over `POST {base_url}/chat/completions`."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        backend: str = "openai",
        timeout: float = DEFAULT_LM_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: PriceTable | None = None,
        retry_policy: RetryPolicy | None = None,
        default_headers: dict[str, str] | None = None,
    ) -> None:
        self._model = model
        self._backend = backend
        self.api_key = api_key
        self.base_url = base_url
        self.prices = prices
        self.policy = retry_policy or RetryPolicy(max_retries=max_retries, timeout=timeout)
        self._headers = default_headers
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
            f"OpenAILM(model={self._model!r}, backend={self._backend!r}, "
            f"base_url={self.base_url!r})"
        )

    def _sdk(self) -> Any:
        import anyio.lowlevel
        import openai

        token = anyio.lowlevel.current_token()
        if self._client is None or self._client_loop != token:
            self._client = openai.AsyncOpenAI(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=self.policy.timeout,
                max_retries=0,
                default_headers=self._headers,
            )
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
        payload = [{"role": m.role, "content": m.content} for m in messages]
        options = kwargs_without_none(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=list(stop) if stop else None,
        )
        started = time.monotonic()

        async def send() -> Completion:
            resp = await client.chat.completions.create(
                model=self._model, messages=payload, **options
            )
            return self._parse(resp, messages, time.monotonic() - started)

        return await call_with_retries(
            send,
            provider=self._backend,
            model=self._model,
            policy=self.policy,
            is_malformed=is_malformed,
        )

    def _parse(self, resp: Any, messages: Sequence[Message], latency: float) -> Completion:
        if isinstance(resp, (str, bytes)) or not getattr(resp, "choices", None):
            raise ValueError(f"no choices in response: {str(resp)[:200]!r}")
        choice = resp.choices[0]
        text = getattr(choice.message, "content", None) or ""
        usage = getattr(resp, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            details = getattr(usage, "prompt_tokens_details", None)
            record = Usage(
                model=self._model,
                input_tokens=int(usage.prompt_tokens or 0),
                output_tokens=int(usage.completion_tokens or 0),
                cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
                latency_s=latency,
            )
        else:
            record = Usage(
                model=self._model,
                input_tokens=sum(estimate_tokens(m.content) for m in messages),
                output_tokens=estimate_tokens(text),
                latency_s=latency,
                estimated=True,
            )
        return Completion(
            text=text, usage=priced(record, self.prices), finish_reason=choice.finish_reason
        )
