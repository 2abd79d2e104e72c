"""Streaming ingest: raw bytes in, a valid UTF-8 temp file plus hash, counts and a sparse index out.

Why it looks like this (ingest must cost about as much as copying the file):

- Bytes are read with ``readinto`` into a few reused buffers (no per-chunk allocation) and
  decoded only to *check* them, in pieces of `INDEX_BYTES` with ``codecs.utf_8_decode``; a piece
  that decodes without replacement is written as the ORIGINAL bytes (valid UTF-8 re-encodes to the
  same bytes), and only a piece with undecodable bytes is re-encoded (each bad byte -> U+FFFD).
- Lines are counted on the bytes (``bytearray.count`` with bounds, no slicing copies).
- Hashing (SHA-256, GIL released for big buffers) and writing run on one helper thread while the
  main thread decodes the next chunk, so the two halves overlap on a second core. The helper
  needs the GIL for a moment between its C calls, and the main thread's decode loop never gives
  it up by itself, so by default the helper waited up to 5 ms (the interpreter's switch interval)
  twice per chunk; while an ingester is open the interval is 0.5 ms (`_fast_gil_handoff`):
  300 MB ingest 0.63 s -> 0.47 s here.
- After every piece the index gets a checkpoint: (characters, byte) where the piece ends (always a
  character boundary) and (line number, byte where that line starts) from the piece's last
  newline. Reads bisect these and decode at most one piece (64 KiB) to land on an exact position.

A character split across two reads is carried to the front of the next buffer, so chunk edges
never change the result; `end_part` flushes a truncated trailing sequence (one file's end) as
replacement characters so it cannot merge with the next document.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import errno
import hashlib
import logging
import os
import queue
import stat
import sys
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from rlm_mcp.errors import ContextError, InputTooLargeError, UnreadablePathError
from rlm_mcp.store._parts import HANDLER, counter, ensure_handler

__all__ = ["INDEX_BYTES", "KERNEL_COPY_MIN", "Index", "Ingester"]

logger = logging.getLogger(__name__)

#: Bytes per decoded piece, and so the spacing of index checkpoints.
INDEX_BYTES = 65_536
_BUFFERS = 3  # one being filled/decoded, one being hashed/written, one spare
#: Files at least this big are written with copy_file_range (kernel to kernel) where it works.
KERNEL_COPY_MIN = 1024 * 1024
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)
_Segment = memoryview | bytes
#: A piece of output, and its offset in the source file when it is the source's bytes unchanged.
_Piece = tuple[_Segment, int]
_Item = tuple[list[_Piece], bytearray, int] | threading.Event | None


#: GIL switch interval while a load runs (the default is 0.005 s).
_FAST_SWITCH_S = 0.0005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


@contextlib.contextmanager
def _fast_gil_handoff() -> Iterator[None]:
    """Shorter GIL switch interval while any load in the process is feeding (see module doc).

    Counted, so overlapping loads on several threads restore the interval once, at the end.
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, _FAST_SWITCH_S))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class Ingester:
    """Writes one context's text to a temp file; see the module docstring for the design."""

    def __init__(
        self,
        directory: Path,
        *,
        chunk_bytes: int,
        max_bytes: int | None = None,
        label: str = "input",
        size_hint: int | None = None,
    ) -> None:
        ensure_handler()
        fd, name = tempfile.mkstemp(prefix="ingest-", suffix=".txt", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.sha = hashlib.sha256()
        self.chars = 0
        self.bytes = 0
        self.newlines = 0
        self.replaced = 0
        self.last_byte = -1
        self.max_bytes = max_bytes
        self.label = label
        # index: parallel arrays, sorted by their first member
        self.cp_chars = array("q", [0])
        self.cp_char_bytes = array("q", [0])
        self.cp_lines = array("q", [0])
        self.cp_line_bytes = array("q", [0])
        # buffers no bigger than the input needs (a small load should not zero 12 MB), made lazily
        chunk = max(chunk_bytes, 4 * INDEX_BYTES)
        if size_hint is not None:
            chunk = min(chunk, max(size_hint + INDEX_BYTES, 4 * INDEX_BYTES))
        self._chunk = chunk
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._made = 1
        self._buf = bytearray(self._chunk + 4)
        self._fill = 0  # bytes at the front of _buf carried over from the previous chunk
        self._work: queue.Queue[_Item] = queue.Queue()
        self._src_fd = -1  # the file being fed, when its bytes may be copied by the kernel
        self._src_base = -1  # offset in that file of _buf[0]
        self._kernel_copy = hasattr(os, "copy_file_range")
        self._error: BaseException | None = None
        self._handoff = contextlib.ExitStack()  # until close(): see _fast_gil_handoff
        self._handoff.enter_context(_fast_gil_handoff())
        self._thread = threading.Thread(target=self._drain, name="rlm-mcp-ingest", daemon=True)
        self._thread.start()
        self._closed = False

    # -- feeding
    def feed_file(self, fh: BinaryIO, on_chunk: Callable[[int], None] | None = None) -> None:
        """Stream a binary file object; ``on_chunk(n)`` after each read of n bytes.

        Valid pieces of a big regular file are then copied file-to-file by the kernel
        (``copy_file_range``, like ``shutil.copyfile``) instead of written back from the buffer,
        which is most of the cost of a plain write. The bytes checked and hashed are the ones
        read; if the file changed while it was read (size or mtime differ afterwards), the output
        is re-hashed and a mismatch (an in-place rewrite) is an error; a pure append is fine.
        """
        fd = fh.fileno()
        st = os.fstat(fd)
        kernel = self._kernel_copy and stat.S_ISREG(st.st_mode) and st.st_size >= KERNEL_COPY_MIN
        pos = fh.tell() if kernel else 0
        try:
            while True:
                if kernel:
                    self._src_fd, self._src_base = fd, pos - self._fill
                view = memoryview(self._buf)
                n = fh.readinto(view[self._fill : self._fill + self._chunk])  # type: ignore[attr-defined]
                view.release()
                if not n:
                    break
                pos += n
                self._process(self._fill + n, final=False)
                if on_chunk is not None:
                    on_chunk(n)
        except BaseException:
            if kernel:  # still wait: the caller is about to close fd (and its number be reused)
                with contextlib.suppress(BaseException):
                    self._barrier()
            raise
        finally:
            self._src_fd = self._src_base = -1
        if kernel:
            self._barrier()  # the helper thread must be done with fd before the caller closes it
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._verify_output()

    def _barrier(self) -> None:
        done = threading.Event()
        self._work.put(done)
        while not done.wait(0.5):
            self._raise_if_failed()
        self._raise_if_failed()

    def _verify_output(self) -> None:
        """Re-hash what was written (after a source changed mid-read) against what was checked."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as out:
            while block := out.read(4 * 1024 * 1024):
                digest.update(block)
        if digest.digest() != self.sha.copy().digest():
            raise UnreadablePathError(
                f"{self.label} was rewritten while it was being loaded; load it again once "
                "nothing is writing to it (or load a copy)."
            )

    def feed(self, data: bytes) -> None:
        """Append raw bytes (already in memory: a header, an encoded string)."""
        src = memoryview(data)
        for pos in range(0, len(src), self._chunk):
            piece = src[pos : pos + self._chunk]
            self._buf[self._fill : self._fill + len(piece)] = piece
            self._process(self._fill + len(piece), final=False)

    def end_part(self) -> None:
        """The current input ended: a truncated trailing character becomes U+FFFD now."""
        if self._fill:
            self._process(self._fill, final=True)

    # -- the hot loop
    def _process(self, end: int, *, final: bool) -> None:
        buf = self._buf
        view = memoryview(buf)
        decode = codecs.utf_8_decode
        segments: list[_Piece] = []
        src = self._src_base
        a = run = 0
        chars, nbytes, newlines = self.chars, self.bytes, self.newlines
        cp_chars, cp_char_bytes = self.cp_chars, self.cp_char_bytes
        cp_lines, cp_line_bytes = self.cp_lines, self.cp_line_bytes
        step = INDEX_BYTES
        while a < end:
            b = a + step if a + step < end else end
            before = getattr(counter, "n", 0)
            text, used = decode(view[a:b], HANDLER, final and b == end)
            if not used:
                break  # an incomplete character at the very end: carried to the next chunk
            if getattr(counter, "n", 0) == before:
                nl = buf.count(b"\n", a, a + used)
                if nl:
                    line_at = nbytes + buf.rfind(b"\n", a, a + used) - a + 1
                out = used
            else:  # undecodable bytes: write the repaired text instead of the original
                self.replaced += counter.n - before
                if run < a:
                    segments.append((view[run:a], src + run if src >= 0 else -1))
                enc = text.encode("utf-8")
                segments.append((enc, -1))
                run = a + used
                nl = enc.count(b"\n")
                if nl:
                    line_at = nbytes + enc.rfind(b"\n") + 1
                out = len(enc)
            if nl:
                newlines += nl
                cp_lines.append(newlines)
                cp_line_bytes.append(line_at)
            chars += len(text)
            nbytes += out
            cp_chars.append(chars)
            cp_char_bytes.append(nbytes)
            a += used
        if run < a:
            segments.append((view[run:a], src + run if src >= 0 else -1))
        if a:
            self.last_byte = segments[-1][0][-1]
        self.chars, self.bytes, self.newlines = chars, nbytes, newlines
        carry = end - a
        nxt = self._take_buffer()
        if carry:
            nxt[:carry] = view[a:end]
        view.release()
        self._fill = carry
        self._buf = nxt
        self._work.put((segments, buf, self._src_fd))
        if self.max_bytes is not None and nbytes > self.max_bytes:
            raise InputTooLargeError(
                f"{self.label} is over the {self.max_bytes:,}-byte limit for one context; load a "
                "smaller part, or raise RLM_MCP_MAX_CONTEXT_BYTES (max_context_bytes=...)."
            )

    def _take_buffer(self) -> bytearray:
        if self._made < _BUFFERS and self._free.empty():
            self._made += 1
            return bytearray(self._chunk + 4)
        while True:
            self._raise_if_failed()
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                continue

    # -- the helper thread: hash and write, in order
    def _drain(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            segments, buf, src_fd = item
            try:
                if self._error is None:
                    for seg, offset in segments:
                        self.sha.update(seg)
                        if offset >= 0 and self._kernel_copy:
                            self._copy_range(src_fd, seg, offset)
                        else:
                            _write_all(self._file, seg)
            except BaseException as exc:  # reported to the main thread by _raise_if_failed
                self._error = exc
            finally:
                for seg, _ in segments:
                    if isinstance(seg, memoryview):
                        seg.release()
                self._free.put(buf)

    def _copy_range(self, src_fd: int, seg: _Segment, offset: int) -> None:
        """Copy ``len(seg)`` bytes of the source at ``offset``; what it cannot, from ``seg``."""
        want, done = len(seg), 0
        out = self._file.fileno()
        while done < want:
            try:
                n = os.copy_file_range(src_fd, out, want - done, offset + done)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                logger.debug("copy_file_range unavailable (%s): writing from memory", exc)
                self._kernel_copy = False
                break
            if not n:  # the source got shorter since it was read: the buffer still has the bytes
                break
            done += n
        if done < want:
            _write_all(self._file, memoryview(seg)[done:])

    def _raise_if_failed(self) -> None:
        exc = self._error
        if exc is None:
            return
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputTooLargeError(
                f"The disk holding {self.path.parent} filled up while storing {self.label}; free "
                "some space (`rlm-mcp contexts`, `rlm-mcp rm HANDLE`), or move the store with "
                "RLM_MCP_HOME."
            ) from exc
        if isinstance(exc, OSError):
            raise ContextError(
                f"Writing {self.label} to {self.path.parent} failed: {exc.strerror or exc}. "
                "Check the disk and its permissions."
            ) from exc
        raise exc

    # -- finishing
    def close(self) -> None:
        """Wait for the writes, then close the file; raises what the helper thread hit."""
        if self._closed:
            return
        self._closed = True
        try:
            self._work.put(None)
            self._thread.join()
        finally:
            self._handoff.close()
        self._file.close()
        self._raise_if_failed()

    def discard(self) -> None:
        """Stop and remove the temp file (after an error, or when the text is already stored)."""
        with contextlib.suppress(BaseException):  # already failing, or discarding on purpose
            self.close()
        self.path.unlink(missing_ok=True)

    @property
    def lines(self) -> int:
        return self.newlines + (1 if self.bytes and self.last_byte != 0x0A else 0)

    def index(self) -> dict[str, bytes]:
        """The checkpoints, compact (a few hundred KB for 1 GB) for a separate cache key."""
        return {
            "chars": self.cp_chars.tobytes(),
            "char_bytes": self.cp_char_bytes.tobytes(),
            "lines": self.cp_lines.tobytes(),
            "line_bytes": self.cp_line_bytes.tobytes(),
        }


def _write_all(file: BinaryIO, data: _Segment) -> None:
    view = memoryview(data)
    try:
        while view:
            n = file.write(view)
            if n is None:  # pragma: no cover - non-blocking files only
                continue
            view = view[n:]
    finally:
        view.release()


class Index:
    """Sorted checkpoints of one context: (chars, byte) and (line, byte of that line's start)."""

    def __init__(
        self, chars: array[int], char_bytes: array[int], lines: array[int], line_bytes: array[int]
    ) -> None:
        self.chars = chars
        self.char_bytes = char_bytes
        self.lines = lines
        self.line_bytes = line_bytes

    @classmethod
    def from_bytes(cls, raw: Mapping[str, bytes]) -> Index:
        arrays = []
        for key in ("chars", "char_bytes", "lines", "line_bytes"):
            a = array("q")
            a.frombytes(raw[key])
            arrays.append(a)
        return cls(*arrays)

    @classmethod
    def from_pairs(
        cls, char_cp: Sequence[Sequence[int]], line_cp: Sequence[Sequence[int]]
    ) -> Index:
        """From the older format: lists of (chars, byte) and (line, byte) pairs in the metadata."""
        return cls(
            array("q", [c for c, _ in char_cp]),
            array("q", [b for _, b in char_cp]),
            array("q", [n for n, _ in line_cp]),
            array("q", [b for _, b in line_cp]),
        )

    def char_seek(self, char: int) -> tuple[int, int]:
        """The last checkpoint at or before character ``char``: (its char, its byte)."""
        i = bisect.bisect_right(self.chars, char) - 1
        return self.chars[i], self.char_bytes[i]

    def line_seek(self, line: int) -> tuple[int, int]:
        """The last checkpoint at or before line ``line``: (its line, byte where it starts)."""
        i = bisect.bisect_right(self.lines, line) - 1
        return self.lines[i], self.line_bytes[i]
