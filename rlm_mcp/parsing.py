"""Reading the root model's turn: code blocks to run and a FINAL answer written in prose.

FINAL only counts at the start of a line, outside fenced code and outside backticks, so a
`FINAL(` quoted mid-sentence, in a code block's text or in echoed output never ends a run. FINAL
called by code is reported by the sandbox at run time (ExecResult.final), not parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["FinalMarker", "find_code_blocks", "find_final", "strip_code"]

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
_FINAL_START = re.compile(r"^[ \t]*(?:\*\*)?(FINAL_VAR|FINAL)\(", re.M)


@dataclass(frozen=True, slots=True)
class FinalMarker:
    kind: Literal["FINAL", "FINAL_VAR"]
    value: str  # the answer text, or the variable name for FINAL_VAR


def find_code_blocks(text: str) -> list[str]:
    """```repl blocks in order; ```python ones only when the turn has no repl block."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    repl = [code for tag, code in blocks if tag == "repl"]
    if repl:
        return repl
    return [code for tag, code in blocks if tag in ("python", "py", "python3")]


def strip_code(text: str) -> str:
    """The turn with fenced code blocks removed."""
    return _FENCE.sub("", text)


def _balanced(text: str, start: int) -> int | None:
    """Index of the ')' that closes the '(' just before `start`, None if it never closes."""
    depth = 1
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _unquote(value: str) -> str:
    v = value.strip()
    for q in ('"""', "'''", '"', "'"):
        if len(v) >= 2 * len(q) and v.startswith(q) and v.endswith(q):
            return v[len(q) : -len(q)]
    return v


def find_final(text: str) -> FinalMarker | None:
    """The first FINAL(...)/FINAL_VAR(...) at a line start outside code, with balanced parens."""
    prose = strip_code(text)
    for m in _FINAL_START.finditer(prose):
        line_start = prose.rfind("\n", 0, m.start()) + 1
        if prose[line_start : m.start()].count("`") % 2:
            continue
        end = _balanced(prose, m.end())
        # Unclosed: take the rest of the turn (models sometimes forget the last paren).
        inner = prose[m.end() :].rstrip() if end is None else prose[m.end() : end]
        if m.group(1) == "FINAL_VAR":
            name = _unquote(inner).strip()
            return FinalMarker("FINAL_VAR", name)
        return FinalMarker("FINAL", _unquote(inner))
    return None
