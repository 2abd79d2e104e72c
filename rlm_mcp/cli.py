"""The `rlm-mcp` command. With `config.py`, the only module that reads the environment.

Each subcommand is a small function taking the parsed arguments and returning an exit code.
Domain errors become one line on stderr and exit code 2; anything else is a bug and keeps its
traceback (logged) so it can be reported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rlm_mcp._version import __version__
from rlm_mcp.config import Settings
from rlm_mcp.errors import RLMError

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-mcp",
        description="Recursive Language Models over huge inputs: an MCP server, a library, a CLI.",
    )
    parser.add_argument("--version", action="version", version=f"rlm-mcp {__version__}")
    parser.add_argument(
        "--home", default=None, help="data folder (default: $RLM_MCP_HOME or the platform cache)"
    )
    parser.add_argument("--log-level", default=None, help="stderr logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMAND_GROUPS:
        add(sub)
    return parser


_COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = Settings.from_env(home=args.home, log_level=args.log_level)
        logging.basicConfig(
            level=settings.log_level.upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        handler: Handler = args.handler
        return handler(args, settings)
    except RLMError as exc:
        print(f"rlm-mcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlm-mcp: interrupted", file=sys.stderr)
        return 130


# --- bench (issue 7) -------------------------------------------------------------------------


def _bench_tasks(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from rlm_mcp.bench.harness import run_tasks_command

    return run_tasks_command(args, environ=os.environ)


def _bench_system(args: argparse.Namespace, settings: Settings) -> int:
    from rlm_mcp.bench.system import run_from_args

    return run_from_args(args)


def _add_bench_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="accuracy/cost benchmarks and system benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    t = bsub.add_parser("tasks", help="run S-NIAH / OOLONG-style / pairs tasks across methods")
    t.add_argument("--suite", default="sniah", help="sniah, oolong, pairs (comma-separated)")
    t.add_argument("--tasks", default=None, metavar="JSONL", help="your own task file instead")
    t.add_argument("--lengths", default="16k", help="context sizes in chars, e.g. 100k,1m,10m")
    t.add_argument("--methods", default="rlm,base,map-reduce,sliding-window,retrieval")
    t.add_argument("--backend", default="openai", help="openai, anthropic, ollama, vllm, llamacpp")
    t.add_argument("--model", default=None, help="root model")
    t.add_argument("--sub-model", default=None, help="sub-call model (default: the root model)")
    t.add_argument("--base-url", default=None, help="OpenAI-compatible server URL")
    t.add_argument(
        "--local-model",
        default=None,
        choices=["qwen-0.5b", "qwen-1.5b"],
        help="start llama.cpp's server on the installed Qwen GGUF parts and use it",
    )
    t.add_argument("--out", default="bench-results", help="folder for results.json/.csv/plot.png")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n", type=int, default=1, help="tasks per suite and length")
    t.add_argument("--window-chars", type=int, default=None, help="base/retrieval window")
    t.add_argument("--chunk-chars", type=int, default=None, help="map-reduce/window chunk size")
    t.add_argument("--top-k", type=int, default=None, help="retrieval chunks")
    t.add_argument("--max-iterations", type=int, default=None, help="rlm root turns")
    t.add_argument("--no-plot", action="store_true", help="skip plot.png")
    t.set_defaults(handler=_bench_tasks)
    s = bsub.add_parser("system", help="store, sandbox, fan-out, loop, server benchmarks")
    s.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    s.add_argument("--only", default=None, help="comma-separated: store,sandbox,fanout,loop,server")
    s.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    s.set_defaults(handler=_bench_system)


_COMMAND_GROUPS.append(_add_bench_commands)


# --- context store (issue 2) -----------------------------------------------------------------

_PROGRESS_MIN_BYTES = 20 * 1024 * 1024


def _store(settings: Settings) -> Any:
    from rlm_mcp.store import ContextStore

    return ContextStore(
        settings.store_dir,
        max_bytes=settings.max_store_bytes,
        max_age_days=settings.max_age_days,
        max_context_bytes=settings.max_context_bytes,
        allowed_roots=settings.allowed_roots,
    )


def _port(text: str) -> int:
    """argparse type: a TCP port, so a typo is a usage error, not an OverflowError traceback."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def _print_info(info: Any) -> None:
    print(info.handle)
    docs = f", {len(info.documents):,} documents" if info.documents else ""
    bad = f", {info.replaced:,} undecodable bytes replaced" if info.replaced else ""
    name = f" name={info.name}" if info.name else ""
    print(f"  {info.chars:,} chars, {info.lines:,} lines, {info.bytes:,} bytes{docs}{bad}{name}")


def _progress_printer(label: str) -> Callable[[int, int | None], None]:
    """A one-line progress indication on stderr, only for big inputs."""
    last = [-1]

    def show(done: int, total: int | None) -> None:
        if total is None or total < _PROGRESS_MIN_BYTES:
            return
        pct = done * 100 // total
        if pct != last[0]:
            last[0] = pct
            end = "\n" if done >= total else ""
            print(
                f"\rloading {label}: {pct:3d}% of {total / 1e6:,.0f} MB", end=end, file=sys.stderr
            )

    return show


def _cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    if not args.paths and args.text is None:
        print("rlm-mcp load: give PATH... or --text TEXT", file=sys.stderr)
        return 2
    if len(args.paths) + (args.text is not None) > 1 and args.name:
        print("rlm-mcp load: --name needs a single input", file=sys.stderr)
        return 2
    with _store(settings) as store:
        if args.text is not None:
            _print_info(store.load_text(args.text, name=args.name))
        for path in args.paths:
            _print_info(store.load_path(path, name=args.name, progress=_progress_printer(path)))
        store.evict()
    return 0


def _cmd_contexts(args: argparse.Namespace, settings: Settings) -> int:
    import datetime

    with _store(settings) as store:
        infos = store.list()
    if not infos:
        print("no contexts stored (add one with `rlm-mcp load PATH`)")
        return 0
    print(f"{'HANDLE':<16}  {'NAME':<16}  {'CHARS':>14}  {'DOCS':>5}  {'LAST USED':<16}  SOURCE")
    for i in infos:
        used = datetime.datetime.fromtimestamp(i.last_used).strftime("%Y-%m-%d %H:%M")
        print(
            f"{i.handle:<16}  {(i.name or '-'):<16}  {i.chars:>14,}  {len(i.documents):>5}  "
            f"{used:<16}  {i.source}"
        )
    return 0


def _cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    from rlm_mcp.errors import ContextNotFoundError

    with _store(settings) as store:
        for h in args.handles:
            if not store.delete(h):
                raise ContextNotFoundError(h)
            print(f"removed {h}")
    return 0


def _add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = sub.add_parser("load", help="store a file, directory, glob or text; print its handle")
    load.add_argument("paths", nargs="*", metavar="PATH", help="file, directory or glob pattern")
    load.add_argument("--name", default=None, help="an alias usable instead of the handle")
    load.add_argument("--text", default=None, help="store this text instead of a path")
    load.set_defaults(handler=_cmd_load)
    ctx = sub.add_parser("contexts", help="list stored contexts")
    ctx.set_defaults(handler=_cmd_contexts)
    rm = sub.add_parser("rm", help="delete stored contexts by handle or name")
    rm.add_argument("handles", nargs="+", metavar="HANDLE")
    rm.set_defaults(handler=_cmd_rm)


_COMMAND_GROUPS.append(_add_store_commands)


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from rlm_mcp.server import serve

    serve(settings, transport=args.transport, host=args.host, port=args.port, environ=os.environ)
    return 0


def _add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    srv = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    srv.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=_port, default=8765)
    srv.set_defaults(handler=_cmd_serve)


_COMMAND_GROUPS.append(_add_server_commands)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses
    import os

    import anyio

    from rlm_mcp.bench.tasks.generators import parse_length
    from rlm_mcp.demo import run_demo

    real = bool(args.backend or args.model)
    if real:
        settings = dataclasses.replace(
            settings,
            backend=args.backend or settings.backend,
            model=args.model or settings.model,
            sub_model=args.sub_model or settings.sub_model,
        )
    result = anyio.run(
        lambda: run_demo(
            settings, chars=parse_length(args.chars), real_models=real, environ=dict(os.environ)
        )
    )
    return 0 if result.correct else 1


def _add_demo_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: load a haystack, run_repl, rlm_complete through the MCP protocol",
    )
    p.add_argument("--chars", default="2m", help="haystack size, e.g. 200k, 2m, 50m (default 2m)")
    p.add_argument("--backend", default=None, help="use real models from this backend")
    p.add_argument("--model", default=None, help="root model (implies real models)")
    p.add_argument("--sub-model", default=None, help="sub-call model")
    p.set_defaults(handler=_cmd_demo)


_COMMAND_GROUPS.append(_add_demo_commands)


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from rlm_mcp.clients import snippet

    print(snippet(args.client))
    return 0


def _add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from rlm_mcp.clients import CLIENTS

    cfg = sub.add_parser("config", help="print the MCP client config snippet for this install")
    cfg.add_argument("client", choices=CLIENTS)
    cfg.set_defaults(handler=_cmd_config)


_COMMAND_GROUPS.append(_add_config_commands)


# --- the RLM loop (issue 5) ------------------------------------------------------------------


def _cmd_complete(args: argparse.Namespace, settings: Settings) -> int:
    import os
    from pathlib import Path

    from rlm_mcp.backends import build_lms
    from rlm_mcp.errors import RLMError
    from rlm_mcp.rlm import RLM
    from rlm_mcp.sandbox import ContextSpec

    try:
        lm, sub_lm = build_lms(
            settings,
            environ=os.environ,
            backend=args.backend,
            model=args.model,
            sub_backend=args.sub_backend,
            sub_model=args.sub_model,
            base_url=args.base_url,
        )
        store = None
        context: Any
        if args.context.startswith("ctx_"):
            store = _store(settings)
            context = args.context
        else:
            path = Path(args.context)
            if not path.is_file():
                print(
                    f"rlm-mcp complete: {args.context!r} is neither a file nor a stored handle "
                    "(ctx_...). Load it with `rlm-mcp load` or pass a file path.",
                    file=sys.stderr,
                )
                return 2
            context = ContextSpec(path=path)
        rlm = RLM(
            lm=lm,
            sub_lm=sub_lm,
            max_iterations=args.max_iterations or settings.max_iterations,
            max_depth=args.max_depth or settings.max_depth,
            log_dir=Path(args.log_dir) if args.log_dir else None,
            verbose=args.verbose,
            store=store,
            max_cost=args.max_cost,
            max_time=args.max_time,
            max_tokens=args.max_tokens,
        )

        async def run() -> Any:
            try:
                return await rlm.acompletion(context, args.query)
            finally:
                # SDK connection pools belong to this event loop: close them before it ends.
                for model in {id(lm): lm, id(sub_lm): sub_lm}.values():
                    close = getattr(model, "aclose", None)
                    if close is not None:
                        await close()

        import anyio

        result = anyio.run(run)
    except RLMError as exc:
        print(f"rlm-mcp complete: {exc}", file=sys.stderr)
        return 1
    print(result.response)
    u = result.usage
    cost = "unknown" if u.total_cost is None else f"${u.total_cost:.4f}"
    if u.total_cost is not None and u.unknown_cost_models:
        cost += f" + unpriced {', '.join(u.unknown_cost_models)}"
    print(
        f"[{result.stop_reason}] {result.iterations} iterations, {u.total_calls} calls, "
        f"{u.total_input_tokens:,} in / {u.total_output_tokens:,} out tokens, cost {cost}, "
        f"{result.execution_time:.1f}s",
        file=sys.stderr,
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.trajectory_path is not None:
        print(f"trajectory: {result.trajectory_path}", file=sys.stderr)
    return 0


def _add_complete_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("complete", help="answer a question about a file or stored context (RLM)")
    p.add_argument("--context", required=True, help="a file path or a stored handle ctx_...")
    p.add_argument("--query", required=True, help="the question")
    p.add_argument("--backend", default=None, help="root-model backend (default: settings)")
    p.add_argument("--model", default=None, help="root-model name")
    p.add_argument("--sub-backend", default=None, help="backend for llm_query sub-calls")
    p.add_argument("--sub-model", default=None, help="model for llm_query sub-calls")
    p.add_argument("--base-url", default=None, help="OpenAI/Anthropic-compatible base URL")
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--max-depth", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None, help="token budget for the whole run")
    p.add_argument("--max-cost", type=float, default=None, help="cost budget (USD)")
    p.add_argument("--max-time", type=float, default=None, help="wall-time budget (seconds)")
    p.add_argument("--log-dir", default=None, help="write the trajectory JSONL here")
    p.add_argument("--verbose", action="store_true", help="live view of the run on stderr")
    p.set_defaults(handler=_cmd_complete)


_COMMAND_GROUPS.append(_add_complete_commands)


# --- trajectory viewer (issue 8) -------------------------------------------------------------


def _cmd_view(args: argparse.Namespace, settings: Settings) -> int:
    import webbrowser

    from rlm_mcp.viewer import write_html

    out = write_html(args.trajectory, args.out)
    print(out)
    if args.open and not webbrowser.open(out.resolve().as_uri()):
        print("rlm-mcp view: no browser could be opened; open the file above.", file=sys.stderr)
    return 0


def _add_view_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("view", help="write a self-contained HTML page for a trajectory JSONL")
    p.add_argument("trajectory", help="a trajectory .jsonl (rlm-mcp complete --log-dir DIR)")
    p.add_argument("--out", default=None, help="the page to write (default: beside it, .html)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(handler=_cmd_view)


_COMMAND_GROUPS.append(_add_view_commands)
