"""One row type and one printer for every benchmark, so `rlm-mcp bench system` can gather them.

A row is a measured figure next to the baseline measured in the same run; `ratio` is what targets
are stated against, because absolute seconds on a shared 2-core machine mean little.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

__all__ = ["BenchRow", "format_table"]


@dataclass(frozen=True, slots=True)
class BenchRow:
    bench: str  # "store", "sandbox", "fanout", "loop", "server"
    case: str  # e.g. "ingest 100 MB"
    measured: float
    unit: str  # "s", "ms", "MB", "chars"
    baseline: float | None = None  # same unit, same run
    baseline_label: str = ""
    target: str = ""  # e.g. "ratio <= 2", "<= 100 MB"
    passed: bool | None = None  # against the target, when one applies

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.measured / self.baseline

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 100_000:
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:.3g}"


def format_table(rows: Iterable[BenchRow]) -> str:
    """A plain fixed-width table (Markdown-compatible) that reads well in a terminal and a note."""
    header = ["bench", "case", "measured", "baseline", "ratio", "target", "ok"]
    body = [
        [
            r.bench,
            r.case,
            f"{_fmt(r.measured)} {r.unit}",
            f"{_fmt(r.baseline)} {r.unit}" + (f" ({r.baseline_label})" if r.baseline_label else "")
            if r.baseline is not None
            else "-",
            f"{r.ratio:.2f}" if r.ratio is not None else "-",
            r.target or "-",
            {True: "yes", False: "NO", None: "-"}[r.passed],
        ]
        for r in rows
    ]
    widths = [
        max(len(h), *(len(row[i]) for row in body)) if body else len(h)
        for i, h in enumerate(header)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in body
    ]
    return "\n".join(lines)
