"""A language model that replays given responses: for tests, demos and benchmarks.

It records every call (`.calls`: the messages; `.requests`: messages plus options) so a test can
assert on prompts, and reports estimated token usage (len // 4) so budgets behave as with a real
model. Running out of responses is an error that says how many were given, never a silent repeat.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlm_mcp.errors import ProviderError
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.lm.retry import estimate_tokens

__all__ = ["ScriptedLM", "ScriptedRequest"]


@dataclass(frozen=True, slots=True)
class ScriptedRequest:
    messages: list[Message]
    max_tokens: int | None
    temperature: float | None
    stop: list[str] | None


class ScriptedLM:
    """Replays `responses` in order, or answers with `responses(messages)` when it is callable."""

    def __init__(
        self,
        responses: Sequence[str] | Callable[[Sequence[Message]], str],
        *,
        model: str = "scripted",
        backend: str = "scripted",
    ) -> None:
        self._fn = responses if callable(responses) else None
        self._responses = [] if callable(responses) else list(responses)
        self._model = model
        self._backend = backend
        self._lock = threading.Lock()
        self.requests: list[ScriptedRequest] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def calls(self) -> list[list[Message]]:
        return [r.messages for r in self.requests]

    @property
    def remaining(self) -> int:
        return len(self._responses) - len(self.requests) if self._fn is None else -1

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        with self._lock:
            index = len(self.requests)
            self.requests.append(
                ScriptedRequest(
                    list(messages), max_tokens, temperature, list(stop) if stop else None
                )
            )
        if self._fn is not None:
            text = self._fn(messages)
        elif index < len(self._responses):
            text = self._responses[index]
        else:
            raise ProviderError(
                f"ScriptedLM ran out of responses: call {index + 1} but only "
                f"{len(self._responses)} scripted. Add more responses or pass a function.",
                provider=self._backend,
                model=self._model,
            )
        usage = Usage(
            model=self._model,
            input_tokens=sum(estimate_tokens(m.content) for m in messages),
            output_tokens=estimate_tokens(text),
            cost=0.0,
            estimated=True,
        )
        return Completion(text=text, usage=usage, finish_reason="stop")

    def __repr__(self) -> str:
        return f"ScriptedLM(model={self._model!r}, calls={len(self.requests)})"
