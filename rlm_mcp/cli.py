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
