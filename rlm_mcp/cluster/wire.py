"""The direct channel between a replica and a session actor: the sandbox's own frames
(`rlm_mcp.sandbox.protocol`: 4-byte length + UTF-8 JSON, the same size cap) over TCP.

Ray places, names and supervises a session; once placed, a call goes straight to the actor over
one TCP connection, because a Ray actor call costs milliseconds where a local worker answers in
a fraction of one. Ray remains the way a replica learns the channel's address and its secret. A
connection must present that secret first (compared in constant time), and frames are JSON,
never pickles, so nothing a peer sends can run code.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from rlm_mcp import errors
from rlm_mcp.sandbox.protocol import FrameTooLargeError, decode, encode, header_length
from rlm_mcp.sandbox.types import ErrorInfo, ExecResult, FinalAnswer, VariableInfo

__all__ = [
    "ChannelClosed",
    "error_from_wire",
    "error_to_wire",
    "read_frame",
    "result_from_wire",
    "result_to_wire",
    "write_frame",
]


class ChannelClosed(ConnectionError):
    """The other side went away, or broke the protocol."""


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        size = header_length(await reader.readexactly(4))
        return decode(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError, FrameTooLargeError, ValueError) as exc:
        raise ChannelClosed(str(exc) or type(exc).__name__) from None


async def write_frame(writer: asyncio.StreamWriter, value: dict[str, Any]) -> None:
    try:
        writer.write(encode(value))
        if writer.transport.get_write_buffer_size():  # only wait when the socket is full
            await writer.drain()
    except (ConnectionError, RuntimeError, FrameTooLargeError) as exc:
        raise ChannelClosed(str(exc) or type(exc).__name__) from None


def _fields(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def result_to_wire(result: ExecResult) -> dict[str, Any]:
    """The result's fields, one level deep (its parts are flat): `dataclasses.asdict` deep-copies
    every value, which cost a tenth of a warm round trip."""
    wire = _fields(result)
    assert wire is not None
    wire["error"] = _fields(result.error)
    wire["final"] = _fields(result.final)
    wire["variables"] = [_fields(v) for v in result.variables]
    return wire


def result_from_wire(data: dict[str, Any]) -> ExecResult:
    """An ExecResult rebuilt field by field (unknown fields are ignored, not trusted)."""
    error = data.get("error")
    final = data.get("final")
    return ExecResult(
        status=data["status"],
        output=str(data.get("output", "")),
        error=None if error is None else ErrorInfo(**error),
        variables=tuple(VariableInfo(**v) for v in data.get("variables", ())),
        truncated=bool(data.get("truncated", False)),
        output_chars=int(data.get("output_chars", 0)),
        duration_s=float(data.get("duration_s", 0.0)),
        reset=bool(data.get("reset", False)),
        final=None if final is None else FinalAnswer(**final),
        sub_calls=int(data.get("sub_calls", 0)),
        notes=tuple(str(n) for n in data.get("notes", ())),
    )


#: The errors a session actor sends back by name (anything else arrives as a ContextError).
_ERRORS: dict[str, type[errors.RLMError]] = {
    cls.__name__: cls
    for cls in (
        errors.ContextDamagedError,
        errors.ContextNotFoundError,
        errors.StoreUnavailableError,
        errors.ContextError,
        errors.SandboxError,
    )
}


def error_to_wire(exc: errors.RLMError) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_wire(data: dict[str, Any], handle: str | None) -> errors.RLMError:
    """The actor's error as the same class here, with its message (its constructor's
    arguments did not cross, so the instance is filled in directly)."""
    cls = _ERRORS.get(str(data.get("type")), errors.ContextError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, str(data.get("message", "")))
    if isinstance(exc, errors.ContextNotFoundError):
        exc.handle = handle or ""
    return exc
