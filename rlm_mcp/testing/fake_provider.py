"""A local HTTP server speaking OpenAI Chat Completions and Anthropic Messages wire formats.

Real SDKs point at it (`base_url=fake.openai_base_url` / `fake.anthropic_base_url`) so tests and
benchmarks exercise the same code path as production, on 127.0.0.1 only. It can script replies
(a list, or a function of the request JSON), add latency, force status codes with headers,
return malformed bodies or `null` content, and it records every request it received.

    with FakeProvider(["hello"], latency=0.1) as fake:
        lm = resolve_lm("openai", model_name="m", api_key="k", base_url=fake.openai_base_url)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeProvider", "ForcedResponse", "RecordedRequest"]

Reply = Sequence[str] | Callable[[dict[str, Any]], str]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ForcedResponse:
    """One canned answer that overrides the scripted reply: a status, headers and a raw body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class FakeProvider:
    """Start with `with FakeProvider(...) as fake:` or `.start()` / `.close()`."""

    def __init__(
        self,
        replies: Reply | None = None,
        *,
        latency: float = 0.0,
        usage: Mapping[str, int] | None = None,
        port: int = 0,
    ) -> None:
        self._port = port
        self._fn = replies if callable(replies) else None
        self._replies = deque([] if replies is None or callable(replies) else list(replies))
        self.default_reply = "ok" if replies is None else None
        self.latency = latency
        self.usage = dict(usage) if usage else {"input_tokens": 10, "output_tokens": 5}
        self.requests: list[RecordedRequest] = []
        self._forced: deque[ForcedResponse] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting -------------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """The next `times` requests answer with `status` (an API-style JSON error by default)."""
        raw = (
            body
            if body is not None
            else json.dumps(
                {"error": {"type": "fake_error", "message": f"forced {status}"}}
            ).encode()
        )
        with self._lock:
            for _ in range(times):
                self._forced.append(ForcedResponse(status, dict(headers or {}), raw, delay))

    def malformed_next(self, times: int = 1) -> None:
        """The next `times` requests answer 200 with a body that is not JSON."""
        self.fail_next(
            200, headers={"content-type": "application/json"}, body=b"{not json", times=times
        )

    def respond_next(self, status: int, payload: Any, *, times: int = 1) -> None:
        """The next `times` requests answer with exactly this JSON payload."""
        self.fail_next(
            status,
            headers={"content-type": "application/json"},
            body=json.dumps(payload).encode(),
            times=times,
        )

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "FakeProvider not started"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> FakeProvider:
        handler = _make_handler(self)
        server = _Server(("127.0.0.1", self._port), handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- answering -------------------------------------------------------------------------
    def _next_text(self, request: dict[str, Any]) -> str | None:
        if self._fn is not None:
            return self._fn(request)
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        return self.default_reply

    def _answer(self, path: str, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            forced = self._forced.popleft() if self._forced else None
        if forced is not None:
            if forced.delay:
                time.sleep(forced.delay)
            return forced.status, dict(forced.headers), forced.body
        if self.latency:
            time.sleep(self.latency)
        text = self._next_text(request)
        if text is None:
            err = {"error": {"type": "fake_error", "message": "FakeProvider ran out of replies"}}
            return 500, {}, json.dumps(err).encode()
        model = str(request.get("model", "fake"))
        u = self.usage
        if path.split("?")[0].endswith("/messages") and request.get("stream"):
            return 200, {"content-type": "text/event-stream"}, _message_events(model, text, u)
        if path.split("?")[0].endswith("/messages"):
            body: dict[str, Any] = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": u.get("input_tokens", 0),
                    "output_tokens": u.get("output_tokens", 0),
                    "cache_read_input_tokens": u.get("cached_tokens", 0),
                    "cache_creation_input_tokens": 0,
                },
            }
        else:
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": u.get("input_tokens", 0),
                    "completion_tokens": u.get("output_tokens", 0),
                    "total_tokens": u.get("input_tokens", 0) + u.get("output_tokens", 0),
                    "prompt_tokens_details": {"cached_tokens": u.get("cached_tokens", 0)},
                },
            }
        return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def _message_events(model: str, text: str, usage: Mapping[str, int]) -> bytes:
    """A Messages API answer as the server-sent events a streaming client (Claude Code) reads."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": usage.get("input_tokens", 0),
                        "output_tokens": 1,
                        "cache_read_input_tokens": usage.get("cached_tokens", 0),
                        "cache_creation_input_tokens": 0,
                    },
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage.get("output_tokens", 0)},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops bursts of connects, which then stall ~1 s
    daemon_threads = True
    block_on_close = False


def _make_handler(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: +40 ms a call

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                payload = json.loads(raw or b"{}")
            except ValueError:
                payload = {"_raw": raw.decode("utf-8", "replace")}
            with fake._lock:
                fake.requests.append(
                    RecordedRequest(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, payload
                    )
                )
            status, headers, body = fake._answer(self.path, payload)
            try:
                self.send_response(status)
                headers.setdefault("content-type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def main(argv: list[str] | None = None) -> int:
    """`python -m rlm_mcp.testing.fake_provider [--latency S] [--port N] [--forever]`.

    Prints the base URL on the first stdout line. By default it serves until stdin closes, so a
    parent that dies takes it along; `--forever` serves until Ctrl-C or SIGTERM instead, for a
    terminal where it runs in the background (`&`, nohup), whose stdin is already closed.
    Benchmarks run it in a separate process so the fake server's threads do not share a GIL with
    the client being measured.
    """
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.testing.fake_provider")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--reply", default="ok", help="the text of every answer")
    parser.add_argument("--port", type=int, default=0, help="127.0.0.1 port (default: a free one)")
    parser.add_argument(
        "--forever", action="store_true", help="serve until Ctrl-C/SIGTERM, not until stdin closes"
    )
    args = parser.parse_args(argv)
    fake = FakeProvider([], latency=args.latency, port=args.port)
    fake.default_reply = args.reply
    try:
        fake.start()
    except OSError as exc:
        msg = f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}; pick another --port"
        print(msg, file=sys.stderr)
        return 2
    print(fake.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args.forever:
            while not stop.wait(3600):
                pass
        else:
            sys.stdin.read()  # serve until stdin closes (the parent exits or closes the pipe)
    except KeyboardInterrupt:
        pass
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
