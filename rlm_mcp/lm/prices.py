"""What a model costs per million tokens, so usage can say what a run cost.

The defaults are APPROXIMATE list prices as of 2026-11 (USD per million tokens, input/output);
providers change them, so users override them with a mapping or a JSON file. A model the table
does not know costs `None` ("unknown"), never 0: an unknown price must not look free.
Cached input tokens are charged at the full input rate, so a cost never under-counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from rlm_mcp.errors import ConfigError
from rlm_mcp.lm.base import Usage

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "PriceTable"]

PRICES_AS_OF = "2026-11 (approximate list prices, USD per million tokens)"

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "scripted": (0.0, 0.0),
}


class PriceTable:
    """Model name -> (input $/Mtok, output $/Mtok) with prefix matching.

    `gpt-5-mini-2025-08-07` matches `gpt-5-mini` (the longest known prefix wins) and a routing
    prefix such as `openai/` (OpenRouter) or `models/` (Gemini) is ignored.
    """

    def __init__(
        self,
        overrides: Mapping[str, tuple[float, float] | list[float]] | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        self._prices: dict[str, tuple[float, float]] = dict(DEFAULT_PRICES) if defaults else {}
        for name, pair in (overrides or {}).items():
            try:
                inp, out = (float(x) for x in pair)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"Price for {name!r} must be [input_per_Mtok, output_per_Mtok], got {pair!r}."
                ) from exc
            self._prices[name.lower()] = (inp, out)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Load overrides from a JSON object `{"model": [in, out], ...}` on top of the defaults."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Cannot read price table {path}: {exc}. Fix the JSON file.") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"Price table {path} must be a JSON object of model -> [in, out].")
        return cls(data)

    def lookup(self, model: str) -> tuple[float, float] | None:
        """Prices for `model`, by exact name, then the longest known prefix; None if unknown."""
        name = model.lower()
        candidates = [name]
        if "/" in name:
            candidates.append(name.rsplit("/", 1)[1])
        for cand in candidates:
            if cand in self._prices:
                return self._prices[cand]
            best = max((k for k in self._prices if cand.startswith(k)), key=len, default=None)
            if best is not None:
                return self._prices[best]
        return None

    def cost(self, usage: Usage) -> float | None:
        """Dollar cost of one call; 0 for our own cache hits, None when the model is unknown."""
        if usage.cached:
            return 0.0
        price = self.lookup(usage.model)
        if price is None:
            return None
        return (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1_000_000

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in sorted(self._prices.items())}
