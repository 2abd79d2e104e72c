"""A capped pool of sessions keyed by the caller's session id; idle ones are reaped."""

from __future__ import annotations

import time

from rlm_mcp.config import DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_SECONDS
from rlm_mcp.sandbox.session import ContextSpec, SandboxLimits, SandboxSession
from rlm_mcp.sandbox.types import SubCallHandler

__all__ = ["SessionPool"]


class SessionPool:
    """At most `max_sessions` live workers; the least recently used is closed to make room."""

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

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return key in self._sessions

    async def get(
        self,
        key: str,
        *,
        context: ContextSpec | None = None,
        sub_calls: SubCallHandler | None = None,
    ) -> SandboxSession:
        """The session for `key`, created (and started) or reused; its context made `context`."""
        session = self._sessions.get(key)
        if session is not None:
            session.sub_calls = sub_calls if sub_calls is not None else session.sub_calls
            if session.context != context:
                await session.set_context(context)
            session.last_used = time.monotonic()
            return session
        await self.reap_idle()
        while len(self._sessions) >= self.max_sessions:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
            await self.close(oldest)
        session = SandboxSession(context=context, limits=self.limits, sub_calls=sub_calls)
        self._sessions[key] = session
        try:
            await session.start()
        except BaseException:
            self._sessions.pop(key, None)
            raise
        return session

    async def close(self, key: str) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            await session.close()

    async def reap_idle(self) -> int:
        """Close sessions unused for `idle_seconds`; returns how many."""
        now = time.monotonic()
        stale = [k for k, s in self._sessions.items() if now - s.last_used >= self.idle_seconds]
        for key in stale:
            await self.close(key)
        return len(stale)

    async def aclose(self) -> None:
        for key in list(self._sessions):
            await self.close(key)
