"""Sampling in the 2026-07-28 protocol: the client's own model through a round trip.

That protocol has no server-to-client requests, so `sampling/createMessage` cannot be sent in
the middle of a tool call. Instead the tool *returns* an `InputRequiredResult` carrying the
sampling request; the client answers it and calls the tool again with the answer in
`input_responses` (multi-round-trip requests). That fits one `llm_query` tool call: the prompt is
rebuilt the same way on the second round and the answer read from the response.

It cannot fit `llm_query` inside running `run_repl` code or `rlm_complete`, whose sandbox would
have to wait across two tool calls; there the error names the alternatives.
"""

from __future__ import annotations

from typing import Any

from mcp.types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    InputRequiredResult,
    ModelHint,
    ModelPreferences,
    SamplingMessage,
    TextContent,
)

from rlm_mcp.lm.base import Completion, Usage
from rlm_mcp.lm.retry import estimate_tokens
from rlm_mcp.server.identity import LEGACY_PROTOCOLS

__all__ = ["KEY", "can_round_trip", "completion_from", "request_for"]

KEY = "llm_query"
MAX_TOKENS = 4096


def can_round_trip(ctx: Any) -> bool:
    """A 2026-07-28 client that declared it can sample (only such a client can answer)."""
    if getattr(ctx, "protocol_version", None) in LEGACY_PROTOCOLS:
        return False
    caps = getattr(ctx, "client_capabilities", None)
    return caps is not None and getattr(caps, "sampling", None) is not None


def request_for(prompt: str, model: str | None) -> InputRequiredResult:
    """The first round: ask the client to sample `prompt`."""
    prefs = ModelPreferences(hints=[ModelHint(name=model)]) if model else None
    params = CreateMessageRequestParams(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=MAX_TOKENS,
        model_preferences=prefs,
    )
    return InputRequiredResult(input_requests={KEY: CreateMessageRequest(params=params)})


def completion_from(ctx: Any, prompt: str) -> Completion | None:
    """The second round: the client's answer as a Completion (usage estimated), or None."""
    answer = (getattr(ctx, "input_responses", None) or {}).get(KEY)
    if not isinstance(answer, CreateMessageResult):
        return None
    blocks = answer.content if isinstance(answer.content, list) else [answer.content]
    text = "".join(getattr(b, "text", "") or "" for b in blocks if getattr(b, "type", "") == "text")
    usage = Usage(
        model=answer.model or "sampling",
        input_tokens=estimate_tokens(prompt),
        output_tokens=estimate_tokens(text),
        latency_s=0.0,
        estimated=True,
    )
    return Completion(text=text, usage=usage, finish_reason=answer.stop_reason)
