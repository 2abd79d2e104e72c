"""Who may see a stored context, how it is listed and deleted, pins, and eviction.

A mixin of `ContextStore`. Keys it owns, besides the core `meta:`/`text:`/`index:`/`name:`:

- ``("own", tenant, handle)`` -> {source, name, created, skipped}: a load by `tenant` ("" for the
  unscoped store). A tenant's view sees exactly the handles it owns, with its own source and name,
  so sharing bytes underneath (content addressing) never shares what another tenant called them.
- ``("tname", tenant, name)`` -> handle: a tenant's names (the unscoped store keeps ``name:``).
- ``("pin", handle, token)`` -> {pid, host, time}: a running session uses this context; eviction
  skips it while the pinning process lives (same host) and for at most PIN_SECONDS.

Keys are tuples of typed parts, so no tenant or name can spell another's key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from builtins import list as _list
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rlm_mcp.errors import ContextNotFoundError
from rlm_mcp.store._ingest import Index
from rlm_mcp.store._parts import ORPHAN_SECONDS, ContextInfo, info_from_meta

__all__ = ["PIN_SECONDS", "Upkeep"]

logger = logging.getLogger(__name__)

#: A pin older than this is ignored even if its process still runs (a leaked pin must not keep a
#: context forever).
PIN_SECONDS = 24 * 3600.0
_HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Upkeep:
    _cache: Any
    _indexes: dict[str, Index]
    _tenant: str | None
    _tmp: Any
    max_bytes: int
    max_age_days: float
    _clock: Callable[[], float]

    def _lookup(self, handle_or_name: str) -> tuple[str, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    # -- visibility
    def _owner(self) -> str:
        return self._tenant or ""

    def _visible(self, handle: str) -> bool:
        return self._tenant is None or ("own", self._tenant, handle) in self._cache

    def _shown(self, handle: str, meta: dict[str, Any]) -> dict[str, Any]:
        """The metadata as this view may see it: a tenant sees its own name and source."""
        if self._tenant is None:
            return meta
        own = self._cache.get(("own", self._tenant, handle)) or {}
        return {
            **meta,
            "name": own.get("name"),
            "source": own.get("source", ""),
            "created": own.get("created", meta.get("created", 0.0)),
            "skipped": own.get("skipped", {}),
        }

    def _own(
        self,
        handle: str,
        *,
        name: str | None,
        source: str,
        skipped: Mapping[str, int],
        now: float,
    ) -> None:
        """Record that this view loaded `handle` (again), under `name` if given."""
        key = ("own", self._owner(), handle)
        before = self._cache.get(key) or {}
        record = {
            "source": source,
            "name": name if name is not None else before.get("name"),
            "created": before.get("created", now),
            "skipped": dict(skipped),
        }
        if name is not None and self._tenant is not None:
            old = self._cache.get(("tname", self._tenant, name))
            if isinstance(old, str) and old != handle:  # re-pointed: the old one loses the name
                previous = self._cache.get(("own", self._tenant, old))
                if previous and previous.get("name") == name:
                    self._cache.set(("own", self._tenant, old), {**previous, "name": None})
        self._cache.set(key, record)

    def _keys(self, kind: str) -> Iterator[tuple[Any, ...]]:
        for key in _list(self._cache.iterkeys()):
            if isinstance(key, tuple) and key and key[0] == kind:
                yield key

    # -- listing and deleting
    def list(self) -> _list[ContextInfo]:
        out = []
        if self._tenant is None:
            for key in _list(self._cache.iterkeys()):
                if isinstance(key, str) and key.startswith("meta:"):
                    meta = self._cache.get(key)
                    if meta is not None:
                        out.append(info_from_meta(meta))
        else:
            for _, tenant, handle in self._keys("own"):
                meta = self._cache.get(f"meta:{handle}") if tenant == self._tenant else None
                if meta is not None:
                    out.append(info_from_meta(self._shown(handle, dict(meta))))
        return sorted(out, key=lambda i: i.created)

    def delete(self, handle_or_name: str) -> bool:
        """Delete from this view. A tenant gives up its own claim; the bytes go with the last
        owner (contexts stored before ownership was tracked only go with an unscoped delete)."""
        try:
            handle = self._lookup(handle_or_name)[0]
        except ContextNotFoundError:
            return False
        if self._tenant is None:
            self._remove(handle)
            return True
        self._cache.delete(("own", self._tenant, handle))
        for key in _list(self._keys("tname")):
            if key[1] == self._tenant and self._cache.get(key) == handle:
                self._cache.delete(key)
        stored = self._cache.get(f"meta:{handle}") or {}
        if stored.get("owned") and not any(k[2] == handle for k in self._keys("own")):
            self._remove(handle)
        return True

    def _remove(self, handle: str) -> None:
        """Remove a context for everyone: invisible first, then its bytes, names and claims."""
        self._cache.delete(f"meta:{handle}")
        self._cache.delete(f"text:{handle}")
        self._cache.delete(f"index:{handle}")
        self._indexes.pop(handle, None)
        for key in _list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith("name:") and self._cache.get(key) == handle:
                self._cache.delete(key)
            elif isinstance(key, tuple) and len(key) == 3:
                kind = key[0]
                if (
                    (kind == "own" and key[2] == handle)
                    or (kind == "pin" and key[1] == handle)
                    or (kind == "damaged" and key[1] == handle)
                    or (kind == "tname" and self._cache.get(key) == handle)
                ):
                    self._cache.delete(key)

    # -- pins
    def pin(self, handle: str) -> str:
        """Keep `handle` from eviction until `unpin(token)` (or this process ends)."""
        h = self._lookup(handle)[0]
        token = secrets.token_hex(8)
        self._cache.set(
            ("pin", h, token), {"pid": os.getpid(), "host": _HOST, "time": self._clock()}
        )
        return f"{h}/{token}"

    def unpin(self, token: str) -> None:
        handle, _, secret = token.partition("/")
        self._cache.delete(("pin", handle, secret))

    @contextlib.contextmanager
    def pinned(self, handle: str) -> Iterator[str]:
        """`handle` resolved, and kept from eviction for the block."""
        token = self.pin(handle)
        try:
            yield token.partition("/")[0]
        finally:
            self.unpin(token)

    def _live_pins(self, now: float) -> set[str]:
        live: set[str] = set()
        for key in _list(self._keys("pin")):
            value = self._cache.get(key)
            alive = (
                isinstance(value, dict)
                and now - float(value.get("time", 0.0)) < PIN_SECONDS
                and (value.get("host") != _HOST or _pid_alive(int(value.get("pid", 0))))
            )
            if alive:
                live.add(key[1])
            else:
                self._cache.delete(key)
        return live

    # -- eviction
    def _evict_after_load(self, keep: str) -> None:
        """Evict under a lock shared by every process on this store, sparing `keep`."""
        import diskcache

        with diskcache.Lock(self._cache, "lock:evict", expire=300):
            self.evict(keep=(keep,))

    def evict(self, *, now: float | None = None, keep: tuple[str, ...] = ()) -> _list[str]:
        """Drop contexts unused for max_age_days (0 disables), then LRU ones over max_bytes.

        Global across tenants; never a pinned context (a running session uses it) nor `keep`.
        """
        now = self._clock() if now is None else now
        spared = self._live_pins(now) | set(keep)
        metas = [
            info_from_meta(m)
            for k in _list(self._cache.iterkeys())
            if isinstance(k, str) and k.startswith("meta:") and (m := self._cache.get(k))
        ]
        infos = sorted(metas, key=lambda i: i.last_used)
        gone: _list[str] = []
        for i in infos:
            old = self.max_age_days > 0 and now - i.last_used > self.max_age_days * 86400
            if old and i.handle not in spared:
                self._remove(i.handle)
                gone.append(i.handle)
        live = [i for i in infos if i.handle not in gone]
        total = sum(i.bytes for i in live)
        for i in live:
            if total <= self.max_bytes:
                break
            if i.handle in spared:
                continue
            self._remove(i.handle)
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
        prune = getattr(self._cache, "prune_local", None)
        if prune is not None:  # a shared store: local copies of what another replica removed
            prune()
        for key in _list(self._keys("rec")):  # records that say when they stop mattering
            record = self._cache.get(key)
            expires = record.get("expires") if isinstance(record, dict) else None
            if isinstance(expires, (int, float)) and expires < now:
                self._cache.delete(key)
        for f in [*self._tmp.glob("ingest-*"), *self._tmp.glob("download-*")]:
            try:
                if now - f.stat().st_mtime > ORPHAN_SECONDS:
                    f.unlink()
            except OSError:
                pass
