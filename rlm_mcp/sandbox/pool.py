"""A capped pool of sandbox sessions, shared fairly between owners (tenants).

Callers hold a session through `lease`, so the pool never closes one that is running code. Room
for a new session is made only by closing a session of the *same owner* that nobody has used for
`grace_seconds`: a warm session that a client is still working with is never collateral damage of
another client's load, and one tenant can never evict another's. When there is no such session
the new caller waits (bounded by `wait_seconds`) and then gets `SessionBusyError`, which says when
to retry, instead of a session that silently lost its variables.

Each owner may also hold at most `owner_max_sessions` live sessions and run at most
`owner_max_running` calls at once: with several tenants on one machine, one tenant's busy loops
take its own share of the CPU and workers, never everyone's. Keys are tuples of typed parts
chosen by the caller (the server's `SessionKey`), never strings joined from client input.

A session closed to make room, or for being idle, says so on its next call (a note and `reset`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import anyio

from rlm_mcp.config import (
    DEFAULT_SESSION_GRACE_SECONDS,
    DEFAULT_SESSION_IDLE_SECONDS,
    DEFAULT_SESSION_WAIT_SECONDS,
    MIN_DEFAULT_SESSIONS,
)
from rlm_mcp.errors import SessionBusyError
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits, SandboxSession
from rlm_mcp.sandbox.types import SubCallHandler

__all__ = ["SessionPool"]

#: How many closed session keys remember why they were closed.
_REMEMBERED = 4096


class SessionPool:
    """At most `max_sessions` live workers; owners share them without evicting each other."""

    def __init__(
        self,
        *,
        limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen
        max_sessions: int = MIN_DEFAULT_SESSIONS,
        idle_seconds: float = DEFAULT_SESSION_IDLE_SECONDS,
        grace_seconds: float = DEFAULT_SESSION_GRACE_SECONDS,
        wait_seconds: float = DEFAULT_SESSION_WAIT_SECONDS,
        owner_max_sessions: int | None = None,
        owner_max_running: int | None = None,
    ) -> None:
        self.limits = limits
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.grace_seconds = grace_seconds
        self.wait_seconds = wait_seconds
        self.owner_max_sessions = owner_max_sessions or max_sessions
        self.owner_max_running = owner_max_running
        self._sessions: dict[Hashable, SandboxSession] = {}
        self._owners: dict[Hashable, Hashable] = {}
        self._leases: dict[Hashable, int] = {}
        self._running: dict[Hashable, anyio.Semaphore] = {}
        #: Sessions kept only while there is room (a finished rlm_complete run's REPL, for a
        #: follow-up): closed first, and without the grace period, when room is needed.
        self._spare: set[Hashable] = set()
        self._freed = anyio.Event()
        self._closed_why: OrderedDict[Hashable, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    def live_keys(self) -> list[Hashable]:
        """The keys of the live sessions."""
        return list(self._sessions)

    def owned_by(self, owner: Hashable) -> list[Hashable]:
        """The live session keys of `owner`."""
        return [k for k, o in self._owners.items() if o == owner]

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
    ) -> AsyncIterator[SandboxSession]:
        """The session for `key`, held for the block: the pool will not close it meanwhile.

        With `owner_max_running`, the block also holds one of the owner's run slots, so an
        owner's concurrent calls queue behind each other instead of taking every core.
        `run_slot=False` is for sessions held across model calls (an rlm_complete run and its
        children), which would otherwise hold a slot while waiting, or wait for their own parent.
        `spare=True`: once released, the session is the first to go when room is needed, grace
        period or not.
        """
        self._leases[key] = self._leases.get(key, 0) + 1
        try:
            session = await self._get(key, owner=owner, context=context, sub_calls=sub_calls)
            if spare:
                self._spare.add(key)
            if self.owner_max_running is None or not run_slot:
                yield session
            else:
                slots = self._running.setdefault(owner, anyio.Semaphore(self.owner_max_running))
                async with slots:
                    yield session
        finally:
            self._leases[key] -= 1
            if not self._leases[key]:
                del self._leases[key]
            self._wake()

    async def get(
        self,
        key: Hashable,
        *,
        owner: Hashable = None,
        context: ContextSpec | None = None,
        sub_calls: SubCallHandler | None = None,
    ) -> SandboxSession:
        """The session for `key` without holding it (it may be closed for room once idle)."""
        return await self._get(key, owner=owner, context=context, sub_calls=sub_calls)

    async def _get(
        self,
        key: Hashable,
        *,
        owner: Hashable,
        context: ContextSpec | None,
        sub_calls: SubCallHandler | None,
    ) -> SandboxSession:
        """The session for `key`, created (and started) or reused.

        `context` replaces the session's context when given; None keeps the one it has (a call
        without a handle still sees the text an earlier call loaded).
        """
        session = self._sessions.get(key)
        if session is not None:
            session.sub_calls = sub_calls if sub_calls is not None else session.sub_calls
            if context is not None and session.context != context:
                await session.set_context(context)
            session.last_used = time.monotonic()
            return session
        await self.reap_idle()
        await self._make_room(owner)
        if key in self._sessions:  # a concurrent caller of the same key made it meanwhile
            return await self._get(key, owner=owner, context=context, sub_calls=sub_calls)
        session = SandboxSession(context=context, limits=self.limits, sub_calls=sub_calls)
        why = self._closed_why.pop(key, None)
        if why is not None:
            session.carry_note(f"session restarted: {why}; its variables are gone", reset=True)
        self._sessions[key] = session
        self._owners[key] = owner
        try:
            await session.start()
        except BaseException:
            self._sessions.pop(key, None)
            self._owners.pop(key, None)
            self._wake()
            raise
        return session

    def _full_for(self, owner: Hashable) -> bool:
        return (
            len(self._sessions) >= self.max_sessions
            or len(self.owned_by(owner)) >= self.owner_max_sessions
        )

    def _evictable(self, owner: Hashable, now: float) -> list[Hashable]:
        """`owner`'s sessions that nobody holds and nobody has used for `grace_seconds`."""
        return [
            k
            for k in self.owned_by(owner)
            if not self._leases.get(k)
            and (k in self._spare or now - self._sessions[k].last_used >= self.grace_seconds)
        ]

    def _next_evictable_in(self, owner: Hashable, now: float) -> float:
        """Seconds until one of `owner`'s idle sessions passes its grace period (inf if none)."""
        waits = [
            0.0 if k in self._spare else self.grace_seconds - (now - self._sessions[k].last_used)
            for k in self.owned_by(owner)
            if not self._leases.get(k)
        ]
        return max(0.0, min(waits)) if waits else math.inf

    def _eviction_order(self, key: Hashable) -> tuple[bool, float]:
        """Spares first, then the least recently used."""
        return key not in self._spare, self._sessions[key].last_used

    async def _make_room(self, owner: Hashable) -> None:
        deadline = time.monotonic() + self.wait_seconds
        while self._full_for(owner):
            now = time.monotonic()
            idle = self._evictable(owner, now)
            if idle:
                oldest = min(idle, key=self._eviction_order)
                idle_for = (
                    "a finished run's REPL is kept only while there is room"
                    if oldest in self._spare
                    else f"it had been idle over {self.grace_seconds:.0f}s"
                )
                await self.close(
                    oldest,
                    why=f"it was closed to make room for another session of the same client "
                    f"({idle_for}; at most {self.max_sessions} live sessions: "
                    "RLM_MCP_MAX_SESSIONS)",
                )
                continue
            left = deadline - now
            if left <= 0:
                retry = self._next_evictable_in(owner, now)
                hint = f"{math.ceil(retry)}" if retry < math.inf else "a few"
                raise SessionBusyError(
                    f"Busy: all {len(self._sessions)} sandbox sessions available to this client "
                    f"are in use (RLM_MCP_MAX_SESSIONS={self.max_sessions}); retry in {hint} "
                    "s, or reuse one of your sessions by passing its `session` back."
                )
            with anyio.move_on_after(min(left, self._next_evictable_in(owner, now) + 0.01)):
                await self._wait_freed()

    async def _wait_freed(self) -> None:
        if self._freed.is_set():  # one event per round, shared by every waiter
            self._freed = anyio.Event()
        await self._freed.wait()

    def _wake(self) -> None:
        self._freed.set()

    async def close(self, key: Hashable, *, why: str | None = None) -> None:
        """Close `key`'s session; with `why`, its next call is told the reason."""
        session = self._sessions.pop(key, None)
        self._owners.pop(key, None)
        self._spare.discard(key)
        if session is not None:
            if why is not None:
                self._closed_why[key] = why
                while len(self._closed_why) > _REMEMBERED:
                    self._closed_why.popitem(last=False)
            self._wake()
            await session.close()

    async def reap_idle(self) -> int:
        """Close sessions unused for `idle_seconds` (never one in use); returns how many."""
        now = time.monotonic()
        stale = [
            k
            for k, s in self._sessions.items()
            if now - s.last_used >= self.idle_seconds and not self._leases.get(k)
        ]
        for key in stale:
            await self.close(
                key,
                why=f"it was idle for over {self.idle_seconds:.0f}s (RLM_MCP_SESSION_IDLE_SECONDS)",
            )
        return len(stale)

    async def aclose(self) -> None:
        for key in list(self._sessions):
            await self.close(key)
