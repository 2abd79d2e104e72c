"""The MCP client's own model, through `sampling/createMessage`, for users with no API key.

It works only on a connection with a back channel (a legacy 2025-11-25 session whose client
declared sampling). Anywhere else it fails at once with SamplingUnavailableError, never a hang:
the modern protocol has no server-to-client requests and a client without a sampling callback
would never answer. Sampling reports no token counts, so usage is estimated (len // 4) and
marked `estimated=True`. The server builds one per request: `SamplingLM(ctx, model_hint=...)`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rlm_mcp.errors import SamplingUnavailableError
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.lm.limits import ConcurrencyLimit
from rlm_mcp.lm.retry import estimate_tokens

__all__ = ["DEFAULT_SAMPLING_MAX_TOKENS", "SamplingLM"]

DEFAULT_SAMPLING_MAX_TOKENS = 4096


class SamplingLM:
    """An LM that asks the connected MCP client to sample."""

    def __init__(
        self, ctx: Any, *, model_hint: str | None = None, limit: ConcurrencyLimit | None = None
    ) -> None:
        self.ctx = ctx
        self.model_hint = model_hint
        self.limit = limit or ConcurrencyLimit()

    @property
    def model(self) -> str:
        return self.model_hint or "sampling"

    @property
    def backend(self) -> str:
        return "sampling"

    def _unavailable(self, why: str) -> SamplingUnavailableError:
        return SamplingUnavailableError(
            f"The MCP client cannot sample: {why}. Use a client that supports sampling over a "
            "2025-11-25 (legacy) session, or configure an API backend (e.g. --backend openai "
            "with OPENAI_API_KEY).",
            provider="sampling",
            model=self.model,
        )

    def check(self) -> None:
        """Raise SamplingUnavailableError now if this connection cannot sample."""
        from mcp.types import ClientCapabilities, SamplingCapability

        session = getattr(self.ctx, "session", None)
        if session is None:
            raise self._unavailable("there is no MCP session (not called from a tool)")
        if not getattr(session, "can_send_request", False):
            raise self._unavailable(
                "this connection has no back channel for server-to-client requests "
                "(2026-07-28 protocol, stateless or JSON-response HTTP)"
            )
        if not session.check_client_capability(ClientCapabilities(sampling=SamplingCapability())):
            raise self._unavailable("the client did not declare the sampling capability")

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        from mcp.shared.exceptions import MCPError, NoBackChannelError
        from mcp.types import ModelHint, ModelPreferences, SamplingMessage, TextContent

        self.check()
        system = "\n\n".join(m.content for m in messages if m.role == "system") or None
        turns = [
            SamplingMessage(role=m.role, content=TextContent(type="text", text=m.content))
            for m in messages
            if m.role != "system"
        ] or [SamplingMessage(role="user", content=TextContent(type="text", text=""))]
        prefs = (
            ModelPreferences(hints=[ModelHint(name=self.model_hint)]) if self.model_hint else None
        )
        started = time.monotonic()
        try:
            async with self.limit.slot():
                result = await self.ctx.session.create_message(
                    turns,
                    max_tokens=max_tokens or DEFAULT_SAMPLING_MAX_TOKENS,
                    system_prompt=system,
                    temperature=temperature,
                    stop_sequences=list(stop) if stop else None,
                    model_preferences=prefs,
                    related_request_id=getattr(self.ctx, "request_id", None),
                )
        except NoBackChannelError as exc:
            raise self._unavailable(str(exc)) from exc
        except MCPError as exc:
            raise SamplingUnavailableError(
                f"The MCP client refused the sampling request: {exc}. Check the client's "
                "sampling settings or configure an API backend.",
                provider="sampling",
                model=self.model,
            ) from exc
        content = result.content
        blocks = content if isinstance(content, list) else [content]
        text = "".join(
            getattr(b, "text", "") or "" for b in blocks if getattr(b, "type", "") == "text"
        )
        usage = Usage(
            model=getattr(result, "model", None) or self.model,
            input_tokens=sum(estimate_tokens(m.content) for m in messages),
            output_tokens=estimate_tokens(text),
            latency_s=time.monotonic() - started,
            estimated=True,
        )
        return Completion(
            text=text, usage=usage, finish_reason=getattr(result, "stop_reason", None)
        )
