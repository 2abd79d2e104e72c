"""What sandboxed code can call besides `llm_query`: recursive runs, the caller's own tools, and a
listing of its variables. All of it crosses the same bridge to the parent as `llm_query`.

A tool runs in the *parent* process (outside the sandbox), so code reaches it only through a
`ToolProxy`: arguments and results cross as JSON, never as live objects, and the proxy holds
nothing but the tool's name and the bridge. Code can call it, and see its name and description;
the function object, its module and its globals stay in the parent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["RPC", "ToolProxy", "show_vars"]

#: One request to the parent and its reply frame (`{"ok": ..., ...}`).
RPC = Callable[[dict[str, Any]], dict[str, Any]]


class ToolError(Exception):
    """A tool of the caller failed; the message is the tool's own error."""


class ToolProxy:
    """A caller's tool as sandboxed code sees it: a callable that sends JSON to the parent."""

    __slots__ = ("_doc", "_name", "_rpc")

    def __init__(self, name: str, doc: str, rpc: RPC) -> None:
        self._name, self._doc, self._rpc = name, doc, rpc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            payload = json.loads(json.dumps({"args": list(args), "kwargs": kwargs}))
        except (TypeError, ValueError):
            raise TypeError(
                f"{self._name}: arguments must be JSON values (str, int, float, bool, None, "
                "lists and dicts of them)"
            ) from None
        reply = self._rpc({"op": "tool", "name": self._name, **payload})
        if not reply.get("ok"):
            raise ToolError(str(reply.get("error") or f"{self._name} failed"))
        return reply.get("value")

    def __repr__(self) -> str:
        first = self._doc.strip().splitlines()[0] if self._doc.strip() else ""
        if first.startswith(self._name):  # the caller's description: name(signature): doc
            return f"<tool {first}>"
        return f"<tool {self._name}: {first}>" if first else f"<tool {self._name}>"


def show_vars(names: Iterable[str], namespace: dict[str, Any], summary: Callable[..., Any]) -> str:
    """`SHOW_VARS()`: the variables code made, one line each (name, type, summary)."""
    lines = []
    for name in names:
        kind, text = summary(namespace[name])
        lines.append(f"{name}: {text}" if text != kind else f"{name}: {kind}")
    return "\n".join(lines) if lines else "(no variables yet)"
