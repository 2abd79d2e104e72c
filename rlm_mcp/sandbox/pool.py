"""A capped pool of sessions keyed by the caller's session id; idle ones are reaped.

Callers hold a session through `lease`, so the pool never closes one that is running code: to
make room it closes the least recently used *idle* session, and when every live session is busy
a new caller waits for one to finish (each call ends within its timeout) instead of failing. A
session that was closed to make room, or for being idle, says so on its next call (a note and
`reset`), so a caller learns why its variables are gone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from rlm_mcp.config import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_SECONDS
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits, SandboxSession
from rlm_mcp.sandbox.types import SubCallHandler

__all__ = ["SessionPool"]

#: How many closed session keys remember why they were closed.
_REMEMBERED = 4096


class SessionPool:
    """At most `max_sessions` live workers; the least recently used idle one makes room."""

    def __init__(
        self,
        *,
        limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        idle_seconds: float = DEFAULT_SESSION_IDLE_SECONDS,
    ) -> None:
        self.limits = limits
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, SandboxSession] = {}
        self._leases: dict[str, int] = {}
        self._freed = anyio.Event()
        self._closed_why: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    @asynccontextmanager
    async def lease(
        self,
        key: str,
        *,
        context: ContextSpec | None = None,
        sub_calls: SubCallHandler | None = None,
    ) -> AsyncIterator[SandboxSession]:
        """The session for `key`, held for the block: the pool will not close it meanwhile."""
        self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield await self.get(key, context=context, sub_calls=sub_calls)
        finally:
            self._leases[key] -= 1
            if not self._leases[key]:
                del self._leases[key]
                self._freed.set()

    async def get(
        self,
        key: str,
        *,
        context: ContextSpec | None = None,
        sub_calls: SubCallHandler | None = None,
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
        while len(self._sessions) >= self.max_sessions:
            idle = [k for k in self._sessions if not self._leases.get(k)]
            if idle:
                oldest = min(idle, key=lambda k: self._sessions[k].last_used)
                await self.close(
                    oldest,
                    why=f"it was closed to make room for another (at most {self.max_sessions} "
                    "live sessions: RLM_MCP_MAX_SESSIONS)",
                )
                continue
            if self._freed.is_set():  # one event per round, shared by every waiter
                self._freed = anyio.Event()
            await self._freed.wait()  # every live session is running code; one ends soon
            if key in self._sessions:  # a concurrent caller of the same key made it meanwhile
                return await self.get(key, context=context, sub_calls=sub_calls)
        session = SandboxSession(context=context, limits=self.limits, sub_calls=sub_calls)
        why = self._closed_why.pop(key, None)
        if why is not None:
            session.carry_note(f"session restarted: {why}; its variables are gone", reset=True)
        self._sessions[key] = session
        try:
            await session.start()
        except BaseException:
            self._sessions.pop(key, None)
            raise
        return session

    async def close(self, key: str, *, why: str | None = None) -> None:
        """Close `key`'s session; with `why`, its next call is told the reason."""
        session = self._sessions.pop(key, None)
        if session is not None:
            if why is not None:
                self._closed_why[key] = why
                while len(self._closed_why) > _REMEMBERED:
                    self._closed_why.popitem(last=False)
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
