"""Framing: length-prefixed JSON with a byte budget."""

from __future__ import annotations

import io

import pytest

from rlm_mcp.sandbox import protocol


def test_frames_round_trip_through_a_stream() -> None:
    stream = io.BytesIO(protocol.encode({"op": "exec", "code": "ü"}) + protocol.encode({"a": 1}))
    assert protocol.read_frame_sync(stream) == {"op": "exec", "code": "ü"}
    assert protocol.read_frame_sync(stream) == {"a": 1}
    assert protocol.read_frame_sync(stream) is None


def test_a_header_over_the_budget_is_refused() -> None:
    with pytest.raises(protocol.FrameTooLargeError):
        protocol.header_length((protocol.MAX_FRAME_BYTES + 1).to_bytes(4, "big"))


def test_a_frame_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        protocol.decode(b"[1, 2]")


def test_lone_surrogates_become_replacement_characters_not_an_error() -> None:
    frame = protocol.encode({"output": "a\ud800b", "code": "x = '\udcff'", "ok": "é"})
    assert protocol.read_frame_sync(io.BytesIO(frame)) == {
        "output": "a\ufffdb",
        "code": "x = '\ufffd'",
        "ok": "é",
    }
