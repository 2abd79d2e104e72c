"""Just enough headless Chromium to check the viewer page: the DevTools protocol over a pipe.

Used by the browser test and the viewer benchmark. It needs nothing but the standard library and
a `chromium` binary (Debian's package): no Playwright, no browser download, no websocket client.
`--remote-debugging-pipe` makes Chromium read protocol messages from fd 3 and write them to fd 4,
each a JSON object ended by a NUL byte; a reader thread turns those into a queue so every wait
here is bounded by a timeout.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rlm_mcp.errors import BrowserError

__all__ = ["BrowserError", "HeadlessChromium", "find_chromium"]

#: Flags headless Chromium needs as root in a container, and to stay off the network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """The path of a Chromium binary, or None when there is none on this machine."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_fd(fd: int) -> int:
    """A close-on-exec copy of `fd` numbered 10 or more, so fds 3 and 4 can be set freely."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class HeadlessChromium:
    """One headless browser with one page; `with HeadlessChromium() as b: b.open(url)`."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        timeout: float = 30.0,
        width: int = 1280,
        height: int = 1000,
    ) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("No chromium binary found: install it (apt-get install chromium).")
        self.executable = exe
        self.timeout = timeout
        self.width = width
        self.height = height
        self.console_errors: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        self._session: str | None = None
        self._events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="rlm-chromium-")

    # -- process and protocol ------------------------------------------------------------------

    def __enter__(self) -> HeadlessChromium:
        to_r, to_w = (_high_fd(fd) for fd in os.pipe())
        from_r, from_w = (_high_fd(fd) for fd in os.pipe())

        # A tiny Python trampoline moves the pipe ends to fds 3 and 4 and execs Chromium: safer
        # than a preexec_fn, which runs Python between fork and exec of a threaded process.
        args = [
            sys.executable,
            "-c",
            _TRAMPOLINE,
            str(to_r),
            str(from_w),
            self.executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(to_r, from_w),
            )
        except OSError as exc:
            raise BrowserError(f"Cannot start {self.executable}: {exc}") from None
        finally:
            os.close(to_r)
            os.close(from_w)
        self._write_fd = to_w
        self._reader = threading.Thread(target=self._read_loop, args=(from_r,), daemon=True)
        self._reader.start()
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
            self._session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": self.width,
                    "height": self.height,
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ask the browser to quit, kill it if it does not, and remove its profile."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                self._send("Browser.close", {}, None)
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)
            os.close(self._write_fd)
        self._profile.cleanup()

    def _read_loop(self, fd: int) -> None:
        buf = b""
        try:
            while chunk := os.read(fd, 1 << 16):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    self._queue.put(json.loads(raw))
        finally:
            os.close(fd)
            self._queue.put(None)  # the browser is gone

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._write_fd, json.dumps(msg).encode() + b"\0")
        return self._next_id

    def _note(self, msg: dict[str, Any]) -> None:
        """Keep events; remember console errors, uncaught exceptions and error log entries."""
        self._events.append(msg)
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.console_errors.append(str(d.get("exception", {}).get("description") or d))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.console_errors.append(" ".join(str(a.get("value", a)) for a in args))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(str(params["entry"].get("text")))

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            msg = self._queue.get(timeout=max(0.0, remaining))
        except queue.Empty:
            raise BrowserError(f"Chromium did not answer {what} within {self.timeout}s.") from None
        if msg is None:
            raise BrowserError(f"Chromium exited while waiting for {what}.")
        return msg

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command (to the page once attached) and return its result."""
        if self._proc is None:
            raise BrowserError("The browser is not running: use `with HeadlessChromium() as b`.")
        session = None if method.startswith(("Target.", "Browser.")) else self._session
        want = self._send(method, params or {}, session)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._next(deadline, method)
            if msg.get("id") == want:
                if "error" in msg:
                    raise BrowserError(f"{method} failed: {msg['error'].get('message')}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self._note(msg)

    def wait_for_event(self, method: str) -> dict[str, Any]:
        """The params of the next `method` event (one already received counts)."""
        for i, msg in enumerate(self._events):
            if msg.get("method") == method:
                del self._events[i]
                return dict(msg.get("params", {}))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._next(deadline, method)
            if "method" in msg:
                self._note(msg)
                if msg["method"] == method:
                    self._events.remove(msg)
                    return dict(msg.get("params", {}))

    # -- page ----------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (the viewer renders before it)."""
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable results)."""
        res = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression!r} raised: {res['exceptionDetails'].get('text')}")
        return res.get("result", {}).get("value")

    def drain_events(self) -> None:
        """Collect events that arrived since the last command (late console errors)."""
        self.evaluate("0")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the visible part of the page."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
