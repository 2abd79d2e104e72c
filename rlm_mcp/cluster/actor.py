"""One sandbox session as a Ray actor: today's restricted worker process, owned by an actor on
whichever node Ray placed it, found by name from any replica.

Ray places, names and supervises the actor; calls reach it over its direct channel (`wire`):
one TCP connection per call in flight, authenticated by a secret the replica learns through
Ray. The actor holds no keys and makes no model calls. When sandboxed code calls `llm_query`,
the actor's `SandboxSession` checks the limits as it does on one machine and then *relays* the
prompts to the replica on that connection, and waits for its answer. So provider keys stay in
the replica, usage lands in the caller's tree, and the worker's own protections (confinement,
limits, the bridge's checks) are the same code.

The context is read from the shared store through this node's local cache (`ContextStore` with
`shared=`), by handle: a replica sends a handle, never a path on its own disk.

An idle actor (no call for `idle_seconds`) records that it expired in the shared store and
exits, so the next call can say "expired" rather than "lost".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import itertools
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlm_mcp.cluster.feed import PipeFeed
from rlm_mcp.cluster.wire import (
    ChannelClosed,
    error_to_wire,
    read_frame,
    result_to_wire,
    write_frame,
)
from rlm_mcp.errors import RLMError, SandboxError
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits, SandboxSession
from rlm_mcp.sandbox.types import ExecResult

__all__ = ["SessionActor", "record_key"]


def record_key(name: str) -> tuple[str, str]:
    """The shared-store key where a session's state ("live" or "expired") is kept."""
    return ("session", name)


async def _no_caller(prompts: Sequence[str], *, model: str | None = None) -> list[str]:
    raise RuntimeError("no replica is driving this call")  # every execute passes its relay


class SessionActor:
    """Created by `RayPool` as ``ray.remote(SessionActor)``, detached and named. A standby is
    created before its session exists (`prepare`), and `claim`ed by one when it starts."""

    def __init__(
        self,
        name: str | None,
        limits: SandboxLimits,
        cache_dir: str,
        store_url: str,
        store_options: Mapping[str, str],
        idle_seconds: float,
    ) -> None:
        self.name = name
        self.limits = limits
        self.idle_seconds = idle_seconds
        self._store_args = (cache_dir, store_url, dict(store_options))
        self._store: Any = None
        self._session: SandboxSession | None = None
        self._used = False  # code has run for a caller (the standby's warm-up does not count)
        self._last = time.monotonic()
        self._running = 0
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()  # one call at a time, like a local session
        self._server: asyncio.Server | None = None
        self._endpoint: dict[str, Any] | None = None

    # -- what a replica calls
    async def ping(self) -> str:
        """This actor's node id (a cheap liveness check, and where it runs)."""
        import ray

        self._start_reaper()
        return str(ray.get_runtime_context().get_node_id())

    async def prepare(self) -> dict[str, Any]:
        """Get ready before any session is known (a standby): the worker started, the shared
        store opened, the channel listening. Returns the channel's endpoint."""
        await asyncio.to_thread(self._open_store)
        self._start_reaper()
        async with self._lock:
            session = await self._ensure(None)
            await session.execute("pass")  # the worker's first call pays its lazy set-up
        return await self.channel()

    async def claim(self, session: str) -> None:
        """Become the actor of `session` (its name in the shared records)."""
        self.name = session
        self._last = time.monotonic()

    async def channel(self) -> dict[str, Any]:
        """The address and secret of this actor's direct channel (started on first use)."""
        import ray

        self._start_reaper()
        if self._endpoint is None:
            host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            secret = secrets.token_hex(16)
            self._server = await asyncio.start_server(self._serve_channel, host=host, port=0)
            port = self._server.sockets[0].getsockname()[1]
            self._endpoint = {"host": host, "port": port, "secret": secret}
        return self._endpoint

    async def _serve_channel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One replica's connection: it proves it knows the secret, then sends calls, one at a
        time; each call's llm_query requests go back on the same connection."""
        assert self._endpoint is not None
        try:
            hello = await asyncio.wait_for(read_frame(reader), 10)
            if not hmac.compare_digest(str(hello.get("secret", "")), self._endpoint["secret"]):
                return
            while True:
                msg = await read_frame(reader)
                if msg.get("op") != "start":
                    return
                try:
                    result = await self._execute(msg, reader, writer)
                except RLMError as exc:  # e.g. the context could not be read from the bucket:
                    # the caller's to see as the same error, and the session stays as it was
                    await write_frame(writer, {"kind": "refused", **error_to_wire(exc)})
                    continue
                await write_frame(writer, {"kind": "done", "result": result_to_wire(result)})
        except (ChannelClosed, TimeoutError, KeyError, ValueError, TypeError):
            return
        finally:
            writer.close()

    async def _execute(
        self, msg: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ExecResult:
        call = str(msg["call"])
        documents = tuple(tuple(d) for d in msg.get("documents") or [])
        timeout = msg.get("timeout")
        ids = itertools.count()

        async def relay(prompts: Sequence[str], *, model: str | None = None) -> list[str]:
            rid = next(ids)
            request = {"kind": "llm", "id": rid, "prompts": list(prompts), "model": model}
            await write_frame(writer, request)
            reply = await read_frame(reader)
            if reply.get("op") != "answer" or reply.get("id") != rid:
                raise ChannelClosed("the replica's answer is out of step")
            if not reply.get("ok"):
                raise RuntimeError(str(reply.get("value")))
            return [str(v) for v in reply.get("value") or []]

        self._start_reaper()
        self._running += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks[call] = task
        try:
            async with self._lock:
                self._last = time.monotonic()
                session = await self._attach(msg.get("handle"), documents)
                self._used = True
                return await session.execute(
                    str(msg["code"]),
                    timeout=None if timeout is None else float(timeout),
                    sub_calls=relay,
                )
        finally:
            self._running -= 1
            self._tasks.pop(call, None)
            self._last = time.monotonic()

    async def cancel(self, call: str) -> None:
        """The replica's caller gave up: interrupt the code as a local cancel does."""
        task = self._tasks.get(call)
        if task is not None:
            task.cancel()

    async def shutdown(self, expired: bool = False) -> None:
        """Close the worker; with `expired`, record that first. The actor then exits."""
        import ray

        if expired and self.name is not None:  # a standby never claimed has no record
            me = ray.get_runtime_context().get_actor_name()
            with contextlib.suppress(Exception):
                store = self._open_store()
                key = record_key(self.name)
                record = store.get_record(key)
                if isinstance(record, dict) and record.get("actor") == me:  # still its session
                    gone = {"state": "expired", "idle": self.idle_seconds}
                    store.swap_record(key, record, gone)
        if self._session is not None:
            await self._session.close()
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]

    # -- inside
    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        import ray

        step = max(0.5, min(30.0, self.idle_seconds / 4))
        while True:
            await asyncio.sleep(step)
            if not self._running and time.monotonic() - self._last > self.idle_seconds:
                me = ray.get_runtime_context().current_actor
                me.shutdown.remote(expired=True)
                return

    def _open_store(self) -> Any:
        if self._store is None:
            from rlm_mcp.store import ContextStore

            cache_dir, url, options = self._store_args
            self._store = ContextStore(cache_dir, shared=url, shared_options=options)
        return self._store

    async def _attach(
        self, handle: str | None, documents: Sequence[tuple[str, int, int]]
    ) -> SandboxSession:
        """The session, with the context `handle` names (read from this node's cache, which
        downloads it from the bucket the first time)."""
        if handle is None:
            return await self._ensure(None)
        current = self._session.context if self._session is not None else None
        if current is not None and current.handle == handle and current.documents == documents:
            return await self._ensure(current)  # the replica resolved the handle: no lookup
        store = self._open_store()
        if self._used:  # its variables must survive whatever happens to the download
            path: Path = await asyncio.to_thread(store.text_path, handle)
            spec = ContextSpec(path=path, documents=tuple(documents), handle=handle)
            return await self._ensure(spec)
        return await self._stream(store, handle, documents)

    async def _stream(
        self, store: Any, handle: str, documents: Sequence[tuple[str, int, int]]
    ) -> SandboxSession:
        """A session's first context, read by its worker while the download fills it (see
        cluster.feed); a text already on this node is read as usual."""
        feed = PipeFeed(asyncio.get_running_loop())
        download = asyncio.ensure_future(asyncio.to_thread(store.text_path, handle, feed))
        pending = ContextSpec(documents=tuple(documents), handle=handle)
        try:
            session = await self._ensure(None)  # (a worker that is starting overlaps too)
            ready = asyncio.ensure_future(feed.ready.wait())
            await asyncio.wait({download, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if feed.fd is None:  # on this node already, or refused before any byte came
                path: Path = await download
                await session.set_context(dataclasses.replace(pending, path=path))
                return session
            load = asyncio.ensure_future(
                session.set_context(pending, growing=(feed.fd, feed.read_end))
            )
            try:
                path = await download
            except BaseException:
                feed.stop()  # the worker sees the pipe close and drops what it read
                with contextlib.suppress(Exception):
                    await load
                raise
            feed.whole()
            landed = dataclasses.replace(pending, path=path)
            try:
                await load
            except (SandboxError, TimeoutError, OSError):  # its worker died or was restarted
                # (a download slower than a request may take), or the pipe never arrived: the
                # text is whole and checked now, so read it as usual (its errors are the real ones)
                await session.set_context(landed)
            else:
                session.context_landed(landed)
            return session
        finally:
            feed.close()

    async def _ensure(self, spec: ContextSpec | None) -> SandboxSession:
        if self._session is None:  # llm_query exists in the code; each call relays its own
            self._session = SandboxSession(context=spec, limits=self.limits, sub_calls=_no_caller)
            await self._session.start()
        elif spec is not None and self._session.context != spec:
            await self._session.set_context(spec)
        return self._session
