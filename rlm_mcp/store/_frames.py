"""How the shared store keeps a text in its bucket: independently compressed frames, then a
trailer that lists them.

A first attach on another node waits for the bucket to hand over the text: stored raw, a
100 MB text took 0.34-0.38 s to download here, twice a whole local attach. Text compresses
4-5x with zstd (level 3) and decompresses at about 1 GB/s per core, so sending a fifth of the
bytes and decompressing frames in parallel as they arrive costs less than moving them raw (0.2 s
for the same text); over a real network, where bandwidth and egress are dearer, it saves more.
Frames are independent so that a reader fetches them with parallel ranged GETs and decompresses
each on its own thread.

Layout of the object (all sizes in bytes)::

    frame 0 | frame 1 | ... | trailer (JSON) | trailer length (8, big-endian) | MAGIC (8)

The trailer is ``{"v": 1, "frames": [[stored, raw, codec], ...]}`` with codec ``"zstd"`` or
``"raw"`` (a frame that would not shrink is kept as it is). An object without MAGIC at its end
is a text stored whole, as before frames existed, and is read as one.

Nothing in the bucket is trusted: a trailer must add up to the object's size, no frame may
claim more than MAX_FRAME_BYTES, each frame must decompress to exactly its stated size, and the
whole text is still checked against its SHA-256 by the caller.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from rlm_mcp.errors import ConfigError

__all__ = [
    "MAGIC",
    "DamagedError",
    "Frame",
    "decode_into",
    "encode",
    "layout",
    "raw_size",
    "whole",
    "zstd",
]

MAGIC = b"RLMZST01"
#: Raw bytes per frame: big enough to compress well, small enough to pipeline a download.
FRAME_BYTES = 8 * 1024 * 1024
#: A trailer that claims a bigger frame is refused (a decompression bomb, or damage).
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: zstd's own default: 4.4x on source code here, against 4.0x at level 1 for 40% more CPU.
LEVEL = 3
#: How much of the object's end a reader fetches first (the trailer of a 100 GB text fits).
TAIL_BYTES = 256 * 1024
_FOOTER = 16
CODECS = ("zstd", "raw")


class DamagedError(ValueError):
    """The stored object is not what its trailer says (the caller says "load it again")."""


@dataclass(frozen=True)
class Frame:
    """Where one frame is in the object (`stored_at`, `stored`) and in the text (`raw_at`,
    `raw`)."""

    stored_at: int
    stored: int
    raw_at: int
    raw: int
    zstd: bool


def zstd() -> Any:
    """The zstandard module, or a one-line ConfigError that says how to install it."""
    try:
        import zstandard
    except ImportError:
        raise ConfigError(
            "The shared store compresses texts with zstandard, which comes with the cluster "
            "extra: pip install 'rlm-mcp[cluster]'."
        ) from None
    return zstandard


def _compress(chunk: bytes) -> tuple[bytes, bool]:
    packed = zstd().ZstdCompressor(level=LEVEL).compress(chunk)  # a compressor per thread
    if len(packed) > len(chunk) - len(chunk) // 16:  # saves under 1/16: not worth a decode
        return chunk, False
    return packed, True


def encode(fh: IO[bytes], workers: int | None = None) -> Iterator[bytes]:
    """The stored object for the text in `fh`, as pieces to upload in order: frames are read
    and compressed a few at a time on `workers` threads (zstd releases the GIL), so the whole
    text is never in memory."""
    zstd()
    workers = workers or min(4, os.cpu_count() or 1)
    frames: list[list[Any]] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="rlm-compress") as pool:
        pending: deque[tuple[int, Future[tuple[bytes, bool]]]] = deque()
        done = False
        while pending or not done:
            while not done and len(pending) < workers + 1:
                chunk = fh.read(FRAME_BYTES)
                if not chunk:
                    done = True
                    break
                pending.append((len(chunk), pool.submit(_compress, chunk)))
            if pending:
                raw, future = pending.popleft()
                packed, squeezed = future.result()
                frames.append([len(packed), raw, "zstd" if squeezed else "raw"])
                yield packed
    trailer = json.dumps({"v": 1, "frames": frames}, separators=(",", ":")).encode()
    yield trailer + len(trailer).to_bytes(8, "big") + MAGIC


def layout(size: int, read: Callable[[int, int], bytes]) -> list[Frame] | None:
    """The frames of the stored object of `size` bytes, whose bytes [start, end) `read`
    returns; None for a text stored whole (no trailer). Raises DamagedError when the trailer
    does not describe this object."""
    if size < _FOOTER:
        return None
    tail = read(max(0, size - TAIL_BYTES), size)
    if tail[-8:] != MAGIC:
        return None
    length = int.from_bytes(tail[-_FOOTER:-8], "big")
    if length + _FOOTER > size:
        raise DamagedError("its trailer is longer than the object")
    if length + _FOOTER > len(tail):
        tail = read(size - length - _FOOTER, size)
    try:
        listed = json.loads(tail[-length - _FOOTER : -_FOOTER])["frames"]
        frames, stored_at, raw_at = [], 0, 0
        for stored, raw, codec in listed:
            if not isinstance(stored, int) or not isinstance(raw, int) or codec not in CODECS:
                raise DamagedError("its trailer lists a frame it cannot describe")
            if not 0 <= raw <= MAX_FRAME_BYTES or stored < 0 or (codec == "raw" and stored != raw):
                raise DamagedError("its trailer lists a frame of an impossible size")
            frames.append(Frame(stored_at, stored, raw_at, raw, codec == "zstd"))
            stored_at += stored
            raw_at += raw
    except DamagedError:
        raise
    except (ValueError, TypeError, KeyError):
        raise DamagedError("its trailer is not readable") from None
    if stored_at + length + _FOOTER != size:
        raise DamagedError("its frames do not add up to the object's size")
    return frames


def whole(size: int, piece: int) -> list[Frame]:
    """A text stored whole, read as raw frames of `piece` bytes (parallel ranged GETs)."""
    return [Frame(at, min(piece, size - at), at, min(piece, size - at), False) for at in
            range(0, size, piece)]  # fmt: skip


def raw_size(frames: list[Frame]) -> int:
    """The text's size in bytes: where its last frame ends."""
    return frames[-1].raw_at + frames[-1].raw if frames else 0


def decode_into(frame: Frame, data: Any, out: memoryview) -> None:
    """Write the text bytes of `frame`, from its stored bytes, into `out` (exactly `frame.raw`
    bytes: a reader decompresses straight into the file it fills, with no frame-sized buffer
    in between); DamagedError unless exactly that many bytes come out."""
    if len(memoryview(data)) != frame.stored or len(out) != frame.raw:
        raise DamagedError("a frame came back short")
    if not frame.zstd:
        out[:] = data
        return
    zstandard = zstd()
    try:
        if zstandard.get_frame_parameters(data).content_size != frame.raw:
            raise DamagedError("a frame's header disagrees with the trailer")
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
        filled = 0
        while filled < frame.raw and (n := reader.readinto(out[filled:])):
            filled += n
        if filled != frame.raw or reader.read(1):
            raise DamagedError("a frame does not decompress to its stated size")
    except zstandard.ZstdError:
        raise DamagedError("a frame does not decompress") from None
