"""Transports: stdio for desktop clients, streamable HTTP (with DNS-rebinding protection always on
and an optional bearer token) for shared servers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlm_mcp.config import Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_token(app: Any, token: str) -> Any:
    """Wrap an ASGI app so every HTTP request must carry `Authorization: Bearer <token>`."""
    import hmac

    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, expected):
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


def http_app(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """The streamable-HTTP ASGI app: DNS-rebinding protection always on, token when set."""
    from mcp.server.transport_security import TransportSecuritySettings

    loopback = host in LOOPBACK
    if not loopback and not settings.token:
        raise ValueError(f"binding to {host} needs RLM_MCP_TOKEN set; or bind 127.0.0.1")
    hosts = [f"{host}:{port}", host, f"127.0.0.1:{port}", f"localhost:{port}"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )
    from rlm_mcp.server import build_server

    app = build_server(settings, environ=environ).streamable_http_app(transport_security=security)
    return require_token(app, settings.token) if settings.token else app


def serve(
    settings: Settings,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is stopped (HTTP)."""
    if transport == "stdio":
        from rlm_mcp.server import build_server

        build_server(settings, environ=environ).run()
        return
    import uvicorn

    try:
        app = http_app(settings, host=host, port=port, environ=environ)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    uvicorn.run(app, host=host, port=port, log_level="warning")
