"""The `rlm-mcp` command. With `config.py` (through `Runtime.from_env`), the only module that
reads the environment.

Each subcommand is a small function taking the parsed arguments and the one `Runtime` built from
them, and returning an exit code. Exit codes are the same in every command: 0 done, 1 the command
ran but its result is a failure (a wrong demo answer), 2 a usage, configuration or domain error
(one line on stderr: what went wrong and what to do), 130 interrupted. Nothing prints a Python
traceback: an unexpected exception is one line too, with the traceback in the log at DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rlm_mcp._version import __version__
from rlm_mcp.errors import RLMError

if TYPE_CHECKING:
    from rlm_mcp.runtime import Runtime

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "build_parser", "main"]

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, "Runtime"], int]
#: The command ran and its result is a failure (e.g. the demo's answer was wrong).
EXIT_FAILED = 1
#: Usage, configuration or domain error: one line on stderr says what to fix.
EXIT_USAGE = 2


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
        from rlm_mcp.runtime import Runtime

        runtime = Runtime.from_env(home=args.home, log_level=args.log_level)
        level = runtime.settings.log_level.upper()
        if not isinstance(logging.getLevelName(level), int):
            print(
                f"rlm-mcp: log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR",
                file=sys.stderr,
            )
            return EXIT_USAGE
        logging.basicConfig(
            level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        handler: Handler = args.handler
        return handler(args, runtime)
    except RLMError as exc:
        print(f"rlm-mcp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rlm-mcp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line here, the traceback in the log
        logger.debug("unexpected error", exc_info=True)
        print(
            f"rlm-mcp: unexpected {type(exc).__name__}: {exc}. This is a bug in rlm-mcp; run "
            "again with --log-level DEBUG for the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_FAILED


# --- bench (issue 7) -------------------------------------------------------------------------


def _bench_tasks(args: argparse.Namespace, runtime: Runtime) -> int:
    from rlm_mcp.bench.harness import run_tasks_command

    return run_tasks_command(args, environ=runtime.environ, limits=runtime.sandbox_limits)


def _bench_system(args: argparse.Namespace, runtime: Runtime) -> int:
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
    s.add_argument(
        "--only",
        default=None,
        help="comma-separated: store,sandbox,fanout,loop,server,http_load,agents",
    )
    s.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    s.set_defaults(handler=_bench_system)


_COMMAND_GROUPS.append(_add_bench_commands)


# --- context store (issue 2) -----------------------------------------------------------------

_PROGRESS_MIN_BYTES = 20 * 1024 * 1024


def _store(runtime: Runtime) -> Any:
    """The runtime's store, closed when the command's `with` block ends."""
    import contextlib

    return contextlib.closing(runtime.store())


def _port(text: str) -> int:
    """argparse type: a TCP port, so a typo is a usage error, not an OverflowError traceback."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse type: a number above 0 (0 would otherwise silently mean the default)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
        return value

    return parse


def _length(text: str) -> int:
    """argparse type: a size such as 200k or 2m, so a typo is a usage error, not a traceback."""
    from rlm_mcp.bench.tasks.generators import parse_length

    try:
        n = parse_length(text)
    except (ValueError, OverflowError):
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: use e.g. 200k, 2m or 50000")
    return n


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


def _cmd_load(args: argparse.Namespace, runtime: Runtime) -> int:
    if not args.paths and args.text is None:
        print("rlm-mcp load: give PATH... or --text TEXT", file=sys.stderr)
        return 2
    if len(args.paths) + (args.text is not None) > 1 and args.name:
        print("rlm-mcp load: --name needs a single input", file=sys.stderr)
        return 2
    with _store(runtime) as store:
        if args.text is not None:
            _print_info(store.load_text(args.text, name=args.name))
        for path in args.paths:
            _print_info(store.load_path(path, name=args.name, progress=_progress_printer(path)))
        store.evict()
    return 0


def _cmd_contexts(args: argparse.Namespace, runtime: Runtime) -> int:
    import datetime

    with _store(runtime) as store:
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


def _cmd_rm(args: argparse.Namespace, runtime: Runtime) -> int:
    from rlm_mcp.errors import ContextNotFoundError

    with _store(runtime) as store:
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


def _cmd_serve(args: argparse.Namespace, runtime: Runtime) -> int:

    from rlm_mcp.server import serve

    if args.stateless:
        runtime = runtime.replace(stateless=True)
    serve(runtime, transport=args.transport, host=args.host, port=args.port)
    return 0


def _add_server_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    srv = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    srv.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=_port, default=8765)
    srv.add_argument(
        "--stateless",
        action="store_true",
        help="keep no session state in this process (replicas behind a load balancer); needs "
        "RLM_MCP_STORE and RLM_MCP_RAY_ADDRESS",
    )
    srv.set_defaults(handler=_cmd_serve)


_COMMAND_GROUPS.append(_add_server_commands)


def _cmd_demo(args: argparse.Namespace, runtime: Runtime) -> int:
    import anyio

    from rlm_mcp.demo import run_demo

    real = bool(args.backend or args.model)
    if real:
        runtime = runtime.replace(
            backend=args.backend or runtime.settings.backend,
            model=args.model or runtime.settings.model,
            sub_model=args.sub_model or runtime.settings.sub_model,
        )
    result = anyio.run(lambda: run_demo(runtime, chars=args.chars, real_models=real))
    return 0 if result.correct else EXIT_FAILED


def _add_demo_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: load a haystack, run_repl, rlm_complete through the MCP protocol",
    )
    p.add_argument(
        "--chars",
        default=2_000_000,
        type=_length,
        help="haystack size, e.g. 200k, 2m, 50m (default 2m)",
    )
    p.add_argument("--backend", default=None, help="use real models from this backend")
    p.add_argument("--model", default=None, help="root model (implies real models)")
    p.add_argument("--sub-model", default=None, help="sub-call model")
    p.set_defaults(handler=_cmd_demo)


_COMMAND_GROUPS.append(_add_demo_commands)


def _cmd_config(args: argparse.Namespace, runtime: Runtime) -> int:
    from rlm_mcp.clients import snippet

    print(snippet(args.client))
    return 0


def _add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from rlm_mcp.clients import CLIENTS

    cfg = sub.add_parser("config", help="print the MCP client config snippet for this install")
    cfg.add_argument("client", choices=CLIENTS)
    cfg.set_defaults(handler=_cmd_config)


_COMMAND_GROUPS.append(_add_config_commands)


_WHY = {
    "openai": "OPENAI_API_KEY or OPENAI_BASE_URL is set",
    "anthropic": "ANTHROPIC_API_KEY is set",
    "claude-code": "the `claude` program is on PATH; sub-calls count against your Claude plan",
    "codex": "the `codex` program is on PATH; sub-calls count against your ChatGPT plan",
    "gemini-cli": "the `gemini` program is on PATH; sub-calls count against your Gemini quota",
}


def _cmd_doctor(args: argparse.Namespace, runtime: Runtime) -> int:
    import time

    import anyio

    from rlm_mcp.backends import explain_auto
    from rlm_mcp.errors import MissingAPIKeyError
    from rlm_mcp.lm.base import Message

    s = runtime.settings
    lines, pick = explain_auto(runtime.environ, s.backend)
    print(f"rlm-mcp doctor: how `{s.backend}` chooses a model, in order")
    for line in lines:
        print(f"  {line}")
    if pick is None:
        print(f"  -> nothing found. {MissingAPIKeyError('any provider', '')}")
        return EXIT_FAILED
    print(f"  -> picks {pick}: {_WHY.get(pick, 'the explicit setting')}")
    if not args.call:
        print("  (run `rlm-mcp doctor --call` to make one tiny call through it)")
        return 0
    lm, _ = runtime.lms()

    async def call() -> Any:
        try:
            return await lm.complete([Message("user", "Reply with the single word: OK")])
        finally:
            await runtime.aclose()

    started = time.perf_counter()
    done = anyio.run(call)
    u = done.usage
    tokens = f"{u.input_tokens:,} in / {u.output_tokens:,} out" + (
        " (estimated)" if u.estimated else ""
    )
    cost = "unknown" if u.cost is None else f"${u.cost:.6f}"
    print(
        f"  call: {done.text.strip()[:80]!r} from {lm.model} in {time.perf_counter() - started:.1f}"
        f"s, {tokens} tokens, cost {cost}"
    )
    return 0


def _add_doctor_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="show which model `auto` picks and why; --call tries it")
    p.add_argument("--call", action="store_true", help="make one tiny call through it")
    p.set_defaults(handler=_cmd_doctor)


_COMMAND_GROUPS.append(_add_doctor_commands)


def _cmd_bundle(args: argparse.Namespace, runtime: Runtime) -> int:
    from pathlib import Path

    from rlm_mcp.distribution import build_bundle

    manifest = build_bundle(Path(args.out).absolute(), vendor=args.vendor)
    print(manifest)
    print(
        f"next: npx @anthropic-ai/mcpb pack {manifest.parent} rlm-mcp.mcpb  "
        "(then open the .mcpb file with Claude Desktop)",
        file=sys.stderr,
    )
    return 0


def _cmd_registry(args: argparse.Namespace, runtime: Runtime) -> int:
    import json

    from rlm_mcp.distribution import registry_entry

    print(json.dumps(registry_entry(), indent=2))
    return 0


def _add_distribution_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("bundle", help="write an MCP Bundle folder for Claude Desktop (mcpb pack)")
    b.add_argument("out", metavar="OUT", help="the folder to write (manifest.json, server/)")
    b.add_argument(
        "--vendor", action="store_true", help="install the package into it (this platform only)"
    )
    b.set_defaults(handler=_cmd_bundle)
    r = sub.add_parser("registry", help="print server.json for the MCP registry")
    r.set_defaults(handler=_cmd_registry)


_COMMAND_GROUPS.append(_add_distribution_commands)


# --- the RLM loop (issue 5) ------------------------------------------------------------------


def _complete_context(arg: str, runtime: Runtime) -> Any:
    """`--context`: a file (relative to where the command runs) or a stored handle or name."""
    from pathlib import Path

    from rlm_mcp.errors import ContextNotFoundError, UnreadablePathError
    from rlm_mcp.sandbox import ContextSpec

    path = Path(arg).expanduser().absolute()
    if path.is_file():
        return ContextSpec(path=path)
    if path.exists():
        raise UnreadablePathError(
            f"{arg!r} is a directory or device, not a file: load it with `rlm-mcp load {arg}` "
            "and pass the handle it prints."
        )
    try:
        return runtime.store().get(arg)
    except ContextNotFoundError:
        raise UnreadablePathError(
            f"{arg!r} is neither a file nor a stored handle or name (no file {str(path)!r}): "
            "pass a file path, or load it with `rlm-mcp load` and pass the handle."
        ) from None


def _cost_text(usage: Any) -> str:
    """The run's cost, never `$0.0000` for models whose price nobody knows."""
    unpriced = list(usage.unknown_cost_models or ())
    if usage.total_cost is None or (not usage.total_cost and unpriced):
        return "unknown" + (f" (no price for {', '.join(unpriced)})" if unpriced else "")
    text = f"${usage.total_cost:.4f}"
    return text + (f" + unpriced {', '.join(unpriced)}" if unpriced else "")


def _cmd_complete(args: argparse.Namespace, runtime: Runtime) -> int:
    from pathlib import Path

    import anyio

    context = _complete_context(args.context, runtime)
    schema = _schema_file(args.schema) if args.schema else None
    lm, sub_lm = runtime.lms(
        args.model,
        args.sub_model,
        backend=args.backend,
        sub_backend=args.sub_backend,
        base_url=args.base_url,
    )
    rlm = runtime.rlm(
        lm,
        sub_lm,
        max_iterations=args.max_iterations,
        max_depth=args.max_depth,
        max_cost=args.max_cost,
        max_time=args.max_time,
        max_tokens=args.max_tokens,
        log_dir=Path(args.log_dir).absolute() if args.log_dir else None,
        verbose=args.verbose,
        max_errors=args.max_errors,
    )

    async def run() -> Any:
        try:
            return await rlm.acompletion(context, args.query, schema=schema)
        finally:
            # SDK connection pools belong to this event loop: close them before it ends.
            await runtime.aclose()

    result = anyio.run(run)
    if schema is not None and result.answer_json is not None:
        import json

        print(json.dumps(result.answer_json, ensure_ascii=False, indent=2))
    else:
        print(result.response)
    u = result.usage
    print(
        f"[{result.stop_reason}] {result.iterations} iterations, {u.total_calls} calls, "
        f"{u.total_input_tokens:,} in / {u.total_output_tokens:,} out tokens, cost "
        f"{_cost_text(u)}, {result.execution_time:.1f}s",
        file=sys.stderr,
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.trajectory_path is not None:
        print(f"trajectory: {result.trajectory_path}", file=sys.stderr)
    if schema is not None and result.answer_json is None:
        print("rlm-mcp: the answer does not match --schema (printed as text)", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _schema_file(path: str) -> dict[str, Any]:
    """A JSON Schema read from a file, checked before any model call."""
    import json
    from pathlib import Path

    from rlm_mcp.answers import check_schema
    from rlm_mcp.errors import ConfigError

    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"--schema {path}: not a readable JSON file ({exc})") from None
    try:
        return check_schema(raw)
    except ConfigError as exc:
        raise ConfigError(f"--schema {path}: {exc}") from None


def _add_complete_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("complete", help="answer a question about a file or stored context (RLM)")
    p.add_argument("--context", required=True, help="a file path, or a stored handle or name")
    p.add_argument("--query", required=True, help="the question")
    p.add_argument("--backend", default=None, help="root-model backend (default: settings)")
    p.add_argument("--model", default=None, help="root-model name")
    p.add_argument("--sub-backend", default=None, help="backend for llm_query sub-calls")
    p.add_argument("--sub-model", default=None, help="model for llm_query sub-calls")
    p.add_argument("--base-url", default=None, help="OpenAI/Anthropic-compatible base URL")
    p.add_argument("--max-iterations", type=_positive(int), default=None)
    p.add_argument("--max-depth", type=_positive(int), default=None)
    p.add_argument(
        "--max-tokens", type=_positive(int), default=None, help="token budget for the whole run"
    )
    p.add_argument("--max-cost", type=_positive(float), default=None, help="cost budget (USD)")
    p.add_argument(
        "--max-time", type=_positive(float), default=None, help="wall-time budget (seconds)"
    )
    p.add_argument(
        "--max-errors",
        type=_positive(int),
        default=None,
        help="stop after this many iterations in a row whose code failed",
    )
    p.add_argument(
        "--schema",
        default=None,
        metavar="FILE",
        help="a JSON Schema file: the answer must validate; printed as JSON (exit 1 if it never "
        "does)",
    )
    p.add_argument("--log-dir", default=None, help="write the trajectory JSONL here")
    p.add_argument("--verbose", action="store_true", help="live view of the run on stderr")
    p.set_defaults(handler=_cmd_complete)


_COMMAND_GROUPS.append(_add_complete_commands)


# --- trajectory viewer (issue 8) -------------------------------------------------------------


def _cmd_view(args: argparse.Namespace, runtime: Runtime) -> int:
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
