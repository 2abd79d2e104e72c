"""Building blocks of the context store: models, decoding with a count, diskcache glue, walking."""

from __future__ import annotations

import codecs
import fnmatch
import io
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DOC_HEADER", "ContextInfo", "DocumentInfo"]

logger = logging.getLogger(__name__)

DOC_HEADER = "===== FILE: {path} =====\n"
ORPHAN_SECONDS = 3600.0
#: `info` rewrites a context's last-used time at most this often (a write per read is waste).
TOUCH_SECONDS = 60.0
#: Free disk space a load must leave beyond the input's own size.
FREE_SPACE_MARGIN = 64 * 1024**2
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
    #: What a directory or glob load left out, by reason (binary, ignored, refused, unreadable).
    skipped: dict[str, int] = Field(default_factory=dict)


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
