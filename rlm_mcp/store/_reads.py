"""Paged reads of stored texts: a slice of a 1 GB context decodes at most one checkpoint's span.

A mixin of `ContextStore`: it needs `_cache`, `_indexes` and `_lookup` (which applies the
caller's view: a tenant reads only what it may see).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diskcache

from rlm_mcp.errors import ContextNotFoundError, DocumentNotFoundError
from rlm_mcp.store._ingest import Index
from rlm_mcp.store._parts import DocumentInfo, skip_chars

if TYPE_CHECKING:
    from rlm_mcp.store.shared import Feed

__all__ = ["Reads"]


class Reads:
    _cache: Any
    _indexes: dict[str, Index]

    def _lookup(self, handle_or_name: str) -> tuple[str, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def _meta(self, handle_or_name: str) -> dict[str, Any]:
        return self._lookup(handle_or_name)[1]

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

    def text_path(self, handle: str, feed: Feed | None = None) -> Path:
        """The on-disk UTF-8 file of the whole text (open it read-only; never write to it).
        With a shared store, `feed` hears how a download fills the file, when one is needed."""
        h = self._lookup(handle)[0]
        key = f"text:{h}"
        if feed is not None and not isinstance(self._cache, diskcache.Cache):  # shared
            fh = self._cache.get(key, read=True, feed=feed)
        else:
            fh = self._cache.get(key, read=True)
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
            raise DocumentNotFoundError(meta["handle"], doc, 1)
        if isinstance(doc, int):
            if not -len(docs) <= doc < len(docs):
                raise DocumentNotFoundError(meta["handle"], doc, len(docs))
            d = docs[doc]
        else:
            found = [x for x in docs if x.path == doc]
            if not found:
                raise DocumentNotFoundError(meta["handle"], doc, len(docs))
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
