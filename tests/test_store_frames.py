"""The shared store's stored-text format (rlm_mcp.store._frames), on bytes in memory: what a
writer produces reads back exactly, and an object that lies about itself is refused."""

from __future__ import annotations

import io
import json
import os

import pytest

zstandard = pytest.importorskip("zstandard", reason="the cluster extra (zstandard) is missing")

from rlm_mcp.store import _frames  # noqa: E402
from rlm_mcp.store._frames import DamagedError  # noqa: E402


def _decode(frame: _frames.Frame, data: bytes) -> bytes:
    out = bytearray(frame.raw)
    _frames.decode_into(frame, data, memoryview(out))
    return bytes(out)


def _store(data: bytes) -> bytes:
    return b"".join(_frames.encode(io.BytesIO(data), workers=2))


def _read(obj: bytes) -> bytes | None:
    frames = _frames.layout(len(obj), lambda s, e: obj[s:e])
    if frames is None:
        return None
    pieces = (_decode(f, obj[f.stored_at : f.stored_at + f.stored]) for f in frames)
    return b"".join(bytes(p) for p in pieces)


def _trailer(frames: list[list[object]]) -> bytes:
    t = json.dumps({"v": 1, "frames": frames}).encode()
    return t + len(t).to_bytes(8, "big") + _frames.MAGIC


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
def test_what_is_written_reads_back_exactly(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_frames, "FRAME_BYTES", 4096)
    data = ("é東" + "x" * 10 + "\n").encode() * (size // 16 + 1)
    data = data[:size]  # cut anywhere, inside characters too: frames are byte ranges
    obj = _store(data)
    assert _read(obj) == data
    frames = _frames.layout(len(obj), lambda s, e: obj[s:e])
    assert frames is not None and len(frames) == -(-size // 4096)


def test_text_is_compressed_and_noise_is_kept_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_frames, "FRAME_BYTES", 64 * 1024)
    line = b"2026-12-05 INFO request %d done in %d ms\n"
    text = b"".join(line % (i, i % 97) for i in range(20_000))
    noise = os.urandom(100_000)
    obj = _store(text + noise)
    frames = _frames.layout(len(obj), lambda s, e: obj[s:e])
    assert frames is not None
    assert frames[0].zstd and not frames[-1].zstd  # the last frame is all noise
    assert len(obj) < len(text) / 3 + len(noise) + 4096
    assert _read(obj) == text + noise


def test_an_object_without_a_trailer_is_a_text_stored_whole() -> None:
    assert _read(b"plain text from before frames\n" * 10) is None
    assert _read(b"") is None
    assert _frames.whole(10, 4) == [
        _frames.Frame(0, 4, 0, 4, False),
        _frames.Frame(4, 4, 4, 4, False),
        _frames.Frame(8, 2, 8, 2, False),
    ]


def test_a_long_trailer_is_read_in_a_second_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_frames, "FRAME_BYTES", 16)
    monkeypatch.setattr(_frames, "TAIL_BYTES", 64)
    data = os.urandom(16 * 200)  # 200 frames: a trailer far longer than the first read
    reads: list[tuple[int, int]] = []
    obj = _store(data)

    def read(s: int, e: int) -> bytes:
        reads.append((s, e))
        return obj[s:e]

    frames = _frames.layout(len(obj), read)
    assert frames is not None and len(frames) == 200 and len(reads) == 2


@pytest.mark.parametrize(
    ("body", "trailer", "why"),
    [
        (b"", [[0, _frames.MAX_FRAME_BYTES + 1, "raw"]], "impossible size"),  # a bomb
        (b"abcd", [[4, 4, "gzip"]], "cannot describe"),
        (b"abcd", [[4, 5, "raw"]], "impossible size"),
        (b"abcd", [[3, 3, "raw"]], "do not add up"),
        (b"abcd", [["4", 4, "raw"]], "cannot describe"),
        (b"abcd", [[4, 4]], "not readable"),
    ],
)
def test_a_trailer_that_lies_is_refused(body: bytes, trailer: list[list[object]], why: str) -> None:
    obj = body + _trailer(trailer)
    with pytest.raises(DamagedError, match=why):
        _frames.layout(len(obj), lambda s, e: obj[s:e])


def test_a_trailer_longer_than_its_object_is_refused() -> None:
    obj = b"{}" + (10**9).to_bytes(8, "big") + _frames.MAGIC
    with pytest.raises(DamagedError, match="longer than the object"):
        _frames.layout(len(obj), lambda s, e: obj[s:e])


def test_a_frame_that_does_not_match_its_trailer_is_refused() -> None:
    packed = zstandard.ZstdCompressor().compress(b"a" * 1000)
    bomb = _frames.Frame(0, len(packed), 0, 10, True)  # claims 10 bytes, holds 1000
    with pytest.raises(DamagedError, match="header disagrees"):
        _decode(bomb, packed)
    with pytest.raises(DamagedError, match="does not decompress"):
        cut = packed[:-3]  # its header is whole, its block is not
        _decode(_frames.Frame(0, len(cut), 0, 1000, True), cut)
    with pytest.raises(DamagedError, match="came back short"):
        _decode(_frames.Frame(0, len(packed) + 1, 0, 1000, True), packed)
