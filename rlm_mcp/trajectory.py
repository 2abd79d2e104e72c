"""Trajectory JSONL (one record per line) and a plain-text live view for `verbose=True`.

Lines: {"type": "config", ...}, one {"type": "iteration", ...} per iteration (IterationRecord
fields), and {"type": "result", ...} (RLMChatCompletion.to_dict() without the trajectory).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from rlm_mcp.types import IterationRecord, RLMChatCompletion, RLMEvent

__all__ = ["TrajectoryWriter", "VerbosePrinter", "read_trajectory"]


class TrajectoryWriter:
    """Appends records to `<log_dir>/rlm_<utc time>_<id>.jsonl`, flushing each line."""

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = log_dir / f"rlm_{stamp}_{uuid.uuid4().hex[:8]}.jsonl"
        self._fh: TextIO | None = self.path.open(
            "a", encoding="utf-8", errors="backslashreplace"
        )  # a lone surrogate is written as its JSON escape, so the line stays valid JSON

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()

    def config(self, **config: Any) -> None:
        self.write({"type": "config", **config})

    def iteration(self, record: IterationRecord) -> None:
        self.write({"type": "iteration", **record.to_dict()})

    def result(self, result: RLMChatCompletion) -> None:
        d = result.to_dict()
        d.pop("trajectory")
        self.write({"type": "result", **d})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_trajectory(path: Path) -> dict[str, Any]:
    """{"config": {...}, "iterations": [IterationRecord], "result": {...} | None}."""
    out: dict[str, Any] = {"config": None, "iterations": [], "result": None}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        kind = rec.pop("type")
        if kind == "iteration":
            out["iterations"].append(IterationRecord.from_dict(rec))
        else:
            out[kind] = rec
    return out


class VerbosePrinter:
    """An event callback that prints a readable live view to stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def __call__(self, event: RLMEvent) -> None:
        stream = self.stream or sys.stderr
        indent = "  " * event.depth
        it = "" if event.iteration is None else f"[{event.iteration}] "
        stream.write(f"{indent}{it}{event.kind}: {event.message}\n")
        if event.kind == "iteration_finished":
            for block in event.data.get("code_blocks", []):
                stream.write(f"{indent}  code ({block['status']}):\n")
                for line in block["code"].strip().splitlines()[:15]:
                    stream.write(f"{indent}  | {line}\n")
                out = block["output"].strip()
                if out:
                    stream.write(f"{indent}  > {out[:500]}\n")
        stream.flush()
