"""OpenAI Chat Completions (`POST {base_url}/chat/completions`), and through `base_url` every
OpenAI-compatible server (Ollama, vLLM, llama.cpp, OpenRouter, Gemini's compatible endpoint).

The shared machinery (per-loop SDK client, retries, the concurrency slot, usage estimates) is in
`_sdk.SDKAdapter`; this file is the wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlm_mcp.lm._sdk import CallOptions, ReportedUsage, SDKAdapter
from rlm_mcp.lm.base import Message
from rlm_mcp.lm.retry import kwargs_without_none

__all__ = ["OpenAILM"]


class OpenAILM(SDKAdapter):
    """An LM over `POST {base_url}/chat/completions`."""

    sdk_module = "openai"
    client_class = "AsyncOpenAI"
    endpoint = "/chat/completions"

    def __init__(
        self,
        model: str,
        *,
        backend: str = "openai",
        default_headers: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, backend=backend, **options)
        self._headers = default_headers

    def _client_extras(self) -> dict[str, Any]:
        return {"default_headers": self._headers}

    def _body(self, messages: Sequence[Message], opts: CallOptions) -> dict[str, Any]:
        return {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            **kwargs_without_none(
                max_tokens=opts.max_tokens,
                temperature=opts.temperature,
                stop=list(opts.stop) if opts.stop else None,
            ),
        }

    def _read(self, data: Any) -> tuple[str, ReportedUsage | None, str | None]:
        """A Chat Completions body; a missing or mistyped field raises (= malformed)."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices:
            raise ValueError(f"no choices in response: {str(data)[:200]!r}")
        choice = choices[0]
        text = _text_of(choice["message"].get("content"))
        usage = data.get("usage")
        reported = None
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            details = usage.get("prompt_tokens_details") or {}
            reported = (
                int(usage["prompt_tokens"] or 0),
                int(usage.get("completion_tokens") or 0),
                int(details.get("cached_tokens") or 0),
            )
        return text, reported, choice.get("finish_reason")


def _text_of(content: Any) -> str:
    """`message.content`: a string, null, or (some compatible servers) a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
