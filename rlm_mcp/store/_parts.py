"""Building blocks of the context store: models, streaming writer, decoding, file walking."""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["CHAR_CHECKPOINT", "DOC_HEADER", "LINE_CHECKPOINT", "ContextInfo", "DocumentInfo"]

logger = logging.getLogger(__name__)

DOC_HEADER = "===== FILE: {path} =====\n"
CHAR_CHECKPOINT = 65_536
LINE_CHECKPOINT = 4_096
ORPHAN_SECONDS = 3600.0
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache",
     ".pytest_cache", ".ruff_cache", "env"}
)  # fmt: skip
Progress = Callable[[int, int | None], None]


class DocumentInfo(BaseModel):
    """One document inside a context: its own text is ``text[start:start+length]``."""

    model_config = ConfigDict(frozen=True)
    path: str
    start: int
    length: int
    lines: int


class ContextInfo(BaseModel):
    """What is known about a stored context without reading it."""

    model_config = ConfigDict(frozen=True)
    handle: str
    name: str | None
    chars: int
    bytes: int
    lines: int
    documents: tuple[DocumentInfo, ...]
    source: str
    encoding: str
    replaced: int
    created: float
    last_used: float


# -- decoding with a replaced-byte count ----------------------------------------------------------

counter = threading.local()
HANDLER = "rlm_mcp_count_replace"
_handler_lock = threading.Lock()
_handler_registered = False


def _count_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    counter.n = getattr(counter, "n", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


def ensure_handler() -> None:
    global _handler_registered
    with _handler_lock:
        if not _handler_registered:
            codecs.register_error(HANDLER, _count_replace)
            _handler_registered = True


class Writer:
    """Accumulates the context text into a temp file, with hash, counts and checkpoints."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="ingest-", suffix=".txt", dir=directory)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.sha = hashlib.sha256()
        self.chars = 0
        self.bytes = 0
        self.newlines = 0
        self.last_char = ""
        self.char_cp: list[tuple[int, int]] = [(0, 0)]
        self.line_cp: list[tuple[int, int]] = [(0, 0)]

    def write(self, text: str) -> None:
        if not text:
            return
        # split so checkpoints land on exact char boundaries
        pos = 0
        while pos < len(text):
            next_cp = (self.chars // CHAR_CHECKPOINT + 1) * CHAR_CHECKPOINT
            take = min(len(text) - pos, next_cp - self.chars)
            piece = text[pos : pos + take]
            self._write_piece(piece)
            pos += take
            if self.chars == next_cp:
                self.char_cp.append((self.chars, self.bytes))
        self.last_char = text[-1]

    def _write_piece(self, piece: str) -> None:
        data = piece.encode("utf-8", "surrogatepass")
        n = piece.count("\n")
        if n and (self.newlines + n) // LINE_CHECKPOINT > self.newlines // LINE_CHECKPOINT:
            # record byte offsets of line starts at each multiple of LINE_CHECKPOINT
            idx = -1
            for _ in range(n):
                idx = piece.index("\n", idx + 1)
                self.newlines += 1
                if self.newlines % LINE_CHECKPOINT == 0:
                    off = self.bytes + len(piece[: idx + 1].encode("utf-8", "surrogatepass"))
                    self.line_cp.append((self.newlines, off))
        else:
            self.newlines += n
        self.file.write(data)
        self.sha.update(data)
        self.chars += len(piece)
        self.bytes += len(data)

    @property
    def lines(self) -> int:
        return self.newlines + (1 if self.chars and self.last_char != "\n" else 0)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class MoveIn:
    """A finished temp file to be renamed into the cache instead of copied (half the I/O)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, size: int = -1) -> bytes:  # pragma: no cover - only if a plain Disk is used
        raise NotImplementedError


def disk_class() -> type:
    """A diskcache.Disk that stores a `MoveIn` value by `os.replace` (same filesystem)."""
    import diskcache
    from diskcache.core import MODE_BINARY, UNKNOWN

    class MoveDisk(diskcache.Disk):  # type: ignore[misc]
        def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
            if read and isinstance(value, MoveIn):
                filename, full_path = self.filename(key, value)
                os.makedirs(os.path.dirname(full_path), exist_ok=True)
                os.replace(value.path, full_path)
                return os.path.getsize(full_path), MODE_BINARY, filename, None
            return super().store(value, read, key=key)

    return MoveDisk


def info_from_meta(meta: Mapping[str, Any]) -> ContextInfo:
    fields = {k: v for k, v in meta.items() if k in ContextInfo.model_fields}
    fields["documents"] = tuple(DocumentInfo(**d) for d in meta["documents"])
    return ContextInfo(**fields)


def skip_chars(f: io.TextIOWrapper, n: int) -> None:
    while n > 0:
        got = f.read(min(n, 1_000_000))
        if not got:
            return
        n -= len(got)


def is_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"\x00" in fh.read(8192)
    except OSError:
        return True


def read_gitignore(path: Path) -> list[tuple[str, bool]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        dir_only = line.endswith("/")
        out.append((line.strip("/"), dir_only))
    return out


def ignored(rel: str, name: str, is_dir: bool, patterns: Sequence[tuple[str, bool]]) -> bool:
    for pat, dir_only in patterns:
        if dir_only and not is_dir:
            continue
        if "/" in pat:
            if fnmatch.fnmatch(rel, pat):
                return True
        elif fnmatch.fnmatch(name, pat):
            return True
    return False
