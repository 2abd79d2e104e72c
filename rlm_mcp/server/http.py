"""Transports: stdio for desktop clients, streamable HTTP (with DNS-rebinding protection always on
and bearer tokens) for shared servers.

Tokens: RLM_MCP_TOKEN (one token, tenant "default") and/or RLM_MCP_TOKENS_FILE (`TOKEN TENANT`
lines). Every HTTP request must carry one of them when any is set; binding off loopback without
one is refused before anything listens.
"""

from __future__ import annotations

import hmac
import socket
import sys
from typing import TYPE_CHECKING, Any

from rlm_mcp.config import Settings
from rlm_mcp.errors import ConfigError

if TYPE_CHECKING:
    from rlm_mcp.runtime import Runtime

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_token(app: Any, tokens: list[str]) -> Any:
    """Wrap an ASGI app so every HTTP request must carry `Authorization: Bearer <one of tokens>`."""
    expected = [f"Bearer {t}".encode() for t in tokens]

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            # compare with every token, always, so timing says nothing about which one is close
            if not sum(hmac.compare_digest(got, e) for e in expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"missing or wrong bearer token (RLM_MCP_TOKEN)",
                    }
                )
                return
        await app(scope, receive, send)

    return guarded


def _runtime(settings_or_runtime: Settings | Runtime, environ: Any = None) -> Runtime:
    from rlm_mcp.runtime import Runtime

    if isinstance(settings_or_runtime, Runtime):
        return settings_or_runtime
    return Runtime(settings_or_runtime, environ=environ)


def http_app(
    settings: Settings | Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    environ: Any = None,
) -> Any:
    """The streamable-HTTP ASGI app: DNS-rebinding protection always on, tokens when set."""
    from mcp.server.transport_security import TransportSecuritySettings

    from rlm_mcp.server import build_server

    runtime = _runtime(settings, environ)
    tokens = runtime.tokens()
    if host not in LOOPBACK and not tokens:
        raise ConfigError(
            f"Binding to {host} needs a bearer token: set RLM_MCP_TOKEN (or RLM_MCP_TOKENS_FILE) "
            "in the server's environment, or bind 127.0.0.1."
        )
    hosts = [f"{host}:{port}", host, f"127.0.0.1:{port}", f"localhost:{port}"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )
    app = build_server(runtime=runtime).streamable_http_app(
        transport_security=security, stateless_http=runtime.settings.stateless
    )
    return require_token(app, list(tokens)) if tokens else app


def check_port(host: str, port: int) -> None:
    """Refuse a port something else holds, before the server prints that it serves there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another port "
                "with --port, or stop the program that uses it."
            ) from None


def _quiet_deprecations(runtime: Runtime) -> None:
    """The SDK warns that sampling is deprecated (SEP-2577) whenever it samples; a user who did
    not choose sampling should not see that on their terminal."""
    import warnings

    from mcp import MCPDeprecationWarning

    chosen = (runtime.settings.backend, runtime.settings.sub_backend or "")
    if not any(name.strip().lower().startswith("sampling") for name in chosen):
        warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


def serve(
    settings: Settings | Runtime,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    environ: Any = None,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is stopped (HTTP)."""
    runtime = _runtime(settings, environ)
    runtime.check()
    _quiet_deprecations(runtime)
    if transport == "stdio":
        from rlm_mcp.server import build_server

        build_server(runtime=runtime).run()
        return
    import uvicorn

    app = http_app(runtime, host=host, port=port)
    check_port(host, port)
    if runtime.settings.ray_address:  # connect and start a standby session before serving
        runtime.repl_pool().warm()
    shown = f"[{host}]" if ":" in host else host
    print(f"rlm-mcp: serving MCP (streamable HTTP) at http://{shown}:{port}/mcp", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
