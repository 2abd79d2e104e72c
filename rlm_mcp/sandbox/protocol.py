"""Framing between parent and worker: 4-byte big-endian length + UTF-8 JSON. Never pickle."""

from __future__ import annotations

import json
import re
import struct
from typing import Any, BinaryIO

__all__ = [
    "MAX_FRAME_BYTES",
    "FrameTooLargeError",
    "decode",
    "encode",
    "header_length",
    "read_frame_sync",
]

#: Replies are capped; the context itself travels by path, never in a frame.
MAX_FRAME_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameTooLargeError(Exception):
    """A frame announced more bytes than the budget allows."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encode(message: dict[str, Any]) -> bytes:
    """One frame. Lone surrogates (`'\\ud800'` is a valid str but not UTF-8) become U+FFFD.

    User code can print them and a JSON client can send them; either way they must not kill
    the worker or the parent, only be replaced, as the store replaces undecodable bytes.
    """
    text = json.dumps(message, ensure_ascii=False)
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        body = _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    value = json.loads(body.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("frame is not a JSON object")
    return value


def header_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise FrameTooLargeError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return int(length)


def read_frame_sync(stream: BinaryIO) -> dict[str, Any] | None:
    """Blocking read used by the worker; None at end of stream."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    body = stream.read(header_length(header))
    return decode(body)
