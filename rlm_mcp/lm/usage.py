"""Usage accounting that never under-counts: every call at every depth lands in one tracker.

A record carries its position in the call tree (`("root",)`, `("root", "sub")`,
`("root", "child:2", "sub")`), so a summary can be given for the whole run or for any subtree.
The tracker takes a plain lock around dictionary updates (no awaits inside), which makes it safe
from threads and from concurrent anyio tasks alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rlm_mcp.lm.base import Usage
from rlm_mcp.lm.prices import PriceTable

__all__ = ["ModelUsageSummary", "UsageSummary", "UsageTracker"]


def _add_cost(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return a + b


@dataclass(frozen=True, slots=True)
class ModelUsageSummary:
    """Totals for one model. `cost` is None when any call's price was unknown."""

    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_hits: int = 0
    cost: float | None = 0.0
    latency_s: float = 0.0

    def add(self, usage: Usage, cost: float | None) -> ModelUsageSummary:
        return replace(
            self,
            calls=self.calls + 1,
            input_tokens=self.input_tokens + usage.input_tokens,
            output_tokens=self.output_tokens + usage.output_tokens,
            cached_tokens=self.cached_tokens + usage.cached_tokens,
            cache_hits=self.cache_hits + (1 if usage.cached else 0),
            cost=_add_cost(self.cost, cost),
            latency_s=self.latency_s + usage.latency_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_hits": self.cache_hits,
            "cost": self.cost,
            "latency_s": self.latency_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelUsageSummary:
        cost = data.get("cost")
        return cls(
            model=str(data["model"]),
            calls=int(data.get("calls", 0)),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
            cache_hits=int(data.get("cache_hits", 0)),
            cost=None if cost is None else float(cost),
            latency_s=float(data.get("latency_s", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """Usage over models. `total_cost` sums the known costs; `unknown_cost_models` flags the rest.

    `total_cost` is None only when no model had a known price at all.
    """

    models: dict[str, ModelUsageSummary] = field(default_factory=dict)
    wall_time: float = 0.0

    @property
    def total_calls(self) -> int:
        return sum(m.calls for m in self.models.values())

    @property
    def total_input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.models.values())

    @property
    def total_output_tokens(self) -> int:
        return sum(m.output_tokens for m in self.models.values())

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.total_output_tokens

    @property
    def cached_calls(self) -> int:
        return sum(m.cache_hits for m in self.models.values())

    @property
    def unknown_cost_models(self) -> list[str]:
        return sorted(name for name, m in self.models.items() if m.cost is None)

    @property
    def total_cost(self) -> float | None:
        known = [m.cost for m in self.models.values() if m.cost is not None]
        if not known and self.models:
            return None
        return sum(known)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": {k: v.to_dict() for k, v in self.models.items()},
            "wall_time": self.wall_time,
            "total_calls": self.total_calls,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "total_cost": self.total_cost,
            "cached_calls": self.cached_calls,
            "unknown_cost_models": self.unknown_cost_models,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageSummary:
        models = {k: ModelUsageSummary.from_dict(v) for k, v in data.get("models", {}).items()}
        return cls(models=models, wall_time=float(data.get("wall_time", 0.0)))


def _path_key(path: tuple[str, ...]) -> str:
    return "/".join(path)


class UsageTracker:
    """Collects every call's usage; `summary()` for the run, `tree()` per call-tree node."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices if prices is not None else PriceTable()
        self._lock = threading.Lock()
        self._records: list[tuple[tuple[str, ...], Usage, float | None]] = []
        self._started = time.monotonic()
        self._last = self._started

    def record(self, usage: Usage, *, path: tuple[str, ...] = ()) -> None:
        """Add one call. The cost is the adapter's if it set one, else the price table's."""
        cost = usage.cost if usage.cost is not None else self.prices.cost(usage)
        if usage.cached:
            cost = 0.0
        with self._lock:
            self._records.append((tuple(path), usage, cost))
            self._last = time.monotonic()

    def child(self, *path: str) -> _ChildTracker:
        """A view that records under `path` (prefixed to each record's own path)."""
        return _ChildTracker(self, tuple(path))

    def _summarise(self, prefix: tuple[str, ...] = ()) -> UsageSummary:
        models: dict[str, ModelUsageSummary] = {}
        with self._lock:
            records = list(self._records)
            wall = self._last - self._started
        n = len(prefix)
        for path, usage, cost in records:
            if path[:n] != prefix:
                continue
            prev = models.get(usage.model) or ModelUsageSummary(model=usage.model)
            models[usage.model] = prev.add(usage, cost)
        return UsageSummary(models=models, wall_time=wall)

    def summary(self) -> UsageSummary:
        return self._summarise()

    def subtree(self, *path: str) -> UsageSummary:
        return self._summarise(tuple(path))

    def tree(self) -> dict[str, UsageSummary]:
        """Summary per node path (`"root/sub"`), each including everything beneath it."""
        with self._lock:
            paths = {p[:i] for p, _, _ in self._records for i in range(1, len(p) + 1)}
        return {_path_key(p): self._summarise(p) for p in sorted(paths)}


class _ChildTracker:
    """Records into a parent tracker under a fixed path prefix."""

    def __init__(self, parent: UsageTracker, prefix: tuple[str, ...]) -> None:
        self._parent = parent
        self._prefix = prefix

    def record(self, usage: Usage, *, path: tuple[str, ...] = ()) -> None:
        self._parent.record(usage, path=self._prefix + tuple(path))

    def child(self, *path: str) -> _ChildTracker:
        return _ChildTracker(self._parent, self._prefix + tuple(path))

    def summary(self) -> UsageSummary:
        return self._parent.subtree(*self._prefix)
