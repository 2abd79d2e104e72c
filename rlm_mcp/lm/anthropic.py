"""Anthropic's Messages API (`POST {base_url}/v1/messages`).

System messages are joined into the `system` parameter, as the API wants. The shared machinery
(per-loop SDK client, retries, the concurrency slot, usage estimates) is in `_sdk.SDKAdapter`;
this file is the wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlm_mcp.lm._sdk import CallOptions, ReportedUsage, SDKAdapter
from rlm_mcp.lm.base import Message
from rlm_mcp.lm.retry import kwargs_without_none

__all__ = ["DEFAULT_ANTHROPIC_MAX_TOKENS", "AnthropicLM"]

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096  # the API requires max_tokens; this is ours when none given


class AnthropicLM(SDKAdapter):
    """An LM over the Anthropic Messages API."""

    sdk_module = "anthropic"
    client_class = "AsyncAnthropic"
    endpoint = "/v1/messages"

    def __init__(self, model: str, *, backend: str = "anthropic", **options: Any) -> None:
        super().__init__(model, backend=backend, **options)

    def _body(self, messages: Sequence[Message], opts: CallOptions) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        return {
            "model": self._model,
            "max_tokens": opts.max_tokens or DEFAULT_ANTHROPIC_MAX_TOKENS,
            "messages": turns or [{"role": "user", "content": "(no message)"}],
            **kwargs_without_none(
                system=system or None,
                stop_sequences=list(opts.stop) if opts.stop else None,
                temperature=opts.temperature,
            ),
        }

    def _read(self, data: Any) -> tuple[str, ReportedUsage | None, str | None]:
        """A Messages body; a missing or mistyped field raises (= malformed)."""
        if not isinstance(data, dict) or "content" not in data:
            raise ValueError(f"not a Messages response: {str(data)[:200]!r}")
        blocks = data["content"] or []
        text = "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
        usage = data.get("usage")
        reported = None
        if isinstance(usage, dict) and usage.get("input_tokens") is not None:
            read = int(usage.get("cache_read_input_tokens") or 0)
            created = int(usage.get("cache_creation_input_tokens") or 0)
            # Anthropic reports cache reads/writes apart from input_tokens; count them all.
            total_in = int(usage["input_tokens"] or 0) + read + created
            reported = (total_in, int(usage.get("output_tokens") or 0), read)
        return text, reported, data.get("stop_reason")
