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

import copy
import glob as globmod
import logging
import os
import secrets
import shutil
import time
from builtins import list as _list
from collections.abc import Callable, Mapping, Sequence
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
from rlm_mcp.errors import (
    ConfigError,
    ContextNotFoundError,
    InputTooLargeError,
    NameTakenError,
    UnreadablePathError,
)
from rlm_mcp.store._ingest import INDEX_BYTES, Index, Ingester
from rlm_mcp.store._names import is_handle_form, swap, validate_name
from rlm_mcp.store._parts import (
    DOC_HEADER,
    FREE_SPACE_MARGIN,
    TOUCH_SECONDS,
    ContextInfo,
    DocumentInfo,
    MoveIn,
    Progress,
    disk_class,
    info_from_meta,
)
from rlm_mcp.store._paths import (
    SYSTEM_ROOTS,
    Refused,
    Walk,
    consider,
    fixed_prefix,
    open_checked,
    refusal,
    walk_directory,
)
from rlm_mcp.store._reads import Reads
from rlm_mcp.store._upkeep import PIN_SECONDS, Upkeep
from rlm_mcp.store.ref import StoredContext
from rlm_mcp.text import clean_text

__all__ = [
    "DOC_HEADER",
    "INDEX_BYTES",
    "PIN_SECONDS",
    "ContextInfo",
    "ContextStore",
    "DocumentInfo",
    "StoredContext",
    "probe_store_dir",
    "validate_name",
]

logger = logging.getLogger(__name__)


def probe_store_dir(directory: str | Path) -> None:
    """Raise ConfigError, in one line, if `directory` cannot hold a store (checked at start-up).

    A file where the folder should be, a folder under /proc, /sys or /dev, or one the user
    cannot write otherwise surfaces as a raw OSError or SQLite error on the first tool call.
    """
    path = Path(directory)
    why: str | None = None
    real = os.path.realpath(path)
    if any(real == r or real.startswith(r + os.sep) for r in SYSTEM_ROOTS):
        why = "it is under /proc, /sys or /dev"
    else:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            why = exc.strerror or str(exc)
    if why is not None:
        raise ConfigError(
            f"The data folder {str(path)!r} cannot be used: {why}. Set RLM_MCP_HOME (or --home) "
            "to a writable folder."
        )


class ContextStore(Reads, Upkeep):
    """Content-addressed, disk-backed store of big texts; safe across processes (SQLite locks).

    ``max_context_bytes`` caps one context (0: no cap) and ``max_bytes`` the whole store (checked
    after every load); a load also needs the input's size plus a margin free on the store's disk,
    checked before anything is written. ``allowed_roots``, when given, are the only folders
    `load_path` reads from (the server's RLM_MCP_ALLOWED_PATHS). `for_tenant(name)` is a view of
    the same store that sees only what that tenant loaded.
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
        shared: str | None = None,
        shared_options: Mapping[str, str] | None = None,
    ) -> None:
        import sqlite3

        import diskcache

        self.directory = Path(directory) if directory is not None else default_home() / "contexts"
        probe_store_dir(self.directory)
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
        self._tenant: str | None = None
        self._owns_cache = True
        try:  # no diskcache-side eviction (we evict by our own policy)
            self._cache = diskcache.Cache(
                str(self.directory),
                disk=disk_class(),
                disk_min_file_size=32 * 1024,  # small values (metadata, names) stay in SQLite
                eviction_policy="none",
                size_limit=2**62,
                timeout=60,
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"The data folder {str(self.directory)!r} cannot be used: {exc}. Set "
                "RLM_MCP_HOME (or --home) to a writable folder."
            ) from None
        if shared:  # the bucket is the authority; the local cache keeps texts and indexes
            from rlm_mcp.store.shared import SharedCache, open_bucket

            bucket = open_bucket(shared, shared_options or {})
            self._cache = SharedCache(bucket, self._cache, self._tmp, label=shared)

    # -- lifecycle
    def close(self) -> None:
        if self._owns_cache:
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

    def for_tenant(self, tenant: str) -> ContextStore:
        """A view of this store in which only `tenant`'s contexts and names exist.

        It shares the open cache (closing it closes nothing). A text two tenants load is stored
        once, but each sees only the handles it loaded itself, under its own names and sources.
        """
        if not tenant:
            raise ConfigError("A tenant needs a name.")
        view = copy.copy(self)
        view._tenant = tenant
        view._owns_cache = False
        return view

    # -- loading
    def _ingester(self, label: str, size: int) -> Ingester:
        """Check the size caps and the free disk space, then start a temp file for one load."""
        cap = self.max_context_bytes
        if cap > 0 and size > cap:
            raise InputTooLargeError(
                f"{label} is {size:,} bytes, over the {cap:,}-byte limit for one context; load a "
                "smaller part (a subdirectory or a glob), or raise RLM_MCP_MAX_CONTEXT_BYTES "
                "(max_context_bytes=...)."
            )
        if self.max_bytes > 0 and size > self.max_bytes:
            raise InputTooLargeError(
                f"{label} is {size:,} bytes, more than the whole store may hold "
                f"({self.max_bytes:,}: RLM_MCP_MAX_STORE_BYTES); load a smaller part, or raise "
                "RLM_MCP_MAX_STORE_BYTES."
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

    def load_text(
        self, text: str, *, name: str | None = None, source: str = "text", replace: bool = False
    ) -> ContextInfo:
        """Store a string (lone surrogates, the only thing that is not UTF-8, become U+FFFD)."""
        if name is not None:
            validate_name(name)
        ing = self._ingester("the text", len(text))
        try:
            self._feed_text(ing, text)
            return self._publish(ing, name=name, replace=replace, source=source, documents=())
        finally:
            ing.discard()

    def load_documents(
        self,
        docs: Mapping[str, str] | Sequence[str],
        *,
        name: str | None = None,
        source: str = "documents",
        replace: bool = False,
    ) -> ContextInfo:
        """Store several texts as one context with a header line per document."""
        if name is not None:
            validate_name(name)
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
                out.append(self._document(ing, path, start, before, trailing_newline=True))
            return self._publish(
                ing, name=name, replace=replace, source=source, documents=tuple(out)
            )
        finally:
            ing.discard()

    @staticmethod
    def _document(
        ing: Ingester, path: str, start: int, before: int, *, trailing_newline: bool
    ) -> DocumentInfo:
        """The document just fed, ended by a newline if it lacks one (several documents)."""
        length = ing.chars - start
        ends_nl = ing.last_byte == 0x0A if length else True
        lines = ing.newlines - before + (0 if ends_nl else 1)
        if trailing_newline and not ends_nl:
            ing.feed(b"\n")
        return DocumentInfo(path=clean_text(path), start=start, length=length, lines=lines)

    def load_path(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        progress: Progress | None = None,
        replace: bool = False,
    ) -> ContextInfo:
        """Load a file, a directory (recursively) or a glob pattern, streaming.

        Every file is judged twice: by name when found, and by its opened descriptor when read
        (see `_paths`), so a swap in between cannot make the load read somewhere else.
        """
        if name is not None:
            validate_name(name)
        walk, single, source = self._find(path)
        try:
            total: int | None = sum(f.stat().st_size for f, _, _ in walk.files)
        except OSError:
            total = None
        ing = self._ingester(repr(source), total or 0)
        done = 0

        def on_chunk(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        docs: _list[DocumentInfo] = []
        try:
            for file, label, was_link in walk.files:
                try:
                    opened = open_checked(
                        file, self.allowed_roots, was_link=None if single else was_link
                    )
                except (Refused, OSError) as exc:
                    why = str(exc) if isinstance(exc, Refused) else (exc.strerror or str(exc))
                    if single:
                        raise UnreadablePathError(f"Cannot load {str(path)!r}: {why}") from None
                    walk.skip("refused" if isinstance(exc, Refused) else "unreadable", file, why)
                    continue
                with os.fdopen(opened.fd, "rb", buffering=0) as fh:
                    if not single:
                        ing.feed(DOC_HEADER.format(path=label).encode("utf-8", "surrogateescape"))
                    start, before = ing.chars, ing.newlines
                    ing.feed_file(fh, on_chunk)
                    ing.end_part()
                docs.append(self._document(ing, label, start, before, trailing_newline=not single))
            if not docs:
                raise UnreadablePathError(
                    f"{str(path)!r} holds no text files to load (binary files, .git, node_modules, "
                    "virtualenvs and .gitignore'd paths are skipped)."
                )
            if ing.replaced:
                logger.warning(
                    "%s: %d undecodable bytes replaced with U+FFFD", source, ing.replaced
                )
            return self._publish(
                ing,
                name=name,
                replace=replace,
                source=source,
                documents=tuple(docs) if not single else (),
                skipped=walk.skipped,
            )
        finally:
            ing.discard()

    def _find(self, path: str | Path) -> tuple[Walk, bool, str]:
        """(the files to read, whether it is one file, the source label) for a load_path; a
        name that is not UTF-8 is shown with U+FFFD, never carried as a lone surrogate."""
        typed = str(path)
        try:
            walk, single, source = self._find_files(typed)
        except OSError as exc:  # a name too long, a path through a file, ...
            why = exc.strerror or type(exc).__name__
            raise UnreadablePathError(f"Cannot load {clean_text(typed)!r}: {why}") from None
        return walk, single, clean_text(source)

    def _find_files(self, typed: str) -> tuple[Walk, bool, str]:
        if not typed.strip():
            raise UnreadablePathError(
                "Empty path: give a file, a directory or a glob pattern (an absolute path)."
            )
        try:
            p = Path(typed).expanduser()
        except RuntimeError:  # ~user that names nobody
            raise UnreadablePathError(
                f"Cannot load {clean_text(typed)!r}: {typed.split('/')[0]} names no user on "
                "the server; send an absolute path."
            ) from None
        roots = self.allowed_roots
        if globmod.has_magic(typed):
            return self._glob(typed, str(p)), False, typed
        if (p.exists() or p.is_symlink() or roots) and (why := refusal(p, roots)):
            raise UnreadablePathError(f"Cannot load {typed!r}: {why}")
        if p.is_file():
            return Walk(files=[(p, p.name, p.is_symlink())]), True, str(p.resolve())
        if p.is_dir():
            walk = walk_directory(p, roots)
            if not walk.files:
                raise UnreadablePathError(
                    f"Directory {typed!r} holds no text files to load (binary files, .git, "
                    "node_modules, virtualenvs and .gitignore'd paths are skipped)."
                )
            return walk, False, str(p.resolve())
        if p.exists():
            raise UnreadablePathError(
                f"Cannot load {typed!r}: it is a device, pipe or socket, not a regular file "
                "or directory; save its output to a file and load that."
            )
        raise UnreadablePathError(
            f"Path {typed!r} does not exist; check the spelling, or pass a directory or a "
            "glob pattern such as 'docs/**/*.md'."
        )

    def _glob(self, typed: str, pattern: str) -> Walk:
        """The files a glob may load. A pattern aimed outside the allowed folders and one that
        matches nothing get the same answer, so a glob cannot probe what exists where."""
        nothing = UnreadablePathError(
            f"Glob {typed!r} matched no files this server may load; check the pattern (use ** "
            "for recursion) and that it names a folder the server may read."
        )
        if refusal(fixed_prefix(pattern), self.allowed_roots):
            raise nothing
        walk = Walk()
        for match in sorted(Path(m) for m in globmod.glob(pattern, recursive=True)):
            if match.is_file():
                consider(walk, match, str(match), self.allowed_roots)
        if not walk.files:
            raise nothing
        return walk

    def _publish(
        self,
        ing: Ingester,
        *,
        name: str | None,
        replace: bool,
        source: str,
        documents: tuple[DocumentInfo, ...],
        skipped: Mapping[str, int] | None = None,
    ) -> ContextInfo:
        ing.close()
        handle = "ctx_" + ing.sha.hexdigest()[:12]
        if name is not None:
            self._check_name_free(name, handle, replace)
        now = self._clock()
        skipped = dict(skipped or {})
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
                "name": name if self._tenant is None else None,
                "chars": ing.chars,
                "bytes": ing.bytes,
                "lines": ing.lines,
                "documents": [d.model_dump() for d in documents],
                "source": source if self._tenant is None else "",
                "encoding": "utf-8",
                "replaced": ing.replaced,
                "skipped": skipped if self._tenant is None else {},
                "sha256": ing.sha.hexdigest(),
                "created": now,
                "last_used": now,
                "owned": True,  # ownership is tracked from creation: the last owner frees it
            }
            self._cache.set(f"meta:{handle}", meta)  # published last: now the context is visible
            self._cache.delete(f"pending:{handle}")
        else:
            if f"text:{handle}" not in self._cache:  # a shared copy set aside as damaged
                self._cache.add(f"text:{handle}", MoveIn(ing.path), read=True)
            meta = {**meta, "last_used": now}
            if name is not None and self._tenant is None:
                meta["name"] = name
            self._cache.set(f"meta:{handle}", meta)
        self._own(handle, name=name, source=source, skipped=skipped, now=now)
        if name is not None:
            self._claim_name(name, handle, replace)
        self._evict_after_load(handle)
        info = self.info(handle)
        return info.model_copy(update={"skipped": skipped})

    def _check_name_free(self, name: str, handle: str, replace: bool) -> None:
        current = self._cache.get(self._name_key(name))
        if not isinstance(current, str) or current == handle or replace:
            return
        try:
            taken = self.info(current)
        except ContextNotFoundError:
            return  # a name left pointing at a deleted context is free
        raise NameTakenError(
            f"The name {name!r} already names {taken.handle} ({taken.chars:,} chars); pass "
            "replace=True (replace: true) to point it at this content, or choose another name."
        )

    def _claim_name(self, name: str, handle: str, replace: bool) -> None:
        """Point `name` at `handle` by compare-and-set: a name another load (in this process,
        another one, or another replica) took meanwhile is never silently overwritten."""
        key = self._name_key(name)
        for _ in range(100):
            current = self._cache.get(key)
            if current == handle:
                return
            if isinstance(current, str):
                self._check_name_free(name, handle, replace)
            if swap(self._cache, key, current, handle):
                return
        raise NameTakenError(  # pragma: no cover - a hundred lost races in a row
            f"The name {name!r} is being changed by other loads right now; try again."
        )

    # -- lookups
    def _name_key(self, name: str) -> Any:
        return f"name:{name}" if self._tenant is None else ("tname", self._tenant, name)

    def _lookup(self, handle_or_name: str) -> tuple[str, dict[str, Any]]:
        """A `ctx_...` string is only ever a handle, anything else only ever a name, and either
        only within this view."""
        ref = handle_or_name
        if is_handle_form(ref):
            handle: Any = ref
        else:
            handle = self._cache.get(self._name_key(ref))
        if isinstance(handle, str):
            meta = self._cache.get(f"meta:{handle}")
            if meta is not None and self._visible(handle):
                return handle, self._shown(handle, dict(meta))
        raise ContextNotFoundError(ref)

    def get(self, handle_or_name: str) -> StoredContext:
        """The stored context named or handled `handle_or_name`, to pass to `RLM.completion`."""
        return StoredContext(self, self._lookup(handle_or_name)[0])

    def check(self) -> None:
        """Raise StoreUnavailableError now, in one line, if the shared bucket cannot be used
        (a server calls this at start-up); nothing to check for a local store."""
        probe = getattr(self._cache, "probe", None)
        if probe is not None:
            probe()

    # -- small shared records (a cluster's session states)
    def put_record(self, key: tuple[str, ...], value: Any) -> None:
        """Keep a small JSON value under `key`; with a shared store every replica sees it."""
        self._cache.set(("rec", *key), value)

    def get_record(self, key: tuple[str, ...]) -> Any:
        return self._cache.get(("rec", *key))

    def swap_record(self, key: tuple[str, ...], expected: Any, value: Any) -> bool:
        """Set the record to `value` if it still holds `expected` (None: absent), atomically
        across processes and replicas; False if someone changed it first."""
        return swap(self._cache, ("rec", *key), expected, value)

    def delete_record(self, key: tuple[str, ...]) -> None:
        self._cache.delete(("rec", *key))

    def info(self, handle_or_name: str) -> ContextInfo:
        """Stats of a context; marks it used (written at most once a minute, reads stay cheap)."""
        handle, meta = self._lookup(handle_or_name)
        now = self._clock()
        if now - float(meta.get("last_used", 0.0)) >= TOUCH_SECONDS:
            meta["last_used"] = now
            stored = self._cache.get(f"meta:{handle}")
            if stored is not None:
                self._cache.set(f"meta:{handle}", {**stored, "last_used": now})
        return info_from_meta(meta)
