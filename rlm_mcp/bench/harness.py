"""Run tasks x methods x lengths, score them, and write the figures people compare methods by.

Outputs: a terminal table (mean per suite/length/method), `results.json` and `results.csv` with one
row per task and method, and `plot.png` of score and cost against context length (matplotlib with
the Agg backend, imported only when a plot is asked for). Progress goes to stderr so stdout stays
the table.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from rlm_mcp.bench.methods import MethodConfig, run_method
from rlm_mcp.bench.tasks import Task, generate, score
from rlm_mcp.lm.base import LM

__all__ = [
    "CellResult",
    "format_results",
    "make_tasks",
    "run_bench",
    "run_tasks_command",
    "write_outputs",
]


@dataclass(frozen=True)
class CellResult:
    task_id: str
    suite: str
    length: int
    method: str
    score: float
    input_tokens: int
    output_tokens: int
    cost: float | None
    wall_time_s: float
    iterations: int
    sub_calls: int
    calls: int
    answer: str
    response: str
    error: str | None


def make_tasks(suites: Sequence[str], lengths: Sequence[int], *, seed: int, n: int) -> list[Task]:
    """`n` tasks per (suite, length), seeds `seed` .. `seed + n - 1`."""
    return [generate(s, ln, seed=seed + i) for s in suites for ln in lengths for i in range(n)]


async def run_bench(
    tasks: Sequence[Task],
    methods: Sequence[str],
    *,
    root_lm: LM,
    sub_lm: LM | None = None,
    config: MethodConfig | None = None,
    progress: TextIO | None = None,
) -> list[CellResult]:
    """Every method on every task, sequentially (fan-out happens inside a method)."""
    out: list[CellResult] = []
    total = len(tasks) * len(methods)
    done = 0
    for task in tasks:
        for method in methods:
            if progress is not None:
                bar = "#" * (20 * done // max(1, total))
                progress.write(f"\r[{bar:<20}] {done}/{total} {task.task_id} {method:<14}")
                progress.flush()
            r = await run_method(method, task, root_lm=root_lm, sub_lm=sub_lm, config=config)
            out.append(
                CellResult(
                    task_id=task.task_id,
                    suite=task.suite,
                    length=len(task.context),
                    method=method,
                    score=score(task.scorer, r.response, task.answer) if not r.error else 0.0,
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    cost=r.cost,
                    wall_time_s=round(r.wall_time_s, 4),
                    iterations=r.iterations,
                    sub_calls=r.sub_calls,
                    calls=r.calls,
                    answer=task.answer,
                    response=r.response,
                    error=r.error,
                )
            )
            done += 1
    if progress is not None:
        progress.write(f"\r[{'#' * 20}] {done}/{total} done{' ' * 30}\n")
        progress.flush()
    return out


def _summary(results: Sequence[CellResult]) -> list[dict[str, object]]:
    """Means per suite, method and length as displayed ("16K"): generated tasks of one requested
    length differ by a few characters per seed, and must still be one row."""
    groups: dict[tuple[str, str, str], list[CellResult]] = defaultdict(list)
    for r in results:
        groups[(r.suite, _chars(r.length), r.method)].append(r)
    rows: list[dict[str, object]] = []
    for (suite, _, method), rs in groups.items():
        costs = [r.cost for r in rs]
        rows.append(
            {
                "suite": suite,
                "length": round(sum(r.length for r in rs) / len(rs)),
                "method": method,
                "n": len(rs),
                "score": sum(r.score for r in rs) / len(rs),
                "input_tokens": sum(r.input_tokens for r in rs) / len(rs),
                "output_tokens": sum(r.output_tokens for r in rs) / len(rs),
                "cost": None if any(c is None for c in costs) else sum(costs) / len(rs),  # type: ignore[arg-type]
                "wall_time_s": sum(r.wall_time_s for r in rs) / len(rs),
                "iterations": sum(r.iterations for r in rs) / len(rs),
                "sub_calls": sum(r.sub_calls for r in rs) / len(rs),
                "errors": sum(r.error is not None for r in rs),
            }
        )
    return rows


def _chars(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("K", 1_000)):
        if n >= size:
            return f"{n / size:.0f}{unit}"
    return str(n)


def format_results(results: Sequence[CellResult]) -> str:
    """Markdown-compatible table of means per suite, length and method."""
    header = [
        "suite",
        "chars",
        "method",
        "n",
        "score",
        "in tok",
        "out tok",
        "cost $",
        "time s",
        "iters",
        "sub-calls",
        "errors",
    ]
    body = [
        [
            str(r["suite"]),
            _chars(int(r["length"])),  # type: ignore[call-overload]
            str(r["method"]),
            str(r["n"]),
            f"{r['score']:.3f}",
            f"{r['input_tokens']:,.0f}",
            f"{r['output_tokens']:,.0f}",
            "-" if r["cost"] is None else f"{r['cost']:.4f}",
            f"{r['wall_time_s']:.2f}",
            f"{r['iterations']:.1f}",
            f"{r['sub_calls']:.1f}",
            str(r["errors"]),
        ]
        for r in _summary(results)
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(row) for row in body)])


def write_outputs(
    results: Sequence[CellResult], out_dir: str | Path, *, plot: bool = True
) -> dict[str, Path]:
    """results.json (cells + summary), results.csv (cells), plot.png (score, cost vs length)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv"}
    paths["json"].write_text(
        json.dumps(
            {"results": [asdict(r) for r in results], "summary": _summary(results)}, indent=2
        ),
        encoding="utf-8",
    )
    fields = list(CellResult.__dataclass_fields__)
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))
    if plot and results:
        paths["png"] = _plot(results, out / "plot.png")
    return paths


def _plot(results: Sequence[CellResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = _summary(results)
    suites = sorted({str(r["suite"]) for r in summary})
    fig, axes = plt.subplots(2, len(suites), figsize=(5 * len(suites), 7), squeeze=False)
    for col, suite in enumerate(suites):
        by_method: dict[str, list[dict[str, object]]] = defaultdict(list)
        for r in summary:
            if r["suite"] == suite:
                by_method[str(r["method"])].append(r)
        for method, rows in sorted(by_method.items()):
            rows.sort(key=lambda r: int(r["length"]))  # type: ignore[call-overload]
            xs = [int(r["length"]) for r in rows]  # type: ignore[call-overload]
            axes[0][col].plot(xs, [r["score"] for r in rows], marker="o", label=method)
            cost = [
                r["cost"] if r["cost"] is not None else r["input_tokens"] + r["output_tokens"]  # type: ignore[operator]
                for r in rows
            ]
            axes[1][col].plot(xs, cost, marker="o", label=method)
        axes[0][col].set_title(f"{suite}: score")
        axes[0][col].set_ylim(-0.05, 1.05)
        axes[1][col].set_title(f"{suite}: cost $ (tokens when price unknown)")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log")
            ax.set_xlabel("context length (chars)")
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_tasks_command(
    args: argparse.Namespace, *, environ: Mapping[str, str], limits: Any = None
) -> int:
    """The `rlm-mcp bench tasks` body: build tasks and models, run, print, write files."""
    from contextlib import ExitStack

    from rlm_mcp.bench.tasks import load_taskfile, parse_length
    from rlm_mcp.errors import ConfigError
    from rlm_mcp.lm import resolve_lm

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.tasks:
        tasks = load_taskfile(args.tasks)
    else:
        suites = [s.strip() for s in args.suite.split(",") if s.strip()]
        lengths = [parse_length(x) for x in args.lengths.split(",") if x.strip()]
        tasks = make_tasks(suites, lengths, seed=args.seed, n=args.n)
    defaults = MethodConfig()
    config = MethodConfig(
        window_chars=args.window_chars or defaults.window_chars,
        chunk_chars=args.chunk_chars or defaults.chunk_chars,
        top_k=args.top_k or defaults.top_k,
        max_iterations=args.max_iterations or defaults.max_iterations,
        sandbox_limits=limits,
    )
    with ExitStack() as stack:
        backend, base_url, model, sub_model = (
            args.backend,
            args.base_url,
            args.model,
            args.sub_model,
        )
        api_key = None
        if args.local_model:
            from rlm_mcp.bench.localmodel import LocalModelServer

            server = stack.enter_context(LocalModelServer(args.local_model))
            backend, base_url, api_key = "openai", server.base_url, "local"
            model = sub_model = args.local_model
        if not model:
            raise ConfigError("no model: pass --model NAME (or --local-model qwen-0.5b)")
        kwargs = {"base_url": base_url} if base_url else {}
        if api_key:
            kwargs["api_key"] = api_key
        root = resolve_lm(backend, environ=environ, model_name=model, **kwargs)
        sub = (
            resolve_lm(backend, environ=environ, model_name=sub_model, **kwargs)
            if sub_model and sub_model != model
            else root
        )
        results = anyio.run(
            functools.partial(_run_and_close, tasks, methods, root=root, sub=sub, config=config)
        )
    print(format_results(results))
    paths = write_outputs(results, args.out, plot=not args.no_plot)
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


async def _run_and_close(
    tasks: Sequence[Task], methods: Sequence[str], *, root: LM, sub: LM, config: MethodConfig
) -> list[CellResult]:
    """Close provider clients in the same event loop that opened them (no leaked sockets)."""
    try:
        return await run_bench(
            tasks, methods, root_lm=root, sub_lm=sub, config=config, progress=sys.stderr
        )
    finally:
        for lm in {id(root): root, id(sub): sub}.values():
            close = getattr(lm, "aclose", None)
            if close is not None:
                await close()
