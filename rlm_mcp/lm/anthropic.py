"""Anthropic's Messages API through the official SDK (`POST {base_url}/v1/messages`).

System messages are joined into the `system` parameter, as the API wants. Retries are ours
(`max_retries=0` on the SDK), as for OpenAI. As there, we send through the SDK's generic
`client.post(..., cast_to=bytes)` and read the JSON ourselves: the SDK keeps auth, version
headers, timeouts and status errors, and we skip its typed request transform and response model,
CPU that concurrent calls on one event loop would pay in series (see `openai.py`).
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

__all__ = ["DEFAULT_ANTHROPIC_MAX_TOKENS", "AnthropicLM"]

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096  # the API requires max_tokens; this is ours when none given


class AnthropicLM:
    """An LM over the Anthropic Messages API."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        backend: str = "anthropic",
        timeout: float = DEFAULT_LM_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: PriceTable | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self._model = model
        self._backend = backend
        self.api_key = api_key
        self.base_url = base_url
        self.prices = prices
        self.policy = retry_policy or RetryPolicy(max_retries=max_retries, timeout=timeout)
        self._client: Any = None
        self._client_loop: object = None

    @property
    def model(self) -> str:
        return self._model

    @property
    def backend(self) -> str:
        return self._backend

    def __repr__(self) -> str:
        return f"AnthropicLM(model={self._model!r}, base_url={self.base_url!r})"

    def _sdk(self) -> Any:
        import anthropic
        import anyio.lowlevel

        token = anyio.lowlevel.current_token()
        if self._client is None or self._client_loop != token:
            self._client = anthropic.AsyncAnthropic(
                api_key=self.api_key,
                base_url=self.base_url,
                timeout=self.policy.timeout,
                max_retries=0,
                http_client=sdk_http_client(anthropic, max_concurrency=get_max_concurrency()),
            )
            preset_platform(self._client, "anthropic._base_client")
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
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        if not turns:
            turns = [{"role": "user", "content": "(no message)"}]
        body = {
            "model": self._model,
            "max_tokens": max_tokens or DEFAULT_ANTHROPIC_MAX_TOKENS,
            "messages": turns,
            **kwargs_without_none(
                system=system or None,
                stop_sequences=list(stop) if stop else None,
                temperature=temperature,
            ),
        }
        started = time.monotonic()

        async def send() -> Completion:
            raw = await client.post("/v1/messages", body=body, cast_to=bytes)
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
        """Read a Messages JSON body; a missing or mistyped field raises (= malformed)."""
        if not isinstance(data, dict) or "content" not in data:
            raise ValueError(f"not a Messages response: {str(data)[:200]!r}")
        blocks = data["content"] or []
        text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("input_tokens") is not None:
            read = int(usage.get("cache_read_input_tokens") or 0)
            created = int(usage.get("cache_creation_input_tokens") or 0)
            record = Usage(
                model=self._model,
                # Anthropic reports cache reads/writes apart from input_tokens; count them all.
                input_tokens=int(usage["input_tokens"] or 0) + read + created,
                output_tokens=int(usage.get("output_tokens") or 0),
                cached_tokens=read,
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
            text=text, usage=priced(record, self.prices), finish_reason=data.get("stop_reason")
        )
