"""The caller's own tools for sandboxed code: `RLM(tools={"search": search_fn})`.

A tool runs here, in the caller's process, outside the sandbox; sandboxed code holds only a proxy
that sends the tool's name and JSON arguments across the bridge (`sandbox/extras.py`). So a
caller can give an RLM a search API or a database without opening the sandbox: the function, its
module, its globals and anything it closes over never reach the sandbox, and neither does any
object it returns (a result crosses as JSON or not at all).
"""

from __future__ import annotations

import functools
import inspect
import keyword
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from rlm_mcp.errors import ConfigError

__all__ = ["ToolSet"]

#: Names sandboxed code already has: a tool may not shadow them.
RESERVED = frozenset(
    {
        "context",
        "documents",
        "answer",
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "print",
    }
)
MAX_TOOLS = 64
#: How much of a docstring the root prompt and the proxy's repr carry per tool.
DOC_CHARS = 600


def _describe(name: str, fn: Callable[..., Any]) -> str:
    """`name(signature)`, then the docstring's first paragraph: what the root prompt lists."""
    try:
        signature = str(inspect.signature(fn, eval_str=True))
    except Exception:  # a string annotation that does not evaluate: show it as written
        try:
            signature = str(inspect.signature(fn))
        except (TypeError, ValueError):
            signature = "(...)"
    doc = inspect.getdoc(fn) or ""
    first = doc.split("\n\n", 1)[0].strip()
    line = f"{name}{signature}"
    return f"{line}: {first[:DOC_CHARS]}" if first else line


class ToolSet:
    """Validated tools by name, each with the line the root prompt shows."""

    def __init__(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        if not isinstance(tools, Mapping):
            raise ConfigError("tools must be a dict of name -> function, e.g. {'search': search}")
        if len(tools) > MAX_TOOLS:
            raise ConfigError(f"tools: at most {MAX_TOOLS} tools, got {len(tools)}")
        for name, fn in tools.items():
            if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                raise ConfigError(f"tools: {name!r} is not a Python name code could call")
            if name.startswith("_") or name in RESERVED:
                raise ConfigError(
                    f"tools: {name!r} is taken in the REPL (or starts with _); choose another name"
                )
            if not callable(fn):
                raise ConfigError(f"tools: {name!r} is {type(fn).__name__}, not a function")
        self._fns = dict(tools)
        #: name -> description, for the root prompt and the sandbox's proxies.
        self.docs = {name: _describe(name, fn) for name, fn in self._fns.items()}

    def __bool__(self) -> bool:
        return bool(self._fns)

    def prompt(self) -> str:
        """The root prompt's section listing the tools (empty when there are none)."""
        if not self._fns:
            return ""
        lines = "\n".join(f"- {doc}" for doc in self.docs.values())
        return (
            "\n\nTools you can call by name in code (arguments and results are JSON values; a "
            f"failing tool raises an exception you can catch):\n{lines}"
        )

    async def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run one tool: an async function is awaited, a plain one runs in a worker thread so a
        slow tool (a web search, a database query) does not stall the event loop."""
        fn = self._fns[name]
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        result = await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        if inspect.isawaitable(result):
            return await result
        return result
