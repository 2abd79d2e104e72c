"""`rlm-mcp bench system`: the store, sandbox, fan-out, loop and server benchmarks in one table.

Each lives in `rlm_mcp/bench/NAME.py` with `measure(*, quick=False) -> list[BenchRow]`. A module
that is not there (yet) is reported as missing instead of failing the run, and one that raises
is reported with its error while the others still print.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from rlm_mcp.bench._table import BenchRow, format_table

__all__ = ["SYSTEM_BENCHES", "SystemReport", "main", "run_system"]

logger = logging.getLogger(__name__)

SYSTEM_BENCHES: tuple[str, ...] = (
    "store",
    "sandbox",
    "fanout",
    "loop",
    "server",
    "http_load",
    "agents",
)


@dataclass
class SystemReport:
    rows: list[BenchRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        text = format_table(self.rows) if self.rows else "(no benchmark rows)"
        if self.missing:
            text += f"\nmissing benchmark modules (not built yet): {', '.join(self.missing)}"
        for name, err in self.failed.items():
            text += f"\nbenchmark {name} failed: {err}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "missing": self.missing,
            "failed": self.failed,
        }


def _import(name: str) -> ModuleType:
    return importlib.import_module(f"rlm_mcp.bench.{name}")


def run_system(
    names: Sequence[str] = SYSTEM_BENCHES,
    *,
    quick: bool = False,
    importer: Callable[[str], ModuleType] = _import,
    on_start: Callable[[str], None] | None = None,
) -> SystemReport:
    """Run each named benchmark's `measure(quick=...)`; collect rows, missing and failed ones."""
    report = SystemReport()
    for name in names:
        try:
            module = importer(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (f"rlm_mcp.bench.{name}", name):
                report.failed[name] = f"import failed: {exc}"
            else:
                report.missing.append(name)
            continue
        measure = getattr(module, "measure", None)
        if measure is None:
            report.missing.append(name)
            continue
        if on_start is not None:
            on_start(name)
        try:
            report.rows.extend(measure(quick=quick))
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            logger.exception("benchmark %s failed", name)
            report.failed[name] = f"{type(exc).__name__}: {exc}"
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    parser.add_argument(
        "--only", default=None, help=f"comma-separated subset of {','.join(SYSTEM_BENCHES)}"
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write rows as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    import sys

    names = [n.strip() for n in args.only.split(",")] if args.only else list(SYSTEM_BENCHES)
    report = run_system(
        names,
        quick=args.quick,
        on_start=lambda n: print(f"running {n} benchmark ...", file=sys.stderr, flush=True),
    )
    print(report.render())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench system")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
