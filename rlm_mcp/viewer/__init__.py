"""The trajectory viewer: one self-contained HTML page for an RLM run's JSONL trajectory.

`rlm-mcp view RUN.jsonl` and the MCP resource for a finished run both come through here:

- `load_trajectory(path)` reads the records (config, iteration, result), tolerating the cut-off
  last line a crashed run leaves behind;
- `render_html(records)` returns the page (inline CSS and JS, no network, everything from the
  trajectory escaped);
- `write_html(path)` writes it beside the trajectory and returns where.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlm_mcp.errors import TrajectoryError

__all__ = ["load_trajectory", "render_html", "write_html"]

log = logging.getLogger(__name__)

_KINDS = frozenset({"config", "iteration", "result"})
_FIX = (
    "Pass the .jsonl file an RLM run writes (`rlm-mcp complete --log-dir DIR`, "
    "RLM(log_dir=...), or the server's trajectory folder)."
)


def load_trajectory(path: str | Path) -> list[dict[str, Any]]:
    """The records of a trajectory file, in order.

    A run that crashed mid-write leaves a last line without its newline; that line is dropped
    (with a warning) so the page still shows everything before it. Anything else that is not a
    trajectory raises TrajectoryError saying what was found.
    """
    p = Path(path)
    if not p.is_file():
        raise TrajectoryError(f"No trajectory file at {str(p)!r}. {_FIX}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrajectoryError(f"Cannot read {str(p)!r} as a trajectory ({exc}). {_FIX}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records: list[dict[str, Any]] = []
    for i, (n, line) in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1 and records and not text.endswith("\n"):
                log.warning("%s: dropping a cut-off last line (%d chars)", p, len(line))
                break
            raise TrajectoryError(
                f"{str(p)!r} is not a trajectory: line {n} is not JSON ({exc.msg}). {_FIX}"
            ) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            raise TrajectoryError(
                f'{str(p)!r} is not a trajectory: line {n} is not a record with a "type" '
                f"(config, iteration or result). {_FIX}"
            )
        records.append(rec)
    if not any(r["type"] in _KINDS for r in records):
        raise TrajectoryError(
            f"{str(p)!r} holds no trajectory records (config, iteration or result). {_FIX}"
        )
    return records


def render_html(records: Sequence[Mapping[str, Any]], *, title: str | None = None) -> str:
    """The viewer page for these records (as `load_trajectory` returns them)."""
    from rlm_mcp.viewer._model import build_view
    from rlm_mcp.viewer._page import page

    return page(build_view(records, title=title))


def write_html(trajectory: str | Path, out: str | Path | None = None) -> Path:
    """Write the page for a trajectory file; by default beside it, same stem, `.html`."""
    src = Path(trajectory)
    records = load_trajectory(src)
    dest = Path(out) if out is not None else src.with_suffix(".html")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(render_html(records, title=src.name), encoding="utf-8")
    except OSError as exc:
        raise TrajectoryError(
            f"Cannot write the viewer page to {str(dest)!r} ({exc.strerror or exc}). "
            "Pass a writable path with --out."
        ) from None
    return dest
