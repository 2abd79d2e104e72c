"""Trajectory records -> the compact, clipped data the page renders.

The page gets only what it shows, with short keys, because a run of 50 iterations and 1,000
sub-calls is embedded whole: every long text is clipped here (with its full length kept, so the
page can say what was cut) and totals are computed once here rather than in the browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlm_mcp.parsing import strip_code

__all__ = ["MAX_TEXT_CHARS", "build_view", "clip", "count_sub_calls"]

#: Longest text (code, output, reasoning, answer) the page shows in full; the rest is cut with a
#: note. A printed 1 MB dump would otherwise make the page slow to open and useless to read.
MAX_TEXT_CHARS = 20_000

Text = str | dict[str, Any]  # a str, or {"t": head, "n": full length} when clipped


def clip(text: Any, limit: int = MAX_TEXT_CHARS) -> Text:
    """`text` as a str, or its head with the full length when it is longer than `limit`."""
    s = "" if text is None else str(text)
    if len(s) <= limit:
        return s
    return {"t": s[:limit], "n": len(s)}


def _num(value: Any) -> float:
    try:
        value = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _plain(value: Any) -> Any:
    """A config value the page can show: numbers must be finite, anything odd becomes a str."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _cost(value: Any) -> float | None:
    """A cost, or None when unknown (absent, not a number, NaN: JSON.parse rejects NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        cost = float(value)
    except (TypeError, ValueError):
        return None
    return cost if math.isfinite(cost) else None


def _sub_call(rec: Mapping[str, Any]) -> dict[str, Any]:
    its = rec.get("trajectory") or []
    return {
        "i": int(_num(rec.get("index"))),
        "m": str(rec.get("model", "")),
        "d": int(_num(rec.get("depth", 1))),
        "c": bool(rec.get("child", False)),
        "ti": int(_num(rec.get("input_tokens"))),
        "to": int(_num(rec.get("output_tokens"))),
        "$": _cost(rec.get("cost")),
        "s": _num(rec.get("duration_s")),
        "pc": int(_num(rec.get("prompt_chars"))),
        "rc": int(_num(rec.get("response_chars"))),
        "p": clip(rec.get("prompt_preview", "")),
        "r": clip(rec.get("response_preview", "")),
        "it": [_iteration(r) for r in its if isinstance(r, Mapping)],
    }


def _block(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "code": clip(rec.get("code", "")),
        "st": str(rec.get("status", "")),
        "out": clip(rec.get("output", "")),
        "err": None if rec.get("error") is None else clip(rec.get("error")),
        "s": _num(rec.get("duration_s")),
        "tr": bool(rec.get("truncated", False)),
        # in call order: concurrent sub-calls are recorded as they finish
        "sub": sorted(
            (_sub_call(s) for s in rec.get("sub_calls") or [] if isinstance(s, Mapping)),
            key=lambda s: int(s["i"]),
        ),
        "tools": [_tool_call(t) for t in rec.get("tool_calls") or [] if isinstance(t, Mapping)],
    }


def _tool_call(rec: Mapping[str, Any]) -> dict[str, Any]:
    error = rec.get("error")
    return {
        "n": clip(rec.get("name", "")),
        "ok": bool(rec.get("ok", False)),
        "s": _num(rec.get("duration_s")),
        "a": clip(rec.get("arguments_preview", "")),
        "r": clip(rec.get("result_preview", "")),
        "e": None if error is None else clip(error),
    }


def _compaction(rec: Any) -> dict[str, Any] | None:
    if not isinstance(rec, Mapping):
        return None
    return {
        "before": int(_num(rec.get("chars_before"))),
        "after": int(_num(rec.get("chars_after"))),
        "n": int(_num(rec.get("messages_summarized"))),
        "sum": clip(rec.get("summary_preview", "")),
    }


def _iteration(rec: Mapping[str, Any]) -> dict[str, Any]:
    response = str(rec.get("response") or "")
    final = rec.get("final_answer")
    return {
        "n": int(_num(rec.get("iteration"))),
        "why": clip(strip_code(response).strip()),
        "s": _num(rec.get("duration_s")),
        "ti": int(_num(rec.get("input_tokens"))),
        "to": int(_num(rec.get("output_tokens"))),
        "pc": int(_num(rec.get("prompt_chars"))),
        "fin": None if final is None else clip(final),
        "b": [_block(b) for b in rec.get("code_blocks") or [] if isinstance(b, Mapping)],
        "cmp": _compaction(rec.get("compaction")),
    }


def count_sub_calls(iterations: Sequence[Mapping[str, Any]]) -> int:
    """Every sub-call under these iteration records, including those of child runs."""
    total = 0
    for it in iterations:
        for block in it.get("code_blocks") or []:
            for sub in block.get("sub_calls") or []:
                total += 1 + count_sub_calls(sub.get("trajectory") or [])
    return total


def _totals_from_iterations(iterations: Sequence[Mapping[str, Any]]) -> tuple[int, int, float]:
    """Tokens in/out and known cost summed from the records (for a run with no result line)."""
    t_in = t_out = 0
    cost = 0.0
    for it in iterations:
        t_in += int(_num(it.get("input_tokens")))
        t_out += int(_num(it.get("output_tokens")))
        for block in it.get("code_blocks") or []:
            for sub in block.get("sub_calls") or []:
                t_in += int(_num(sub.get("input_tokens")))
                t_out += int(_num(sub.get("output_tokens")))
                cost += _num(sub.get("cost"))
    return t_in, t_out, cost


def build_view(records: Sequence[Mapping[str, Any]], *, title: str | None = None) -> dict[str, Any]:
    """The page's data: a summary and the iterations, from the records of one trajectory."""
    config: Mapping[str, Any] = {}
    result: Mapping[str, Any] | None = None
    iterations: list[Mapping[str, Any]] = []
    for rec in records:
        kind = rec.get("type")
        if kind == "config" and not config:
            config = rec
        elif kind == "iteration":
            iterations.append(rec)
        elif kind == "result":
            result = rec
    summary: dict[str, Any] = {
        "question": clip(config.get("root_prompt") or ""),
        "complete": result is not None,
        "iterations": len(iterations),
        "sub_calls": count_sub_calls(iterations),
        "context": {
            "kind": _plain(config.get("context_kind")),
            "chars": _plain(config.get("context_chars")),
            "documents": _plain(config.get("context_documents")),
        },
        "limits": {
            k: _plain(config.get(k))
            for k in ("max_iterations", "max_depth", "max_tokens", "max_cost", "max_time")
            if config.get(k) is not None
        },
    }
    if result is not None:
        usage = result.get("usage") or {}
        models = usage.get("models") or {}
        summary.update(
            answer=clip(result.get("response", "")),
            stop=result.get("stop_reason"),
            tokens_in=int(_num(usage.get("total_input_tokens"))),
            tokens_out=int(_num(usage.get("total_output_tokens"))),
            cost=_cost(usage.get("total_cost")),
            unpriced=list(usage.get("unknown_cost_models") or []),
            wall=_num(result.get("execution_time")),
            models=[
                {"name": str(name), "calls": int(_num(m.get("calls")))}
                for name, m in models.items()
                if isinstance(m, Mapping)
            ],
            notes=[str(n) for n in result.get("notes") or []],
        )
    else:
        t_in, t_out, cost = _totals_from_iterations(iterations)
        names = [config.get("root_model"), config.get("sub_model")]
        summary.update(
            answer=None,
            stop=None,
            tokens_in=t_in,
            tokens_out=t_out,
            cost=cost or None,
            unpriced=[],
            wall=sum(_num(it.get("duration_s")) for it in iterations),
            models=[{"name": str(n), "calls": None} for n in dict.fromkeys(names) if n],
            notes=["No result record: the run crashed, was cancelled or is still running."],
        )
    return {
        "title": title or "RLM trajectory",
        "summary": summary,
        "config": {
            "root_model": _plain(config.get("root_model")),
            "sub_model": _plain(config.get("sub_model")),
            "backend": _plain(config.get("backend")),
        },
        "system": clip(config.get("system_prompt") or ""),
        "iterations": [_iteration(it) for it in iterations],
    }
