"""`run_repl` sessions on a Ray cluster: any replica finds a session by its key, wherever it runs.

`RayPool` has the part of `SessionPool` that `run_repl` uses (`lease`, `close`, `live_keys`,
`aclose`). A session key has a shared name (a hash of the key's typed parts, so no client input
spells it); the session's record in the shared store, under that name, names the detached actor
that holds it ("live") or says it expired. A replica that finds no live actor tells the client why:

- a session that idled out says it expired (after RLM_MCP_SESSION_IDLE_SECONDS);
- one whose node or actor died says it was lost;
and either way the call runs in a fresh session, marked `reset`, like a killed worker today.

Every wait on the cluster is bounded (a ping, and each event of a running call), so a dead node
answers "lost" instead of hanging the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio

from rlm_mcp.cluster.actor import SessionActor, record_key
from rlm_mcp.cluster.wire import (
    ChannelClosed,
    error_from_wire,
    read_frame,
    result_from_wire,
    write_frame,
)
from rlm_mcp.errors import ConfigError, SandboxError, SessionBusyError
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits
from rlm_mcp.sandbox.types import ErrorInfo, ExecResult, SubCallHandler

__all__ = ["NAMESPACE", "RayPool", "RemoteSession", "session_name"]

logger = logging.getLogger(__name__)

NAMESPACE = "rlm_mcp"
#: Seconds a live actor has to answer a ping before its session counts as lost.
PING_SECONDS = 10.0
#: Seconds a new actor (process start and imports) may take before the cluster counts as full.
START_SECONDS = 60.0
#: A standby taken by a new session is replaced this long after (not during its first read).
REFILL_DELAY_SECONDS = 2.0
#: Beyond the execute limit, how long a running call may go without an event from its actor.
EVENT_SLACK_SECONDS = 30.0
#: Actor handles a replica keeps (the rest are looked up by name again).
ACTOR_HANDLES = 4096

LOST = (
    "session lost: the cluster node or process that held it died; its variables are gone and "
    "this call ran in a new session"
)
#: When the session dies during a call: nothing ran to the end.
LOST_DURING = (
    "session lost: the cluster node or process that held it died during this call; its "
    "variables are gone; call again to continue in a new session"
)


def expired_note(idle: float) -> str:
    return (
        f"session expired: it was idle for over {idle:.0f}s (RLM_MCP_SESSION_IDLE_SECONDS); its "
        "variables are gone and this call ran in a new session"
    )


def session_name(key: Hashable) -> str:
    """The shared name of a session key: a hash of its typed parts, never client text. Its
    record in the shared store names the actor that holds the session."""
    parts: Any = key
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        parts = dataclasses.astuple(key)
    return "rlm-session-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:40]


def _keep_latest(kept: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """Put `key` last in `kept`, dropping the oldest beyond ACTOR_HANDLES."""
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > ACTOR_HANDLES:
        kept.popitem(last=False)


class Channel:
    """One open connection to a session actor's direct channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def ask(self, message: dict[str, Any], wait: float) -> dict[str, Any]:
        await write_frame(self.writer, message)
        async with asyncio.timeout(wait):  # no task per read, unlike wait_for
            return await read_frame(self.reader)

    def close(self) -> None:
        self.writer.close()


class RemoteSession:
    """A session held by an actor, driven from this replica (llm_query answered here)."""

    def __init__(self, pool: RayPool, name: str, actor: Any, note: str | None) -> None:
        self.pool = pool
        self.name = name
        self.actor = actor
        self.context: ContextSpec | None = None
        self.sub_calls: SubCallHandler | None = None
        self._note = note

    async def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        sub_calls: SubCallHandler | None = None,
        retried: bool = False,
    ) -> ExecResult:
        """Run `code` in the actor over its direct channel; llm_query is answered here."""
        from ray.exceptions import RayActorError

        handler = sub_calls if sub_calls is not None else self.sub_calls
        spec = self.context
        call = secrets.token_hex(8)
        limits = self.pool.limits
        wait = (timeout or limits.timeout) + limits.hard_timeout_grace + EVENT_SLACK_SECONDS
        heard = False
        channel: Channel | None = None
        try:
            channel = await self.pool.channel(self.name, self.actor)
            event = await channel.ask(
                {
                    "op": "start",
                    "call": call,
                    "code": code,
                    "handle": None if spec is None else spec.handle,
                    "documents": [] if spec is None else [list(d) for d in spec.documents],
                    "timeout": timeout,
                },
                wait,
            )
            heard = True
            while event.get("kind") == "llm":
                ok, value = await _answer(handler, event)
                answer = {"op": "answer", "call": call, "id": event["id"], "ok": ok}
                event = await channel.ask({**answer, "value": value}, wait)
            if event.get("kind") not in ("done", "refused"):
                raise SandboxError(f"the cluster session answered {event.get('kind')!r}")
            self.pool.release(self.name, channel)
            if event["kind"] == "done":
                return self._noted(result_from_wire(event["result"]))
            refused = event  # nothing ran (its context could not be read): the session is as it was
        except (RayActorError, ChannelClosed, OSError, TimeoutError):
            if channel is not None:
                channel.close()
            if not heard and not retried:
                # dead before this call began (idled out, or its node died since): say which,
                # and run the call in a new session
                self.pool.drop(self.name)
                self.actor, self._note = await anyio.to_thread.run_sync(
                    lambda: self.pool._find(self.name)
                )
                return await self.execute(code, timeout=timeout, sub_calls=sub_calls, retried=True)
            await self.pool.forget(self.name, self.actor)
            return ExecResult(
                status="crashed",
                error=ErrorInfo(type="SessionLost", message=LOST_DURING),
                reset=True,
                notes=(LOST_DURING,),
            )
        except BaseException:
            if channel is not None:
                channel.close()  # mid-call: this connection is done; the code is interrupted
            self.actor.cancel.remote(call)
            raise
        raise error_from_wire(refused, None if spec is None else spec.handle)

    def _noted(self, result: ExecResult) -> ExecResult:
        if self._note is None:
            return result
        note, self._note = self._note, None
        return dataclasses.replace(result, reset=True, notes=(note, *result.notes))


async def _answer(handler: SubCallHandler | None, event: Mapping[str, Any]) -> tuple[bool, Any]:
    if handler is None:
        return False, "no sub-model in this session"
    try:
        return True, list(await handler(list(event["prompts"]), model=event.get("model")))
    except Exception as exc:
        return False, str(exc) or type(exc).__name__


class RayPool:
    """Sandbox sessions as detached actors on the Ray cluster at `address`."""

    #: run_repl sends a handle, not a path on this replica's disk.
    remote = True

    def __init__(
        self,
        *,
        address: str,
        store: Any,
        store_url: str,
        store_options: Mapping[str, str],
        cache_dir: str,
        limits: SandboxLimits,
        idle_seconds: float,
        session_cpus: float = 0.25,
        standby: int = 1,
    ) -> None:
        if not store_url:
            raise ConfigError(
                "RLM_MCP_RAY_ADDRESS needs RLM_MCP_STORE: sessions on other nodes read their "
                "contexts from the shared bucket."
            )
        self.address = address
        self.store = store
        self.store_url = store_url
        self.store_options = dict(store_options)
        self.cache_dir = cache_dir
        self.limits = limits
        self.idle_seconds = idle_seconds
        self.session_cpus = session_cpus
        self._cls: Any = None
        #: Handles of actors this replica has used (a lookup in Ray's GCS costs milliseconds).
        self._actors: OrderedDict[str, Any] = OrderedDict()
        self.standby = standby
        self._spares: list[tuple[str, Any, dict[str, Any]]] = []
        self._starting = 0
        self._spare_lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._closed = False
        self._endpoints: dict[str, dict[str, Any]] = {}
        self._idle: dict[str, list[Channel]] = {}
        #: Keys this replica has leased, the latest ACTOR_HANDLES (so a legacy connection's
        #: sessions end with it).
        self._leased: OrderedDict[Hashable, None] = OrderedDict()

    def live_keys(self) -> list[Hashable]:
        """The session keys this replica has used and not closed (others' are not known)."""
        return list(self._leased)

    def _connect(self) -> Any:
        if self._cls is None:
            try:
                import ray
            except ImportError:
                raise ConfigError(
                    "RLM_MCP_RAY_ADDRESS needs the cluster extra: pip install 'rlm-mcp[cluster]'."
                ) from None
            if not ray.is_initialized():
                ray.init(
                    address=self.address,
                    namespace=NAMESPACE,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                )
            self._cls = ray.remote(SessionActor)
        return self._cls

    def _find(self, name: str) -> tuple[Any, str | None]:
        """(the live actor of session `name`, the note for the caller); blocking (a thread).

        The session's record in the shared store names its actor, so any replica finds it. A
        new session takes a standby actor (already started, with its worker running) when
        there is one, and the record is written by compare-and-set: when two replicas start the
        same session at once, one actor wins and the other goes back.
        """
        import ray

        self._connect()
        known = self._actors.get(name)
        if known is not None:  # a dead one fails its call, which then answers "lost"
            return known, None
        key = record_key(name)
        for _ in range(10):
            record = self.store.get_record(key)
            note: str | None = None
            if isinstance(record, dict) and record.get("state") == "live":
                actor = self._alive(str(record.get("actor", "")))
                if actor is not None:
                    self._remember(name, actor)
                    return actor, None
                note = LOST
            elif isinstance(record, dict):
                note = expired_note(float(record.get("idle", self.idle_seconds)))
            spare_name, spare, endpoint = self._take_spare()
            try:
                wait = PING_SECONDS if endpoint else START_SECONDS
                ray.get(spare.claim.remote(name), timeout=wait)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                ray.kill(spare, no_restart=True)
                if endpoint is not None:
                    continue  # a standby that idled out or died: the next one
                if isinstance(exc, ray.exceptions.GetTimeoutError):
                    raise SessionBusyError(
                        f"No room on the Ray cluster for another session within "
                        f"{START_SECONDS:.0f}s (each asks {self.session_cpus} CPU): close "
                        "sessions you no longer need, or add nodes."
                    ) from None
                raise SandboxError(f"a session actor failed to start: {exc}") from None
            live = {"state": "live", "actor": spare_name}
            if self.store.swap_record(key, record, live):
                self._remember(name, spare)
                if endpoint is not None:
                    self._endpoints[name] = endpoint
                return spare, note
            ray.kill(spare, no_restart=True)  # another replica started this session first
        raise SandboxError(f"session {name} is being started by several replicas; try again")

    def _alive(self, actor_name_: str) -> Any:
        """The actor by that name if it answers a ping in time, else None (killed if stuck)."""
        import ray

        try:
            actor = ray.get_actor(actor_name_, namespace=NAMESPACE)
        except ValueError:
            return None
        try:
            ray.get(actor.ping.remote(), timeout=PING_SECONDS)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            ray.kill(actor, no_restart=True)
            return None
        return actor

    def _take_spare(self) -> tuple[str, Any, dict[str, Any] | None]:
        """A standby actor (and its channel's endpoint), or a new actor when none is ready;
        either way, standbys are topped up in the background."""
        with self._spare_lock:
            taken = self._spares.pop() if self._spares else None
        self._refill()
        if taken is not None:
            return taken
        return (*self._new_actor(), None)

    def _new_actor(self) -> tuple[str, Any]:
        cls = self._connect()
        name = "rlm-actor-" + secrets.token_hex(16)
        return name, cls.options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=0,
            max_concurrency=64,
            num_cpus=self.session_cpus,
            scheduling_strategy="SPREAD",
        ).remote(
            None, self.limits, self.cache_dir, self.store_url, self.store_options, self.idle_seconds
        )

    def _refill(self, delay: float = REFILL_DELAY_SECONDS) -> None:
        """Start standbys until `standby` are ready or starting, each on a thread of its own,
        after `delay` (a new session's first read of its context goes first)."""
        with self._spare_lock:
            wanted = self.standby - len(self._spares) - self._starting
            self._starting += max(0, wanted)
        for _ in range(max(0, wanted)):
            timer = threading.Timer(delay, self._start_spare)
            timer.daemon = True
            with self._spare_lock:
                self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()

    def _start_spare(self) -> None:
        import ray

        if self._closed:
            with self._spare_lock:
                self._starting -= 1
            return
        try:
            name, actor = self._new_actor()
            endpoint = ray.get(actor.prepare.remote(), timeout=120)
        except Exception:  # no standby this time: a session starts cold instead
            logger.warning("a standby session actor failed to start", exc_info=True)
            with self._spare_lock:
                self._starting -= 1
            return
        with self._spare_lock:
            self._starting -= 1
            closed = self._closed
            if not closed:
                self._spares.append((name, actor, endpoint))
        if closed:  # the replica closed while this standby started: nobody would take it
            ray.kill(actor, no_restart=True)

    def ready_standbys(self) -> int:
        """How many standby actors are started and waiting for a session."""
        with self._spare_lock:
            return len(self._spares)

    def warm(self) -> None:
        """Connect and start the standbys now (a server calls this at start-up)."""
        self._connect()
        self._refill(delay=0.0)

    def _remember(self, name: str, actor: Any) -> None:
        _keep_latest(self._actors, name, actor)

    @asynccontextmanager
    async def lease(
        self,
        key: Hashable,
        *,
        owner: Hashable = None,
        context: ContextSpec | None = None,
        sub_calls: SubCallHandler | None = None,
        run_slot: bool = True,
        spare: bool = False,
    ) -> AsyncIterator[RemoteSession]:
        name = session_name(key)
        known = self._actors.get(name)
        if known is not None:  # the common case costs no thread hop
            actor, note = known, None
        else:
            actor, note = await anyio.to_thread.run_sync(lambda: self._find(name))
        _keep_latest(self._leased, key, None)
        session = RemoteSession(self, name, actor, note)
        session.context = context
        session.sub_calls = sub_calls
        yield session

    async def channel(self, name: str, actor: Any) -> Channel:
        """An idle connection to `name`'s actor, or a new one (its address and secret come
        from the actor, through Ray, once)."""
        idle = self._idle.get(name)
        if idle:
            return idle.pop()
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            found: dict[str, Any] = await asyncio.wait_for(actor.channel.remote(), PING_SECONDS)
            endpoint = self._endpoints[name] = found
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint["host"], endpoint["port"]), PING_SECONDS
        )
        channel = Channel(reader, writer)
        await write_frame(writer, {"secret": endpoint["secret"]})
        return channel

    def release(self, name: str, channel: Channel) -> None:
        """A connection whose call finished cleanly, kept for the next call."""
        idle = self._idle.setdefault(name, [])
        if len(idle) < 4:
            idle.append(channel)
        else:
            channel.close()

    def drop(self, name: str) -> None:
        """Forget what this replica knew of `name`'s actor (it died, or idled out)."""
        self._actors.pop(name, None)
        self._endpoints.pop(name, None)
        for channel in self._idle.pop(name, []):
            channel.close()

    async def forget(self, name: str, actor: Any = None) -> None:
        """End session `name`: kill its actor (`actor`, or the one its record names) and delete
        its record, so that its next call starts fresh."""
        self.drop(name)

        def gone() -> None:
            import ray

            self._connect()
            target = actor
            record = self.store.get_record(record_key(name))
            if target is None and isinstance(record, dict) and record.get("actor"):
                with suppress(ValueError):
                    target = ray.get_actor(str(record["actor"]), namespace=NAMESPACE)
            if target is not None:
                with suppress(Exception):  # already gone
                    ray.kill(target, no_restart=True)
            self.store.delete_record(record_key(name))

        await anyio.to_thread.run_sync(gone)

    async def close(self, key: Hashable, *, why: str | None = None) -> None:
        self._leased.pop(key, None)
        await self.forget(session_name(key))

    async def aclose(self) -> None:
        """Stop this replica's unclaimed standbys. Sessions are detached and outlive the
        replica: that is the point."""
        with self._spare_lock:
            self._closed = True
            spares, self._spares = self._spares, []
            for timer in self._timers:
                timer.cancel()
        if spares:
            import ray

            for _, actor, _ in spares:
                with suppress(Exception):
                    ray.kill(actor, no_restart=True)
        for channels in self._idle.values():
            for channel in channels:
                channel.close()
        self._idle.clear()
