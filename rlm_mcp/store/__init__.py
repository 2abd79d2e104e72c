"""ContextStore: huge texts on disk, addressed by content, read in slices without loading them.

A typed facade over `diskcache.Cache` (not a subclass, so its whole API does not leak). Keys:

- ``text:<handle>``  the whole UTF-8 text, always a file (renamed in by `MoveIn`, whatever its
  size) so `text_path` can hand a real file to the sandbox worker;
- ``index:<handle>`` sparse char->byte and line->byte checkpoints (compact arrays, kept apart so
  `info` and `list` never load them; cached per process since a handle's text never changes);
- ``meta:<handle>``  a dict: sizes, documents, source, times;
- ``name:<name>``    alias -> handle;
- ``pending:<handle>`` the time a load started publishing (so `evict` spares a live load).

Ingest streams (see `_ingest`): raw bytes are checked as UTF-8 piece by piece, written as they are
when valid (undecodable bytes replaced by U+FFFD and counted), hashed and written to a temp file
on a helper thread, then *renamed* into the cache (`MoveIn`), never copied. The text goes in
first, then the index, then the metadata key: a context is visible only once whole, so a crash or
kill mid-load leaves nothing visible (at most an orphan text value that `evict` removes). Before a
load the input is checked against ``max_context_bytes`` and the free disk space, so a too-big
input fails with a clear error instead of a half-written cache.

Multi-document contexts are one text: each document is preceded by a header line
``===== FILE: <relative path> =====`` and followed by a newline if it lacks one; `DocumentInfo`
offsets point at the document's own text, not its header.

`.gitignore` support (root of a loaded directory only): blank lines and ``#`` comments ignored,
``!`` negations ignored, a trailing ``/`` matches directories only, patterns with a ``/`` match
the relative path with `fnmatch`, others match any path component's name.
"""

from __future__ import annotations

import glob as globmod
import io
import logging
import os
import shutil
import time
from builtins import list as _list
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from rlm_mcp.config import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_CONTEXT_BYTES,
    DEFAULT_MAX_STORE_BYTES,
    default_home,
)
from rlm_mcp.errors import ContextNotFoundError, InputTooLargeError, UnreadablePathError
from rlm_mcp.store._ingest import INDEX_BYTES, Index, Ingester
from rlm_mcp.store._parts import (
    DOC_HEADER,
    FREE_SPACE_MARGIN,
    ORPHAN_SECONDS,
    SKIP_DIRS,
    TOUCH_SECONDS,
    ContextInfo,
    DocumentInfo,
    MoveIn,
    Progress,
    disk_class,
    ignored,
    info_from_meta,
    is_binary,
    read_gitignore,
    skip_chars,
)
from rlm_mcp.store.ref import StoredContext

__all__ = [
    "DOC_HEADER",
    "INDEX_BYTES",
    "ContextInfo",
    "ContextStore",
    "DocumentInfo",
    "StoredContext",
]

logger = logging.getLogger(__name__)


#: Pseudo-filesystems that hold the server's own state, never a user's document: the server's
#: environment, with its API keys, is /proc/self/environ; devices can stream forever.
_SYSTEM_ROOTS = ("/proc", "/sys", "/dev")


def _inside(real: str, root: str) -> bool:
    """`real` is `root` or below it (a sibling such as /procfs is not below /proc)."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _refusal(path: Path, roots: Sequence[str] = ()) -> str | None:
    """Why `path` must not be loaded, or None.

    System paths (or symlinks to them) never load. With `roots` (RLM_MCP_ALLOWED_PATHS), the
    path must also lie inside one of them both as written and where its symlinks lead, so a link
    inside an allowed folder cannot reach out of it.
    """
    for real in (os.path.abspath(path), os.path.realpath(path)):
        if any(_inside(real, r) for r in _SYSTEM_ROOTS):
            return (
                f"it is (or links to) {real}, under /proc, /sys or /dev, which hold the "
                "server's own process state and devices (its environment holds your API keys); "
                "rlm-mcp loads regular files and directories only."
            )
        if roots and not any(_inside(real, r) for r in roots):
            return (
                f"it is (or links to) {real}, outside the folders this server may read "
                f"(RLM_MCP_ALLOWED_PATHS: {os.pathsep.join(roots)}); copy it into one of them, or "
                "add its folder to RLM_MCP_ALLOWED_PATHS in the server's config."
            )
    return None


class ContextStore:
    """Content-addressed, disk-backed store of big texts; safe across processes (SQLite locks).

    ``max_context_bytes`` caps one context (0: no cap); a load also needs the input's size plus a
    margin free on the store's disk, checked before anything is written. ``allowed_roots``, when
    given, are the only folders `load_path` reads from (the server's RLM_MCP_ALLOWED_PATHS).
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_STORE_BYTES,
        max_age_days: float = DEFAULT_MAX_AGE_DAYS,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
        allowed_roots: Sequence[str | Path] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import diskcache

        self.directory = Path(directory) if directory is not None else default_home() / "contexts"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._tmp = self.directory / "tmp"
        self._tmp.mkdir(exist_ok=True)
        self.max_bytes = max_bytes
        self.max_age_days = max_age_days
        self.chunk_bytes = chunk_bytes
        self.max_context_bytes = max_context_bytes
        # resolved once: a root that is itself a symlink still admits what lies under its target
        self.allowed_roots: tuple[str, ...] = tuple(
            os.path.realpath(Path(r).expanduser()) for r in allowed_roots or ()
        )
        self._clock = clock  # created/last-used times and eviction age (tests pass a fake clock)
        self._indexes: dict[str, Index] = {}
        # no diskcache-side eviction (we evict by our own policy)
        self._cache = diskcache.Cache(
            str(self.directory),
            disk=disk_class(),
            disk_min_file_size=32 * 1024,  # small values (metadata, names) stay in SQLite
            eviction_policy="none",
            size_limit=2**62,
            timeout=60,
        )

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
    def _ingester(self, label: str, size: int) -> Ingester:
        """Check the size cap and the free disk space, then start a temp file for one load."""
        cap = self.max_context_bytes
        if cap > 0 and size > cap:
            raise InputTooLargeError(
                f"{label} is {size:,} bytes, over the {cap:,}-byte limit for one context; load a "
                "smaller part (a subdirectory or a glob), or raise RLM_MCP_MAX_CONTEXT_BYTES "
                "(max_context_bytes=...)."
            )
        free = shutil.disk_usage(self._tmp).free
        if size + FREE_SPACE_MARGIN > free:
            raise InputTooLargeError(
                f"Not enough free disk space for {label}: it needs about {size:,} bytes plus "
                f"{FREE_SPACE_MARGIN:,} spare, and {free:,} are free under {self.directory}. Free "
                "some space (`rlm-mcp contexts`, `rlm-mcp rm HANDLE`), or move the store to a "
                "bigger disk with RLM_MCP_HOME."
            )
        return Ingester(
            self._tmp,
            chunk_bytes=self.chunk_bytes,
            max_bytes=cap if cap > 0 else None,
            label=label,
            size_hint=size,
        )

    def _feed_text(self, ing: Ingester, text: str) -> None:
        step = max(1, self.chunk_bytes // 4)  # at most 4 bytes per character
        for i in range(0, len(text), step):
            ing.feed(text[i : i + step].encode("utf-8", "surrogatepass"))
        ing.end_part()

    def load_text(self, text: str, *, name: str | None = None, source: str = "text") -> ContextInfo:
        """Store a string (lone surrogates, the only thing that is not UTF-8, become U+FFFD)."""
        ing = self._ingester("the text", len(text))
        try:
            self._feed_text(ing, text)
            return self._publish(ing, name=name, source=source, documents=())
        finally:
            ing.discard()

    def load_documents(
        self,
        docs: Mapping[str, str] | Sequence[str],
        *,
        name: str | None = None,
        source: str = "documents",
    ) -> ContextInfo:
        """Store several texts as one context with a header line per document."""
        items = _list(docs.items()) if isinstance(docs, Mapping) else [
            (f"doc_{i}", d) for i, d in enumerate(docs)
        ]  # fmt: skip
        ing = self._ingester("the documents", sum(len(t) for _, t in items))
        try:
            out: _list[DocumentInfo] = []
            for path, text in items:
                self._feed_text(ing, DOC_HEADER.format(path=path))
                start, before = ing.chars, ing.newlines
                self._feed_text(ing, text)
                ends_nl = ing.last_byte == 0x0A if ing.chars > start else True
                lines = ing.newlines - before + (0 if ends_nl else 1)
                out.append(
                    DocumentInfo(path=path, start=start, length=ing.chars - start, lines=lines)
                )
                if not ends_nl:
                    ing.feed(b"\n")
            return self._publish(ing, name=name, source=source, documents=tuple(out))
        finally:
            ing.discard()

    def load_path(
        self, path: str | Path, *, name: str | None = None, progress: Progress | None = None
    ) -> ContextInfo:
        """Load a file, a directory (recursively) or a glob pattern, streaming."""
        p = Path(path).expanduser()
        is_glob = any(c in str(path) for c in "*?[")
        roots = self.allowed_roots
        if (p.exists() or (roots and not is_glob)) and (why := _refusal(p, roots)):
            raise UnreadablePathError(f"Cannot load {str(path)!r}: {why}")
        if p.is_file():
            files, single = [(p, p.name)], True
        elif p.is_dir():
            files, single = self._walk(p), False
            if not files:
                raise UnreadablePathError(
                    f"Directory {str(p)!r} holds no text files to load (binary files, .git, "
                    "node_modules, virtualenvs and .gitignore'd paths are skipped)."
                )
        elif is_glob:
            matches = sorted(Path(m) for m in globmod.glob(str(p), recursive=True))
            files = [(m, str(m)) for m in matches if m.is_file() and not _refusal(m, roots)]
            single = False
            if not files and matches and (why := _refusal(matches[0], roots)):
                raise UnreadablePathError(f"Cannot load {str(path)!r}: {why}")
            if not files:
                raise UnreadablePathError(
                    f"Glob {str(path)!r} matched no files; check the pattern (use ** for "
                    "recursion) and the current directory."
                )
        elif p.exists():
            raise UnreadablePathError(
                f"Cannot load {str(path)!r}: it is a device, pipe or socket, not a regular file "
                "or directory; save its output to a file and load that."
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
        source = str(p.resolve()) if not is_glob else str(path)
        ing = self._ingester(repr(source), total or 0)
        done = 0

        def on_chunk(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        docs: _list[DocumentInfo] = []
        try:
            for file, rel in files:
                if not single:
                    ing.feed(DOC_HEADER.format(path=rel).encode("utf-8", "surrogateescape"))
                start, before = ing.chars, ing.newlines
                try:
                    with open(file, "rb", buffering=0) as fh:
                        ing.feed_file(fh, on_chunk)
                except OSError as exc:
                    raise UnreadablePathError(
                        f"Cannot read {str(file)!r}: {exc.strerror or exc}. Check permissions."
                    ) from exc
                ing.end_part()
                length = ing.chars - start
                ends_nl = ing.last_byte == 0x0A if length else True
                lines = ing.newlines - before + (0 if ends_nl else 1)
                docs.append(DocumentInfo(path=rel, start=start, length=length, lines=lines))
                if not single and not ends_nl:
                    ing.feed(b"\n")
            if ing.replaced:
                logger.warning(
                    "%s: %d undecodable bytes replaced with U+FFFD", source, ing.replaced
                )
            return self._publish(
                ing, name=name, source=source, documents=tuple(docs) if not single else ()
            )
        finally:
            ing.discard()

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
                if why := _refusal(f, self.allowed_roots):
                    logger.info("skipping %s: %s", f, why)
                    continue
                if is_binary(f):
                    logger.info("skipping binary file %s", f)
                    continue
                out.append((f, rel))
        return out

    def _publish(
        self,
        ing: Ingester,
        *,
        name: str | None,
        source: str,
        documents: tuple[DocumentInfo, ...],
    ) -> ContextInfo:
        ing.close()
        handle = "ctx_" + ing.sha.hexdigest()[:12]
        now = self._clock()
        meta = self._cache.get(f"meta:{handle}")
        if meta is None:
            self._cache.set(f"pending:{handle}", now)
            # a value under text:<handle> is always whole (it is renamed in complete), so one left
            # by a crash or a concurrent load of the same bytes is reused, not replaced
            if f"text:{handle}" not in self._cache:
                self._cache.add(f"text:{handle}", MoveIn(ing.path), read=True)
            self._cache.set(f"index:{handle}", ing.index())
            meta = {
                "handle": handle,
                "name": name,
                "chars": ing.chars,
                "bytes": ing.bytes,
                "lines": ing.lines,
                "documents": [d.model_dump() for d in documents],
                "source": source,
                "encoding": "utf-8",
                "replaced": ing.replaced,
                "created": now,
                "last_used": now,
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
    def _lookup(self, handle_or_name: str) -> tuple[str, dict[str, Any]]:
        meta = self._cache.get(f"meta:{handle_or_name}")
        if meta is not None:
            return handle_or_name, dict(meta)
        target = self._cache.get(f"name:{handle_or_name}")
        if isinstance(target, str):
            meta = self._cache.get(f"meta:{target}")
            if meta is not None:
                return target, dict(meta)
        raise ContextNotFoundError(handle_or_name)

    def get(self, handle_or_name: str) -> StoredContext:
        """The stored context named or handled `handle_or_name`, to pass to `RLM.completion`."""
        return StoredContext(self, self._lookup(handle_or_name)[0])

    def _meta(self, handle_or_name: str) -> dict[str, Any]:
        return self._lookup(handle_or_name)[1]

    def info(self, handle_or_name: str) -> ContextInfo:
        """Stats of a context; marks it used (written at most once a minute, reads stay cheap)."""
        handle, meta = self._lookup(handle_or_name)
        now = self._clock()
        if now - float(meta.get("last_used", 0.0)) >= TOUCH_SECONDS:
            meta["last_used"] = now
            self._cache.set(f"meta:{handle}", meta)
        return info_from_meta(meta)

    def _index(self, meta: Mapping[str, Any]) -> Index:
        handle = meta["handle"]
        idx = self._indexes.get(handle)
        if idx is None:
            if "char_cp" in meta:  # stores written before the index had its own key
                idx = Index.from_pairs(meta["char_cp"], meta["line_cp"])
            else:
                raw = self._cache.get(f"index:{handle}")
                if raw is None:
                    raise ContextNotFoundError(handle)
                idx = Index.from_bytes(raw)
            if len(self._indexes) >= 64:
                self._indexes.pop(next(iter(self._indexes)))
            self._indexes[handle] = idx
        return idx

    def text_path(self, handle: str) -> Path:
        """The on-disk UTF-8 file of the whole text (open it read-only; never write to it)."""
        h = self._lookup(handle)[0]
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
        if not want:
            return ""
        cp_char, cp_byte = self._index(meta).char_seek(start)
        with self._open_at(meta, cp_byte) as f:
            skip_chars(f, start - cp_char)
            return f.read(want)

    def read_lines(self, handle: str, *, start: int = 0, count: int | None = None) -> str:
        """Lines ``[start, start+count)`` (0-based), with their newlines."""
        meta = self._meta(handle)
        start = max(0, start)
        cp_line, cp_byte = self._index(meta).line_seek(start)
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

    def list(self) -> _list[ContextInfo]:
        out = []
        for key in _list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith("meta:"):
                meta = self._cache.get(key)
                if meta is not None:
                    out.append(info_from_meta(meta))
        return sorted(out, key=lambda i: i.created)

    def delete(self, handle_or_name: str) -> bool:
        try:
            handle = self._lookup(handle_or_name)[0]
        except ContextNotFoundError:
            return False
        self._cache.delete(f"meta:{handle}")  # invisible first
        self._cache.delete(f"text:{handle}")
        self._cache.delete(f"index:{handle}")
        self._indexes.pop(handle, None)
        for key in _list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith("name:") and self._cache.get(key) == handle:
                self._cache.delete(key)
        return True

    def evict(self, *, now: float | None = None) -> _list[str]:
        """Drop contexts unused for max_age_days (0 disables), then LRU ones over max_bytes."""
        now = self._clock() if now is None else now
        infos = sorted(self.list(), key=lambda i: i.last_used)
        gone: _list[str] = []
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
        """Remove what a crashed load left: text/index without metadata, stale temp files."""
        for key in _list(self._cache.iterkeys()):
            if not (isinstance(key, str) and key.startswith(("text:", "index:"))):
                continue
            h = key.split(":", 1)[1]
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
