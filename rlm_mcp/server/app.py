"""`RLMServer`: the SDK's MCPServer with tool errors that are one line a model can act on.

The SDK reports a call whose arguments fail validation as `Error executing tool X: 1 validation
error for XArguments` followed by pydantic's multi-line dump and a documentation URL. A model
reads that badly and a person worse. Here every tool error is one line, `X: ...`, and an
argument error names the argument, what was expected, what was sent, and what to send.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from rlm_mcp.server.state import one_line

__all__ = ["RLMServer", "describe_validation_error"]

_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
}


def _kind(value: Any) -> str:
    """The JSON name of what the client sent."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _expected(schema: dict[str, Any] | None, arg: str) -> str:
    """What the input schema asks for `arg`, in words ("a string", "an integer or null")."""
    prop = ((schema or {}).get("properties") or {}).get(arg) or {}
    kinds: list[str] = []
    for option in prop.get("anyOf") or [prop]:
        kind = option.get("type")
        for k in kind if isinstance(kind, list) else [kind]:
            if k in _JSON_TYPES and _JSON_TYPES[k] not in kinds:
                kinds.append(_JSON_TYPES[k])
    return " or ".join(kinds) or "a valid value"


def describe_validation_error(
    tool: str, exc: ValidationError, schema: dict[str, Any] | None
) -> str:
    """One line: each bad argument, what it must be, what came, and what to send."""
    parts = []
    for err in exc.errors()[:5]:
        arg = ".".join(str(p) for p in err["loc"]) or "arguments"
        top = str(err["loc"][0]) if err["loc"] else arg
        want = _expected(schema, top)
        if err["type"] == "missing":
            parts.append(f"`{arg}` is required: send {want}")
            continue
        got = err.get("input")
        shown = json.dumps(got, default=str)[:40] if got is not None else "null"
        reason = str(err["msg"]).rstrip(".").removeprefix("Input ")
        reason = reason[0].lower() + reason[1:] if reason else "is not valid"
        bound = err.get("ctx") or {}
        for key, words in (("gt", "above"), ("ge", "at least"), ("lt", "below"), ("le", "at most")):
            if key in bound:
                want = f"{want.split(' or ')[0]} {words} {bound[key]}"
        parts.append(f"`{arg}` {reason} (got {_kind(got)} {shown}); send {want}")
    more = len(exc.errors()) - len(parts)
    tail = f"; and {more} more" if more > 0 else ""
    return one_line(f"{tool}: bad argument: " + "; ".join(parts) + tail)


def compact_schema(schema: Any) -> Any:
    """The same JSON schema, shorter: no generated titles, `anyOf [X, null]` as `type: [X, null]`.

    `tools/list` is read by the client's model at the start of every conversation and its
    schemas are what it costs; pydantic's titles repeat the property names and its nullable
    form is three times longer than the one JSON Schema has for it.
    """
    if isinstance(schema, list):
        return [compact_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: compact_schema(v) for k, v in schema.items() if k != "title"}
    if "properties" in schema:  # property names are data here, not schema keywords
        out["properties"] = {k: compact_schema(v) for k, v in schema["properties"].items()}
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        other = next(o for o in options if o != {"type": "null"})
        if isinstance(other, dict) and isinstance(other.get("type"), str):
            del out["anyOf"]
            out = {**other, **out, "type": [other["type"], "null"]}
    return out


class RLMServer(MCPServer):
    """MCPServer whose tool errors are one line, prefixed with the tool's name, and whose tool
    schemas are compact."""

    async def list_tools(self) -> list[Any]:
        tools = await super().list_tools()
        return [
            t.model_copy(
                update={
                    "input_schema": compact_schema(t.input_schema),
                    "output_schema": compact_schema(t.output_schema),
                }
            )
            for t in tools
        ]

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                found = [t for t in await self.list_tools() if t.name == name]
                schema = found[0].input_schema if found else None
                raise ToolError(describe_validation_error(name, cause, schema)) from cause
            text = str(exc)
            prefix = f"Error executing tool {name}: "
            if text.startswith(prefix):
                text = text[len(prefix) :]
            raise type(exc)(one_line(f"{name}: {text}")) from cause
