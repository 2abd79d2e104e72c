"""The sub-call cache: identical deterministic requests are answered from disk.

Only requests with `temperature == 0` are cached. `None` means "the provider's default", which is
usually sampling at temperature 1, so those are NOT cached (a re-run would otherwise freeze a
random answer). The RLM loop passes temperature=0 to sub-calls by default, so they are cached.

The key is a SHA-256 over (backend, model, messages, max_tokens, temperature, stop). A hit
returns the stored text with `usage.cached=True`, latency 0, the token counts as originally
counted (so token budgets still see the work) and cost 0 (nothing was paid this time).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rlm_mcp.lm.base import LM, Completion, Message, Usage

__all__ = ["CachedLM", "cache_key"]

logger = logging.getLogger(__name__)
_VERSION = 1


def cache_key(
    backend: str,
    model: str,
    messages: Sequence[Message],
    *,
    max_tokens: int | None,
    temperature: float | None,
    stop: Sequence[str] | None,
) -> str:
    payload = {
        "v": _VERSION,
        "backend": backend,
        "model": model,
        "messages": [[m.role, m.content] for m in messages],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stop": list(stop) if stop else None,
    }
    raw = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return "lm:" + hashlib.sha256(raw).hexdigest()


class CachedLM:
    """Wraps an LM with a diskcache-backed store of temperature-0 answers."""

    def __init__(self, lm: LM, directory: Path | str, *, enabled: bool = True) -> None:
        self.inner = lm
        self.directory = Path(directory)
        self.enabled = enabled
        self._cache: Any = None
        self.hits = 0
        self.misses = 0

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def backend(self) -> str:
        return self.inner.backend

    def _store(self) -> Any:
        if self._cache is None:
            import diskcache

            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(self.directory))
        return self._cache

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()
        self.close()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        opts: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        if not self.enabled or temperature != 0:
            return await self.inner.complete(messages, **opts)
        key = cache_key(self.backend, self.model, messages, **opts)
        stored = self._store().get(key)
        if isinstance(stored, dict):
            self.hits += 1
            usage = Usage(
                model=stored["model"],
                input_tokens=stored["input_tokens"],
                output_tokens=stored["output_tokens"],
                cached_tokens=stored["cached_tokens"],
                latency_s=0.0,
                cost=0.0,
                cached=True,
                estimated=stored.get("estimated", False),
            )
            return Completion(text=stored["text"], usage=usage, finish_reason=stored["finish"])
        self.misses += 1
        comp = await self.inner.complete(messages, **opts)
        u = comp.usage
        self._store().set(
            key,
            {
                "text": comp.text,
                "finish": comp.finish_reason,
                "model": u.model,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cached_tokens": u.cached_tokens,
                "estimated": u.estimated,
            },
        )
        return replace(comp)

    def __repr__(self) -> str:
        return f"CachedLM({self.inner!r}, directory={str(self.directory)!r})"
