"""Trajectory viewer: render time and page size for a big run, and how fast a browser shows it.

A synthetic trajectory of 50 iterations and 1,000 sub-calls (2,000-char prompt previews, the
most a record keeps) is rendered with `render_html`; the baseline is `json.dumps` of the same
records, measured in the same run, i.e. the cost of merely serialising what the page embeds.
With Chromium present, the page is opened headless and the time from navigation start to the
viewer's "rendered" mark is compared with a page that only shows the same JSON in a <pre>.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from rlm_mcp.bench._table import BenchRow, format_table

__all__ = ["main", "measure", "synthetic_records"]

_CODE = (
    "chunks = [context[i:i + 200_000] for i in range(0, len(context), 200_000)]\n"
    "answers = llm_query_batched(['Which dates appear? Answer as a list.\\n\\n' + c "
    "for c in chunks])\n"
    "for i, a in enumerate(answers):\n    print(i, a[:80])\n"
)


def _sub(i: int, prompt_chars: int) -> dict[str, Any]:
    return {
        "prompt_chars": 200_000,
        "response_chars": 180,
        "model": "sub-model",
        "input_tokens": 50_000,
        "output_tokens": 45,
        "cost": 0.0075,
        "depth": 1,
        "child": False,
        "index": i,
        "duration_s": 1.25,
        "prompt_preview": (
            "Which dates appear? Answer as a list.\n\n" + "lorem ipsum dolor " * 200
        )[:prompt_chars],
        "response_preview": f"2024-01-{i % 28 + 1:02d}, 2024-02-{i % 27 + 1:02d} and more " * 3,
        "trajectory": [],
    }


def synthetic_records(
    iterations: int = 50, sub_calls: int = 1_000, *, prompt_chars: int = 2_000
) -> list[dict[str, Any]]:
    """A finished run's records, shaped like TrajectoryWriter's, of the given size."""
    per = [
        sub_calls // iterations + (1 if i < sub_calls % iterations else 0)
        for i in range(iterations)
    ]
    records: list[dict[str, Any]] = [
        {
            "type": "config",
            "root_model": "root-model",
            "sub_model": "sub-model",
            "backend": "openai",
            "max_iterations": iterations,
            "max_depth": 1,
            "context_kind": "str",
            "context_chars": 200_000 * max(1, sub_calls),
            "context_documents": 1,
            "root_prompt": "Which dates does the archive mention most often?",
            "system_prompt": "You answer a question about a text too large to read at once. " * 30,
        }
    ]
    n = 0
    for it in range(1, iterations + 1):
        subs = []
        for _ in range(per[it - 1]):
            n += 1
            subs.append(_sub(n, prompt_chars))
        error = it % 10 == 0
        records.append(
            {
                "type": "iteration",
                "iteration": it,
                "prompt_chars": 4_000 + 1_500 * it,
                "response": f"Step {it}: I split the text and ask about each chunk.\n```repl\n"
                + _CODE
                + "```\n",
                "code_blocks": [
                    {
                        "code": _CODE,
                        "status": "error" if error else "ok",
                        "output": "".join(f"{k} 2024-01-{k % 28 + 1:02d} ...\n" for k in range(60)),
                        "error": "NameError: name 'chunk' is not defined" if error else None,
                        "duration_s": 1.5,
                        "truncated": False,
                        "sub_calls": subs,
                    }
                ],
                "final_answer": "2024-01-05" if it == iterations else None,
                "duration_s": 3.2,
                "input_tokens": 1_000 + 400 * it,
                "output_tokens": 120,
            }
        )
    records.append(
        {
            "type": "result",
            "response": "2024-01-05",
            "usage": {
                "models": {
                    "root-model": {"model": "root-model", "calls": iterations},
                    "sub-model": {"model": "sub-model", "calls": sub_calls},
                },
                "total_input_tokens": 50_000 * sub_calls,
                "total_output_tokens": 45 * sub_calls,
                "total_cost": 0.0075 * sub_calls,
                "unknown_cost_models": [],
            },
            "iterations": iterations,
            "stop_reason": "final",
            "execution_time": 3.2 * iterations,
            "root_model": "root-model",
            "trajectory_path": None,
            "notes": [],
        }
    )
    return records


def _best_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


#: In the viewer page: open every sub-call (building its prompt, answer and child run) and lay
#: the page out; the time in ms.
_OPEN_ALL = """(() => { const t = performance.now();
  document.querySelector('.tools button').click(); document.body.offsetHeight;
  return performance.now() - t; })()"""
#: Baseline for it, in the same page: the same prompt and answer texts as bare <pre> elements
#: appended at once, then laid out.
_PLAIN_PRES = """(() => { const d = JSON.parse(document.getElementById('rlm-data').textContent);
  const t = performance.now(), box = document.createElement('div');
  const txt = v => typeof v === 'string' ? v : v.t;
  d.iterations.forEach(it => it.b.forEach(b => b.sub.forEach(s => {
    for (const v of [s.p, s.r]) { const p = document.createElement('pre');
      p.textContent = txt(v); box.appendChild(p); } })));
  document.body.appendChild(box); document.body.offsetHeight;
  return performance.now() - t; })()"""


def _browser_rows(page: str, baseline_page: str, repeat: int, sub_calls: int) -> list[BenchRow]:
    from rlm_mcp.viewer.browser import HeadlessChromium

    mark = "performance.getEntriesByName('rlm-rendered')[0].startTime"
    with tempfile.TemporaryDirectory() as tmp, HeadlessChromium(timeout=60) as browser:
        viewer_file = Path(tmp) / "viewer.html"
        plain_file = Path(tmp) / "plain.html"
        viewer_file.write_text(page, encoding="utf-8")
        plain_file.write_text(baseline_page, encoding="utf-8")
        viewer_ms, plain_ms, open_ms, pres_ms = [], [], [], []
        for _ in range(repeat):
            browser.open(viewer_file.as_uri())
            viewer_ms.append(float(browser.evaluate(mark)))
            open_ms.append(float(browser.evaluate(_OPEN_ALL)))
            browser.open(viewer_file.as_uri())
            pres_ms.append(float(browser.evaluate(_PLAIN_PRES)))
            browser.open(plain_file.as_uri())
            plain_ms.append(float(browser.evaluate(mark)))
        errors = list(browser.console_errors)
    if errors:
        raise RuntimeError(f"the page logged errors: {errors[:3]}")
    return [
        BenchRow(
            "viewer",
            "browser: navigation -> rendered",
            statistics.median(viewer_ms),
            "ms",
            statistics.median(plain_ms),
            "same JSON in a <pre>",
        ),
        BenchRow(
            "viewer",
            f"browser: open all {sub_calls} sub-calls",
            statistics.median(open_ms),
            "ms",
            statistics.median(pres_ms),
            "their texts as bare <pre>s",
        ),
    ]


def measure(
    iterations: int = 50, sub_calls: int = 1_000, *, browser: bool = True, repeat: int = 3
) -> list[BenchRow]:
    """Rows: render time, page size and (when Chromium is present) time to rendered."""
    from rlm_mcp.viewer import render_html

    records = synthetic_records(iterations, sub_calls)
    size = f"{iterations} it x {sub_calls} sub-calls"
    render_ms = _best_ms(lambda: render_html(records), repeat)
    dumps_ms = _best_ms(lambda: json.dumps(records), repeat)
    page = render_html(records)
    raw = json.dumps(records)
    rows = [
        BenchRow("viewer", f"render_html {size}", render_ms, "ms", dumps_ms, "json.dumps"),
        BenchRow(
            "viewer",
            f"page size {size}",
            len(page.encode()) / 1e6,
            "MB",
            len(raw.encode()) / 1e6,
            "JSONL records",
        ),
    ]
    if browser:
        from rlm_mcp.viewer.browser import find_chromium

        if find_chromium() is not None:
            plain = (
                "<!DOCTYPE html><html><body><pre>"
                + escape(raw)
                + "</pre><script>performance.mark('rlm-rendered')</script></body></html>"
            )
            rows += _browser_rows(page, plain, repeat, sub_calls)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench viewer", description=__doc__)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--sub-calls", type=int, default=1_000)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium rows")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = measure(args.iterations, args.sub_calls, browser=not args.no_browser, repeat=args.repeat)
    print(format_table(rows))
    return 0
