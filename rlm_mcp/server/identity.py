"""Who is calling, and which sandbox session a `run_repl` call means.

Sessions belong to the caller; these rules decide what "the caller" is:

- **Tenant**: over HTTP with bearer tokens, the token's tenant (RLM_MCP_TOKENS_FILE maps tokens
  to tenants; RLM_MCP_TOKEN alone is tenant "default"). Without tokens (stdio, in-memory,
  loopback HTTP) there is one local user: tenant None. Contexts, names, sessions and runs are
  scoped to the tenant.
- **Legacy connections** (2025-11-25) have an identity: the transport's connection object. Their
  sessions are bound to it by a random id kept on the connection (never its `Mcp-Session-Id`
  text, never `id()`, which Python reuses) and closed when the connection ends.
- **2026-07-28 over HTTP is sessionless**: the first `run_repl` gets a server-minted handle
  (`sess_` + 128 random bits), checked on every later call and expiring after
  RLM_MCP_SESSION_IDLE_SECONDS unused. Client-chosen names are scoped to the bearer token's
  tenant; without a token a client-chosen name is refused (anyone could guess it).
- **stdio** (either era) is one process for one client: names work as they always did.

Pool keys are `SessionKey` tuples of typed parts, never strings joined from client input, so no
session name can spell another caller's key.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from rlm_mcp.errors import ArgumentError, SessionExpiredError

__all__ = ["Caller", "SessionKey", "SessionRegistry", "caller_of", "connection_of"]

logger = logging.getLogger(__name__)

LEGACY_PROTOCOLS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
HANDLE_PREFIX = "sess_"
_HANDLE = re.compile(r"sess_[0-9a-f]{32}")
MAX_SESSION_NAME = 128
#: Where a legacy connection keeps our id for it (in the SDK's per-connection `state` dict).
_CONN_KEY = "rlm_mcp.connection_id"


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A pool key: what kind of scope, whose, which scope, which session in it."""

    kind: Literal["local", "connection", "name", "handle", "run"]
    tenant: str | None
    scope: str
    name: str


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity of one tool call."""

    tenant: str | None
    legacy: bool
    http: bool
    connection: str | None = None  # our random id of a legacy connection

    @property
    def owner(self) -> tuple[str, str | None]:
        """Whose share of the session pool this call uses."""
        return ("tenant", self.tenant)


def connection_of(ctx: Any) -> Any:
    """The SDK's per-connection object behind `ctx`, or None.

    mcp 2.3 exposes it only as `ServerSession._connection`; tests/security/test_tenants.py fails
    if a new SDK moves it, so that sessions can never silently stop being per-connection.
    """
    session = getattr(ctx, "session", None)
    return getattr(session, "_connection", None)


def _bearer(headers: Any) -> str:
    raw = str(headers.get("authorization", "")) if headers else ""
    scheme, _, token = raw.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def caller_of(
    ctx: Any,
    tokens: dict[str, str],
    *,
    on_connection_end: Callable[[str], Awaitable[None]] | None = None,
    stateless: bool = False,
) -> Caller:
    """The caller of the request `ctx` (tokens: bearer token -> tenant). `stateless`: a legacy
    connection lasts one request there, so its caller is treated like a sessionless one."""
    headers = getattr(ctx, "headers", None)
    http = headers is not None
    tenant: str | None = None
    if http and tokens:
        presented = _bearer(headers)
        for token, name in tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                tenant = name
                break
        else:  # the HTTP guard refuses these first; never run a call as nobody
            raise ArgumentError(
                "Missing or unknown bearer token: send Authorization: Bearer TOKEN."
            )
    legacy = getattr(ctx, "protocol_version", None) in LEGACY_PROTOCOLS
    conn_id = None
    if legacy and not (stateless and http):
        conn = connection_of(ctx)
        if conn is not None:
            conn_id = conn.state.get(_CONN_KEY)
            if conn_id is None:
                conn_id = secrets.token_hex(16)
                conn.state[_CONN_KEY] = conn_id
                if on_connection_end is not None:
                    conn.exit_stack.push_async_callback(on_connection_end, conn_id)
    return Caller(tenant=tenant, legacy=legacy, http=http, connection=conn_id)


def _check_name(name: str) -> str:
    if not name.strip():
        raise ArgumentError(
            "session is empty: leave it out to use the default session, or pass back the "
            "`session` value a previous result returned."
        )
    if len(name) > MAX_SESSION_NAME or not name.isprintable():
        raise ArgumentError(
            f"session must be printable and at most {MAX_SESSION_NAME} characters: pass back the "
            "`session` value a previous result returned."
        )
    return name


class SessionRegistry:
    """Server-minted session handles for sessionless HTTP callers, with their expiry."""

    def __init__(
        self,
        idle_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: bool = False,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        #: Replicas behind a load balancer: a handle minted by another replica is honoured, and
        #: expiry is the cluster session's own (it says so on the next call).
        self.shared = shared
        self._minted: dict[tuple[str | None, str], float] = {}  # (tenant, handle) -> last use

    def mint(self, tenant: str | None) -> str:
        self._prune()
        handle = HANDLE_PREFIX + secrets.token_hex(16)
        self._minted[(tenant, handle)] = self._clock()
        return handle

    def touch(self, tenant: str | None, handle: str) -> None:
        """Check `handle` belongs to `tenant` and has not expired; mark it used."""
        if self.shared:
            return
        key = (tenant, handle)
        last = self._minted.get(key)
        now = self._clock()
        if last is None or now - last > self.idle_seconds:
            self._minted.pop(key, None)
            raise SessionExpiredError(
                f"Session {handle[:48]!r} is unknown or expired (sessions expire after "
                f"{self.idle_seconds:.0f}s unused, and belong to the client they were made "
                "for): call run_repl without `session` to start a new one."
            )
        self._minted[key] = now

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._minted.items() if now - t > self.idle_seconds]:
            del self._minted[key]

    def key_for(self, caller: Caller, session: str | None) -> tuple[SessionKey, str]:
        """(pool key, the `session` value to return) for a `run_repl` call by `caller`."""
        if session is not None:
            _check_name(session)
        if caller.legacy and caller.connection is not None:
            name = session or "default"
            return SessionKey("connection", caller.tenant, caller.connection, name), name
        if not caller.http:
            name = session or "default"
            return SessionKey("local", caller.tenant, "", name), name
        if session is None:
            handle = self.mint(caller.tenant)
            return SessionKey("handle", caller.tenant, "", handle), handle
        if session.startswith(HANDLE_PREFIX):
            if not _HANDLE.fullmatch(session):
                raise SessionExpiredError(
                    f"Session {session[:48]!r} is not a handle this server made: call run_repl "
                    "without `session` to start a new one."
                )
            self.touch(caller.tenant, session)
            return SessionKey("handle", caller.tenant, "", session), session
        if caller.tenant is None:
            raise ArgumentError(
                "A client-chosen session name over HTTP needs a bearer token (anyone could guess "
                "the name): call run_repl without `session` and pass back the returned handle, or "
                "set RLM_MCP_TOKEN on the server."
            )
        return SessionKey("name", caller.tenant, "", session), session
