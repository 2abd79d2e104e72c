"""OpenAI Chat Completions, and through `base_url` every OpenAI-compatible server.

The SDK's own retries are off (`max_retries=0`): `retry.call_with_retries` owns retries so both
SDK adapters behave the same. The SDK client is created lazily, once per event loop, because an
httpx client's connection pool belongs to the loop that opened it.

We send through the SDK's generic `client.post(..., cast_to=bytes)` and read the JSON ourselves
instead of `chat.completions.create`: the SDK still does auth, base URL, headers, timeouts and
status errors, but skips its typed request transform and response model, which were about 40%
of the client's CPU per call. All concurrent calls share one event-loop thread, so that CPU is
paid in series when a batch's answers arrive together (fan-out benchmark, `bench/fanout.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from rlm_mcp.config import DEFAULT_LM_TIMEOUT, DEFAULT_MAX_RETRIES
from rlm_mcp.lm._common import is_malformed, preset_platform, priced
from rlm_mcp.lm._http import sdk_http_client
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.lm.limits import get_max_concurrency
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
                http_client=sdk_http_client(openai, max_concurrency=get_max_concurrency()),
                default_headers=self._headers,
            )
            preset_platform(self._client, "openai._base_client")
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
        body = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            **kwargs_without_none(
                max_tokens=max_tokens,
                temperature=temperature,
                stop=list(stop) if stop else None,
            ),
        }
        started = time.monotonic()

        async def send() -> Completion:
            raw = await client.post("/chat/completions", body=body, cast_to=bytes)
            return self._parse(json.loads(raw), messages, time.monotonic() - started)

        return await call_with_retries(
            send,
            provider=self._backend,
            model=self._model,
            policy=self.policy,
            is_malformed=is_malformed,
            base_url=self.base_url,
        )

    def _parse(self, data: Any, messages: Sequence[Message], latency: float) -> Completion:
        """Read a Chat Completions JSON body; a missing or mistyped field raises (= malformed)."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices:
            raise ValueError(f"no choices in response: {str(data)[:200]!r}")
        choice = choices[0]
        text = _text_of(choice["message"].get("content"))
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            details = usage.get("prompt_tokens_details") or {}
            record = Usage(
                model=self._model,
                input_tokens=int(usage["prompt_tokens"] or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                cached_tokens=int(details.get("cached_tokens") or 0),
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
            text=text, usage=priced(record, self.prices), finish_reason=choice.get("finish_reason")
        )


def _text_of(content: Any) -> str:
    """`message.content`: a string, null, or (some compatible servers) a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
