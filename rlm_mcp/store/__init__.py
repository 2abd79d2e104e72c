"""ContextStore: huge texts on disk, addressed by content, read in slices without loading them.

A typed facade over `diskcache.Cache` (not a subclass, so its whole API does not leak). Keys:

- ``text:<handle>``  the whole UTF-8 text, always a file-backed value (``disk_min_file_size=0``)
  so `text_path` can hand a real file to the sandbox worker;
- ``meta:<handle>``  a dict: sizes, documents, sparse char->byte and line->byte checkpoints;
- ``name:<name>``    alias -> handle.

Ingest streams: bytes are decoded incrementally (UTF-8, ``errors="replace"``, replaced bytes
counted), re-encoded, hashed and written to a temporary file chunk by chunk, then stored with
``cache.set(key, fileobj, read=True)``. The metadata key is published last, so a crash mid-load
leaves no visible context (only an orphan text value that `evict` removes).

Multi-document contexts are one text: each document is preceded by a header line
``===== FILE: <relative path> =====`` and followed by a newline if it lacks one; `DocumentInfo`
offsets point at the document's own text, not its header.

`.gitignore` support (root of a loaded directory only): blank lines and ``#`` comments ignored,
``!`` negations ignored, a trailing ``/`` matches directories only, patterns with a ``/`` match
the relative path with `fnmatch`, others match any path component's name.
"""

from __future__ import annotations

import codecs
import glob as globmod
import io
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rlm_mcp.config import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_STORE_BYTES,
    default_home,
)
from rlm_mcp.errors import ContextNotFoundError, UnreadablePathError
from rlm_mcp.store._parts import (
    CHAR_CHECKPOINT,
    DOC_HEADER,
    HANDLER,
    LINE_CHECKPOINT,
    ORPHAN_SECONDS,
    SKIP_DIRS,
    ContextInfo,
    DocumentInfo,
    MoveIn,
    Progress,
    Writer,
    counter,
    disk_class,
    ensure_handler,
    ignored,
    info_from_meta,
    is_binary,
    read_gitignore,
    skip_chars,
)

__all__ = [
    "CHAR_CHECKPOINT",
    "DOC_HEADER",
    "LINE_CHECKPOINT",
    "ContextInfo",
    "ContextStore",
    "DocumentInfo",
]

logger = logging.getLogger(__name__)


class ContextStore:
    """Content-addressed, disk-backed store of big texts; safe across processes (SQLite locks)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_STORE_BYTES,
        max_age_days: float = DEFAULT_MAX_AGE_DAYS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        import diskcache

        self.directory = Path(directory) if directory is not None else default_home() / "contexts"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._tmp = self.directory / "tmp"
        self._tmp.mkdir(exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_days = max_age_days
        self.chunk_bytes = chunk_bytes
        # every value a file; no diskcache-side eviction (we evict by our own policy)
        self._cache = diskcache.Cache(
            str(self.directory),
            disk=disk_class(),
            disk_min_file_size=0,
            eviction_policy="none",
            size_limit=2**62,
            timeout=60,
        )
        ensure_handler()

    # -- lifecycle
    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> ContextStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- loading
    def load_text(self, text: str, *, name: str | None = None, source: str = "text") -> ContextInfo:
        """Store a string (already decoded, so nothing is replaced)."""
        w = Writer(self._tmp)
        try:
            for i in range(0, len(text), self.chunk_bytes):
                w.write(text[i : i + self.chunk_bytes])
            return self._publish(w, name=name, source=source, documents=(), replaced=0)
        finally:
            w.discard()

    def load_documents(
        self,
        docs: Mapping[str, str] | Sequence[str],
        *,
        name: str | None = None,
        source: str = "documents",
    ) -> ContextInfo:
        """Store several texts as one context with a header line per document."""
        items = list(docs.items()) if isinstance(docs, Mapping) else [
            (f"doc_{i}", d) for i, d in enumerate(docs)
        ]  # fmt: skip
        w = Writer(self._tmp)
        try:
            out: list[DocumentInfo] = []
            for path, text in items:
                w.write(DOC_HEADER.format(path=path))
                start, before = w.chars, w.newlines
                w.write(text)
                lines = w.newlines - before + (1 if text and not text.endswith("\n") else 0)
                out.append(DocumentInfo(path=path, start=start, length=len(text), lines=lines))
                if text and not text.endswith("\n"):
                    w.write("\n")
            return self._publish(w, name=name, source=source, documents=tuple(out), replaced=0)
        finally:
            w.discard()

    def load_path(
        self, path: str | Path, *, name: str | None = None, progress: Progress | None = None
    ) -> ContextInfo:
        """Load a file, a directory (recursively) or a glob pattern, streaming."""
        p = Path(path).expanduser()
        if p.is_file():
            files, single = [(p, p.name)], True
        elif p.is_dir():
            files, single = self._walk(p), False
            if not files:
                raise UnreadablePathError(
                    f"Directory {str(p)!r} holds no text files to load (binary files, .git, "
                    "node_modules, virtualenvs and .gitignore'd paths are skipped)."
                )
        elif any(c in str(path) for c in "*?["):
            matches = sorted(Path(m) for m in globmod.glob(str(p), recursive=True))
            files = [(m, str(m)) for m in matches if m.is_file()]
            single = False
            if not files:
                raise UnreadablePathError(
                    f"Glob {str(path)!r} matched no files; check the pattern (use ** for "
                    "recursion) and the current directory."
                )
        else:
            raise UnreadablePathError(
                f"Path {str(path)!r} does not exist; check the spelling, or pass a directory or a "
                "glob pattern such as 'docs/**/*.md'."
            )
        try:
            total: int | None = sum(f.stat().st_size for f, _ in files)
        except OSError:
            total = None
        source = str(p.resolve()) if not any(c in str(path) for c in "*?[") else str(path)
        w = Writer(self._tmp)
        done = 0
        replaced = 0
        docs: list[DocumentInfo] = []
        try:
            for file, rel in files:
                if not single:
                    w.write(DOC_HEADER.format(path=rel))
                start, before = w.chars, w.newlines
                decoder = codecs.getincrementaldecoder("utf-8")(errors=HANDLER)
                counter.n = 0
                try:
                    with open(file, "rb") as fh:
                        while chunk := fh.read(self.chunk_bytes):
                            w.write(decoder.decode(chunk))
                            done += len(chunk)
                            if progress is not None:
                                progress(done, total)
                        w.write(decoder.decode(b"", final=True))
                except OSError as exc:
                    raise UnreadablePathError(
                        f"Cannot read {str(file)!r}: {exc.strerror or exc}. Check permissions."
                    ) from exc
                replaced += counter.n
                length = w.chars - start
                ends_nl = w.last_char == "\n" if length else True
                lines = w.newlines - before + (0 if ends_nl else 1)
                docs.append(DocumentInfo(path=rel, start=start, length=length, lines=lines))
                if not single and not ends_nl:
                    w.write("\n")
            if replaced:
                logger.warning("%s: %d undecodable bytes replaced with U+FFFD", source, replaced)
            return self._publish(
                w,
                name=name,
                source=source,
                documents=tuple(docs) if not single else (),
                replaced=replaced,
            )
        finally:
            w.discard()

    def _walk(self, root: Path) -> list[tuple[Path, str]]:
        patterns = read_gitignore(root / ".gitignore")
        out: list[tuple[Path, str]] = []
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            keep = []
            for dn in sorted(dirnames):
                rel = (d / dn).relative_to(root).as_posix()
                if dn in SKIP_DIRS or (d / dn / "pyvenv.cfg").exists():
                    continue
                if ignored(rel, dn, True, patterns):
                    continue
                keep.append(dn)
            dirnames[:] = keep
            for fn in sorted(filenames):
                f = d / fn
                rel = f.relative_to(root).as_posix()
                if ignored(rel, fn, False, patterns) or not f.is_file():
                    continue
                if is_binary(f):
                    logger.info("skipping binary file %s", f)
                    continue
                out.append((f, rel))
        return out

    def _publish(
        self,
        w: Writer,
        *,
        name: str | None,
        source: str,
        documents: tuple[DocumentInfo, ...],
        replaced: int,
    ) -> ContextInfo:
        w.close()
        handle = "ctx_" + w.sha.hexdigest()[:12]
        now = time.time()
        meta = self._cache.get(f"meta:{handle}")
        if meta is None:
            self._cache.set(f"pending:{handle}", now)
            self._cache.set(f"text:{handle}", MoveIn(w.path), read=True)
            meta = {
                "handle": handle,
                "name": name,
                "chars": w.chars,
                "bytes": w.bytes,
                "lines": w.lines,
                "documents": [d.model_dump() for d in documents],
                "source": source,
                "encoding": "utf-8",
                "replaced": replaced,
                "created": now,
                "last_used": now,
                "char_cp": w.char_cp,
                "line_cp": w.line_cp,
            }
            self._cache.set(f"meta:{handle}", meta)  # published last: now the context is visible
            self._cache.delete(f"pending:{handle}")
        else:
            meta = {**meta, "last_used": now}
            if name is not None:
                meta["name"] = name
            self._cache.set(f"meta:{handle}", meta)
        if name is not None:
            self._cache.set(f"name:{name}", handle)
        return info_from_meta(meta)

    # -- lookups
    def _resolve(self, handle_or_name: str) -> str:
        if self._cache.get(f"meta:{handle_or_name}") is not None:
            return handle_or_name
        target = self._cache.get(f"name:{handle_or_name}")
        if isinstance(target, str) and self._cache.get(f"meta:{target}") is not None:
            return target
        raise ContextNotFoundError(handle_or_name)

    def _meta(self, handle_or_name: str, *, touch: bool = False) -> dict[str, Any]:
        handle = self._resolve(handle_or_name)
        meta = self._cache.get(f"meta:{handle}")
        if meta is None:
            raise ContextNotFoundError(handle_or_name)
        if touch:
            meta = {**meta, "last_used": time.time()}
            self._cache.set(f"meta:{handle}", meta)
        return dict(meta)

    def info(self, handle_or_name: str) -> ContextInfo:
        return info_from_meta(self._meta(handle_or_name, touch=True))

    def text_path(self, handle: str) -> Path:
        """The on-disk UTF-8 file of the whole text (open it read-only; never write to it)."""
        h = self._resolve(handle)
        fh = self._cache.get(f"text:{h}", read=True)
        if fh is None:
            raise ContextNotFoundError(handle)
        try:
            return Path(fh.name)
        finally:
            fh.close()

    def _open_at(self, meta: Mapping[str, Any], byte: int) -> io.TextIOWrapper:
        raw = open(self.text_path(meta["handle"]), "rb")  # noqa: SIM115 - returned wrapped
        raw.seek(byte)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")

    def read(self, handle: str, *, start: int = 0, length: int | None = None) -> str:
        """Characters ``[start, start+length)``; seeks to the nearest checkpoint first."""
        meta = self._meta(handle)
        start = max(0, min(start, meta["chars"]))
        want = (
            meta["chars"] - start if length is None else max(0, min(length, meta["chars"] - start))
        )
        cp_char, cp_byte = max((c for c in meta["char_cp"] if c[0] <= start), key=lambda c: c[0])
        with self._open_at(meta, cp_byte) as f:
            skip_chars(f, start - cp_char)
            return f.read(want)

    def read_lines(self, handle: str, *, start: int = 0, count: int | None = None) -> str:
        """Lines ``[start, start+count)`` (0-based), with their newlines."""
        meta = self._meta(handle)
        start = max(0, start)
        cp_line, cp_byte = max((c for c in meta["line_cp"] if c[0] <= start), key=lambda c: c[0])
        with self._open_at(meta, cp_byte) as f:
            for _ in range(start - cp_line):
                if not f.readline():
                    return ""
            if count is None:
                return f.read()
            parts = []
            for _ in range(max(0, count)):
                line = f.readline()
                if not line:
                    break
                parts.append(line)
            return "".join(parts)

    def read_document(self, handle: str, doc: int | str) -> str:
        meta = self._meta(handle)
        docs = [DocumentInfo(**d) for d in meta["documents"]]
        if not docs:
            if doc in (0, meta["source"]):
                return self.read(handle)
            raise ContextNotFoundError(f"{handle} document {doc!r}")
        if isinstance(doc, int):
            if not -len(docs) <= doc < len(docs):
                raise ContextNotFoundError(f"{handle} document #{doc} (it has {len(docs)})")
            d = docs[doc]
        else:
            found = [x for x in docs if x.path == doc]
            if not found:
                raise ContextNotFoundError(f"{handle} document {doc!r}")
            d = found[0]
        return self.read(handle, start=d.start, length=d.length)

    def preview(self, handle: str, *, head: int = 500, tail: int = 500) -> str:
        meta = self._meta(handle)
        n = meta["chars"]
        if n <= head + tail:
            return self.read(handle)
        omitted = n - head - tail
        return (
            self.read(handle, start=0, length=head)
            + f"\n[... {omitted:,} characters omitted ...]\n"
            + self.read(handle, start=n - tail, length=tail)
        )

    def iter_chunks(self, handle: str, *, chunk_chars: int = 1_000_000) -> Iterator[str]:
        meta = self._meta(handle)
        with self._open_at(meta, 0) as f:
            while chunk := f.read(chunk_chars):
                yield chunk

    def list(self) -> list[ContextInfo]:
        out = []
        for key in list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith("meta:"):
                meta = self._cache.get(key)
                if meta is not None:
                    out.append(info_from_meta(meta))
        return sorted(out, key=lambda i: i.created)

    def delete(self, handle_or_name: str) -> bool:
        try:
            handle = self._resolve(handle_or_name)
        except ContextNotFoundError:
            return False
        self._cache.delete(f"meta:{handle}")  # invisible first
        self._cache.delete(f"text:{handle}")
        for key in list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith("name:") and self._cache.get(key) == handle:
                self._cache.delete(key)
        return True

    def evict(self, *, now: float | None = None) -> list[str]:
        """Drop contexts unused for max_age_days (0 disables), then LRU ones over max_bytes."""
        now = time.time() if now is None else now
        infos = sorted(self.list(), key=lambda i: i.last_used)
        gone: list[str] = []
        for i in infos:
            if self.max_age_days > 0 and now - i.last_used > self.max_age_days * 86400:
                self.delete(i.handle)
                gone.append(i.handle)
        live = [i for i in infos if i.handle not in gone]
        total = sum(i.bytes for i in live)
        for i in live:
            if total <= self.max_bytes:
                break
            self.delete(i.handle)
            gone.append(i.handle)
            total -= i.bytes
        self._clean_orphans(now)
        return gone

    def _clean_orphans(self, now: float) -> None:
        for key in list(self._cache.iterkeys()):
            if not (isinstance(key, str) and key.startswith("text:")):
                continue
            h = key[5:]
            if self._cache.get(f"meta:{h}") is None:
                pending = self._cache.get(f"pending:{h}")
                if pending is None or now - float(pending) > ORPHAN_SECONDS:
                    self._cache.delete(key)
                    self._cache.delete(f"pending:{h}")
        for f in self._tmp.glob("ingest-*"):
            try:
                if now - f.stat().st_mtime > ORPHAN_SECONDS:
                    f.unlink()
            except OSError:
                pass
