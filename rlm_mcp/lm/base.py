"""The language-model seam: what every adapter (OpenAI, Anthropic, sampling, scripted) provides.

One async method is the whole contract, so the RLM loop, the sandbox bridge and the server never
care which provider answers. Data crossing the seam is frozen, so a recorded call cannot be
changed after the fact by whoever holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from rlm_mcp.text import clean_text

__all__ = ["LM", "Completion", "Message", "Role", "Usage"]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call cost. `cached` means our own sub-call cache answered (no provider call)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0
    cost: float | None = None
    cached: bool = False
    estimated: bool = False  # tokens guessed (len // 4) because the provider reported none


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        # A reply with a lone surrogate (an escape cut from its pair) would break every JSON
        # result and trajectory line it reaches: every model's text is cleaned here, once.
        if isinstance(self.text, str):
            object.__setattr__(self, "text", clean_text(self.text))


@runtime_checkable
class LM(Protocol):
    """A language model. `model` and `backend` name it in usage records, errors and cache keys."""

    @property
    def model(self) -> str: ...

    @property
    def backend(self) -> str: ...

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion: ...
