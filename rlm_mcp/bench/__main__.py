"""`python -m rlm_mcp.bench NAME [ARGS]`: run one benchmark module's `main(argv) -> int`.

Each benchmark lives in `rlm_mcp/bench/NAME.py` and prints a table of measured figures with the
baseline it was measured against in the same run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import rlm_mcp.bench


def available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(rlm_mcp.bench.__path__)
        if not m.name.startswith("_")
        and hasattr(importlib.import_module(f"rlm_mcp.bench.{m.name}"), "main")
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = available()
    if not args or args[0] in {"-h", "--help"}:
        print(f"usage: python -m rlm_mcp.bench {{{','.join(names)}}} [ARGS]")
        return 0 if args else 2
    if args[0] not in names:
        print(f"unknown benchmark {args[0]!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"rlm_mcp.bench.{args[0]}")
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
