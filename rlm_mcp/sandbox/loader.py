"""Reading a context into the worker: one `str`, no second full-size copy alive at any time.

`open(path).read()` holds the file's bytes and the decoded `str` at once (2x the context at the
peak: 207 MB for 100M characters). Contexts are nearly always ASCII, and an ASCII `str` stores
exactly the file's bytes, so the fast path allocates the final `str` once (`PyUnicode_New`) and
reads the file into it a chunk at a time, checking each chunk is ASCII; the peak is the context
plus one chunk. Anything else (non-ASCII text, another interpreter) takes the ordinary decode.
The fast path fills a string nobody else has seen yet, exactly as C code building a `str` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import sys
from collections.abc import Callable

__all__ = ["READY_WHOLE", "ContextTooLargeError", "Growing", "memory_headroom", "read_text"]

_CHUNK = 4 * 1024 * 1024
_FAST_MIN = 1024 * 1024  # below this the ordinary read is as good
_MB = 1024 * 1024


class ContextTooLargeError(Exception):
    """The context does not fit in the memory the worker may still use."""


#: What the writer of a growing file sends once the whole file is written and checked.
READY_WHOLE = 1 << 63


class Growing:
    """A file still being written, and the pipe on which its writer reports progress.

    A session on another node downloads its context while its worker already reads it: the
    writer sends 8-byte big-endian counts ("the file's first N bytes are in place"), then
    READY_WHOLE once the whole text is written *and* matches its hash. The reader may copy
    bytes as they land, but `read_text` returns only after READY_WHOLE, so no code ever runs
    on a text that was not checked. The pipe closing before READY_WHOLE means the download
    failed.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.have = 0
        self.whole = False
        self._pending = b""

    def wait(self, upto: int | None) -> None:
        """Block until the first `upto` bytes are in place (None: the whole, checked file)."""
        while not self.whole and (upto is None or self.have < upto):
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise OSError("the context's download stopped before the text was whole")
            self._pending += chunk
            while len(self._pending) >= 8:
                count = int.from_bytes(self._pending[:8], "big")
                self._pending = self._pending[8:]
                if count == READY_WHOLE:
                    self.whole = True
                else:
                    self.have = max(self.have, count)


@functools.cache
def _ascii_allocator() -> Callable[[int], tuple[str, int]] | None:
    """`alloc(n) -> (s, address of s's characters)` for a fresh ASCII str; None if unsupported."""
    if sys.implementation.name != "cpython":
        return None
    try:
        new = ctypes.pythonapi.PyUnicode_New
        new.restype = ctypes.py_object
        new.argtypes = (ctypes.c_ssize_t, ctypes.c_uint32)
        offset = sys.getsizeof("") - 1  # sizeof(PyASCIIObject): the data follows the header

        def alloc(n: int) -> tuple[str, int]:
            text = new(n, 127)
            return text, id(text) + offset

        probe, address = alloc(4)
        ctypes.memmove(address, b"ab\0d", 4)
        if probe != "ab\0d" or len(probe) != 4 or not probe.isascii():
            return None
        return alloc
    except (AttributeError, OSError, ValueError, TypeError):
        return None


def _open(source: str | int) -> io.FileIO:
    """A path opened, or an open descriptor rewound (a confined worker gets descriptors only:
    after it drops its uid it can no longer open the store's files by name)."""
    if isinstance(source, int):
        os.lseek(source, 0, os.SEEK_SET)
        return open(source, "rb", buffering=0, closefd=False)
    return open(source, "rb", buffering=0)


def source_size(source: str | int) -> int:
    return os.fstat(source).st_size if isinstance(source, int) else os.stat(source).st_size


def _read_ascii(
    path: str | int,
    size: int,
    alloc: Callable[[int], tuple[str, int]],
    growing: Growing | None = None,
) -> str | None:
    """The file as one ASCII str filled in place; None if it is not ASCII (or changed size)."""
    text, address = alloc(size)
    buf = bytearray(min(_CHUNK, size))
    source = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    view = memoryview(buf)
    pos = 0
    with _open(path) as fh:
        while pos < size:
            want = min(len(buf), size - pos)
            if growing is not None:
                growing.wait(pos + want)
            n = fh.readinto(view[:want])
            if not n:
                return None  # the file shrank under us: the ordinary read will say what is there
            if not (buf.isascii() if n == len(buf) else bytes(view[:n]).isascii()):
                return None
            ctypes.memmove(address + pos, source, n)
            pos += n
        if growing is not None:
            growing.wait(None)  # the file is whole (and checked) before it is judged complete
        if fh.read(1):
            return None  # it grew
    view.release()
    return text


def read_text(
    path: str | int,
    *,
    allocator: Callable[[int], tuple[str, int]] | None = None,
    growing: Growing | None = None,
) -> str:
    """The UTF-8 file at `path` (or open descriptor) as a str, with at most one full-size copy
    alive (ASCII files). A `growing` file (its final size already) is read as it is written,
    and returned once its writer has said it is whole."""
    size = source_size(path)
    alloc = allocator if allocator is not None else _ascii_allocator()
    if alloc is not None and size >= _FAST_MIN:
        text = _read_ascii(path, size, alloc, growing)
        if text is not None:
            return text  # _read_ascii waited for the writer's word that it is whole
    if growing is not None:
        growing.wait(None)
    with _open(path) as fh:
        data = fh.read()
    return data.decode("utf-8")


def _status_kb(path: str, field: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_headroom() -> tuple[int, str] | None:
    """(bytes the worker may still allocate, what bounds it), or None when nothing is known."""
    options: list[tuple[int, str]] = []
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        vm = _status_kb("/proc/self/status", "VmSize:")
        if soft != resource.RLIM_INFINITY and vm is not None:
            options.append(
                (
                    soft - vm * 1024,
                    "the sandbox worker's memory limit (SandboxLimits.memory_mb, "
                    "RLM_MCP_WORKER_MEMORY_MB, on top of the session's first context)",
                )
            )
    available = _status_kb("/proc/meminfo", "MemAvailable:")
    if available is not None:
        options.append((available * 1024, "the memory available on this machine"))
    return min(options) if options else None


def check_fits(size: int, *, freeable: int = 0, slack: int = 16 * _MB) -> None:
    """Raise ContextTooLargeError if `size` bytes of context cannot fit (before reading it)."""
    room = memory_headroom()
    if room is None:
        return
    headroom, bound = room
    if size + slack > headroom + freeable:
        raise ContextTooLargeError(
            f"the context ({size / _MB:,.1f} MB) does not fit in {bound}: about "
            f"{max(0, headroom + freeable) / _MB:,.1f} MB are left. Start a new session with "
            "this context (a new worker sizes its limit to its first context), raise the "
            "limit, or pass a smaller context (a slice of the handle)."
        )
