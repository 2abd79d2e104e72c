"""One sandbox session as a Ray actor: today's restricted worker process, owned by an actor on
whichever node Ray placed it, found by name from any replica.

The actor holds no keys and makes no model calls. When sandboxed code calls `llm_query`, the
actor's `SandboxSession` checks the limits as it does on one machine and then *relays* the
prompts to the replica that runs the call, as an event returned to that replica (by `start`,
then by each `answer`). So provider keys stay in the replica, usage lands in the caller's tree, and
the worker's own protections (confinement, limits, the bridge's checks) are the same code.

The context is read from the shared store through this node's local cache (`ContextStore` with
`shared=`), by handle: a replica sends a handle, never a path on its own disk.

An idle actor (no call for `idle_seconds`) records that it expired in the shared store and
exits, so the next call can say "expired" rather than "lost".
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlm_mcp.cluster.wire import ChannelClosed, read_frame, result_to_wire, write_frame
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits, SandboxSession

__all__ = ["SessionActor", "record_key"]


def record_key(name: str) -> tuple[str, str]:
    """The shared-store key where a session's state ("live" or "expired") is kept."""
    return ("session", name)


async def _no_caller(prompts: Sequence[str], *, model: str | None = None) -> list[str]:
    raise RuntimeError("no replica is driving this call")  # every execute passes its relay


class SessionActor:
    """Created by `RayPool` as ``ray.remote(SessionActor)``, detached and named."""

    def __init__(
        self,
        name: str,
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
        self._calls: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._replies: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._ids = itertools.count()
        self._last = time.monotonic()
        self._running = 0
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lock: asyncio.Lock | None = None
        self._server: asyncio.Server | None = None
        self._endpoint: dict[str, Any] | None = None

    # -- what a replica calls
    async def ping(self) -> str:
        """This actor's node id (a cheap liveness check, and where it runs)."""
        import ray

        self._start_reaper()
        return str(ray.get_runtime_context().get_node_id())

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
        """One replica's connection: the same start/answer/cancel as the Ray methods."""
        assert self._endpoint is not None
        try:
            hello = await asyncio.wait_for(read_frame(reader), 10)
            if not hmac.compare_digest(str(hello.get("secret", "")), self._endpoint["secret"]):
                return
            while True:
                msg = await read_frame(reader)
                op = msg.get("op")
                if op == "start":
                    event = await self.start(
                        str(msg["call"]),
                        str(msg["code"]),
                        msg.get("handle"),
                        msg.get("documents") or [],
                        msg.get("timeout"),
                    )
                elif op == "answer":
                    event = await self.answer(
                        str(msg["call"]), int(msg["id"]), bool(msg["ok"]), msg.get("value")
                    )
                elif op == "cancel":
                    await self.cancel(str(msg["call"]))
                    continue
                else:
                    return
                if event.get("kind") == "done":
                    event = {"kind": "done", "result": result_to_wire(event["result"])}
                await write_frame(writer, event)
        except (ChannelClosed, TimeoutError, KeyError, ValueError, TypeError):
            return
        finally:
            writer.close()

    async def start(
        self,
        call: str,
        code: str,
        handle: str | None,
        documents: Sequence[tuple[str, int, int]],
        timeout: float | None,
    ) -> dict[str, Any]:
        """Start running `code` and return its first event: an llm_query request to answer
        (`answer`), or the result. Code without sub-calls costs one actor call."""
        self._start_reaper()
        self._calls[call] = asyncio.Queue()
        self._running += 1
        self._tasks[call] = asyncio.get_running_loop().create_task(
            self._run(call, code, handle, documents, timeout)
        )
        return await self._next(call)

    async def answer(self, call: str, rid: int, ok: bool, value: Any) -> dict[str, Any]:
        """Answer request `rid` of `call`; returns the call's next event."""
        future = self._replies.pop(rid, None)
        if future is not None and not future.done():
            future.set_result((ok, value))
        return await self._next(call)

    async def cancel(self, call: str) -> None:
        """The replica's caller gave up: interrupt the code as a local cancel does."""
        task = self._tasks.get(call)
        if task is not None:
            task.cancel()

    async def _run(
        self,
        call: str,
        code: str,
        handle: str | None,
        documents: Sequence[tuple[str, int, int]],
        timeout: float | None,
    ) -> None:
        events = self._calls[call]
        assert self._lock is not None
        try:
            async with self._lock:  # one call at a time, like a local session
                self._last = time.monotonic()
                spec = await self._spec(handle, documents)
                session = await self._ensure(spec)

                async def relay(prompts: Sequence[str], *, model: str | None = None) -> list[str]:
                    return await self._relay(events, prompts, model)

                result = await session.execute(code, timeout=timeout, sub_calls=relay)
            await events.put({"kind": "done", "result": result})
        except BaseException as exc:
            await events.put({"kind": "failed", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            self._running -= 1
            self._tasks.pop(call, None)
            self._last = time.monotonic()

    async def _next(self, call: str) -> dict[str, Any]:
        events = self._calls[call]
        event = await events.get()
        if event["kind"] in ("done", "failed"):
            self._calls.pop(call, None)
        return event

    async def read_variable(self, name: str) -> str | None:
        return None if self._session is None else await self._session.get_variable_text(name)

    async def shutdown(self, expired: bool = False) -> None:
        """Close the worker; with `expired`, record that first. The actor then exits."""
        import ray

        if expired:
            with contextlib.suppress(Exception):
                self._open_store().put_record(
                    record_key(self.name), {"state": "expired", "idle": self.idle_seconds}
                )
        if self._session is not None:
            await self._session.close()
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]

    # -- inside
    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._lock = asyncio.Lock()
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

    async def _spec(
        self, handle: str | None, documents: Sequence[tuple[str, int, int]]
    ) -> ContextSpec | None:
        if handle is None:
            return None
        store = self._open_store()
        path: Path = await asyncio.to_thread(store.text_path, handle)
        return ContextSpec(path=path, documents=[tuple(d) for d in documents])  # type: ignore[misc]

    async def _ensure(self, spec: ContextSpec | None) -> SandboxSession:
        if self._session is None:  # llm_query exists in the code; each call relays its own
            self._session = SandboxSession(context=spec, limits=self.limits, sub_calls=_no_caller)
            await self._session.start()
        elif spec is not None and self._session.context != spec:
            await self._session.set_context(spec)
        return self._session

    async def _relay(
        self, events: asyncio.Queue[dict[str, Any]], prompts: Sequence[str], model: str | None
    ) -> list[str]:
        rid = next(self._ids)
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        await events.put({"kind": "llm", "id": rid, "prompts": list(prompts), "model": model})
        try:
            ok, value = await future
        finally:
            self._replies.pop(rid, None)
        if not ok:
            raise RuntimeError(str(value))
        return [str(v) for v in value]
