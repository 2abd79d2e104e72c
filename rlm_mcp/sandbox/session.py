"""Parent side of one REPL session: a limited worker process spoken to in frames.

The worker is the security boundary; this side enforces what code in it cannot be trusted to do:
a wall-clock deadline (SIGKILL of the worker's process group), a byte budget on every frame, and
a restart after any death, overflow or unstoppable cancellation, reported as `reset=True`.

State after an interrupt (soft timeout or cancellation): the code stops where it was, its
`finally:` blocks run (a second interrupt is not delivered while they do; the hard deadline still
applies), and the session keeps every variable as the code and those blocks left it. Nothing is
rolled back: a loop filling `counts` leaves the counts made so far. Sandboxed code cannot define
classes and no allowed module hands out a context manager, so `finally:` is the only cleanup that
can exist. An interrupt that arrives while the worker waits for an `llm_query` answer is raised
once the answer is read, so the frame stream never falls out of step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.abc import Process

from rlm_mcp.config import (
    DEFAULT_EXEC_TIMEOUT,
    DEFAULT_MAX_FINAL_CHARS,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_MAX_PROMPT_CHARS,
    DEFAULT_MAX_SUB_CALLS,
    DEFAULT_WORKER_MEMORY_MB,
)
from rlm_mcp.errors import SandboxError
from rlm_mcp.sandbox.protocol import FrameTooLargeError, decode, encode, header_length
from rlm_mcp.sandbox.types import (
    ErrorInfo,
    ExecResult,
    FinalAnswer,
    SubCallHandler,
    VariableInfo,
)

__all__ = ["ContextSpec", "SandboxLimits", "SandboxSession"]

logger = logging.getLogger(__name__)

_RESET_NOTE = "the sandbox worker was restarted: every variable of this session is gone"
_WARNED: set[str] = set()


def _warn_unconfined(skipped: dict[str, str]) -> None:
    """Say once per process which confinement layer this machine does not allow, and why."""
    for layer, why in skipped.items():
        if layer not in _WARNED:
            _WARNED.add(layer)
            logger.warning(
                "sandbox confinement layer %r is unavailable here (%s); the others still apply",
                layer,
                why,
            )


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-session limits. `hard_timeout_grace` is also how long a cancelled call may take to stop
    softly (keeping variables) before the worker is killed."""

    timeout: float = DEFAULT_EXEC_TIMEOUT
    hard_timeout_grace: float = 5.0
    memory_mb: int = DEFAULT_WORKER_MEMORY_MB  # on top of what the context needs
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    max_open_files: int = 32
    max_sub_calls: int = DEFAULT_MAX_SUB_CALLS  # llm_query prompts per execute
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS  # characters of one llm_query prompt
    max_final_chars: int = DEFAULT_MAX_FINAL_CHARS  # a longer final answer is cut (and flagged)
    #: Confine the worker (no network, unprivileged uid, no_new_privs, seccomp; see confine.py).
    confine: bool = True


@dataclass(frozen=True, slots=True)
class ContextSpec:
    path: Path | None = None
    text: str | None = None
    documents: Sequence[tuple[str, int, int]] = ()
    #: A stored context by handle, for a session on another machine (`RayPool`), which reads
    #: it from the shared store itself; a local session needs `path` or `text`.
    handle: str | None = None

    def frame(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "text": self.text,
            "documents": [list(d) for d in self.documents],
        }


class _WorkerDied(Exception):
    pass


class _Exchange:
    """Where one execute's conversation stands, so a cancellation knows what the worker awaits."""

    def __init__(self, sub_call_deadline: float, handler: SubCallHandler | None) -> None:
        self.sub_call_deadline = sub_call_deadline
        self.handler = handler  # this execute's llm_query handler (callers may differ per call)
        self.awaiting_reply = False  # the worker is blocked on an llm_reply frame
        self.sub_calls = 0


#: What happened to the last cancelled execute: "interrupted" (stopped softly, variables kept)
#: or "killed" (the worker did not stop within the grace period and was restarted).
CancelOutcome = Literal["interrupted", "killed"]


class _Worker:
    """One child process, its buffered frame reader, and the channel that passes it files."""

    def __init__(self, process: Process, tmpdir: str, channel: socket.socket) -> None:
        self.process = process
        self.tmpdir = tmpdir
        self.channel = channel
        self.buffer = bytearray()

    def context_frame(self, spec: ContextSpec) -> dict[str, Any]:
        """The frame that sets `spec`; a file goes as an open descriptor (SCM_RIGHTS), opened
        here, because a confined worker cannot open the store's files by name."""
        frame = spec.frame()
        if spec.path is None:
            return frame
        try:
            fd = os.open(spec.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SandboxError(
                f"the sandbox could not load the context: cannot open {str(spec.path)!r} "
                f"({exc.strerror or exc})"
            ) from None
        try:
            socket.send_fds(self.channel, [b"f"], [fd])
        finally:
            os.close(fd)
        return {**frame, "path": None, "fd": True}

    def growing_frame(self, spec: ContextSpec, fd: int, ready: int) -> dict[str, Any]:
        """The frame that sets `spec` from a file still being written (`fd`), with the pipe
        its writer reports progress on (`ready`): see loader.Growing."""
        socket.send_fds(self.channel, [b"f"], [fd, ready])
        return {**spec.frame(), "path": None, "fd": True, "growing": True}

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(encode(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise _WorkerDied(str(exc)) from exc

    async def _fill(self, n: int) -> None:
        assert self.process.stdout is not None
        while len(self.buffer) < n:
            try:
                chunk = await self.process.stdout.receive(max(65536, n - len(self.buffer)))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _WorkerDied("worker closed its pipe") from None
            self.buffer += chunk

    async def receive(self) -> dict[str, Any]:
        await self._fill(4)
        length = header_length(bytes(self.buffer[:4]))  # raises FrameTooLargeError
        await self._fill(4 + length)
        body = bytes(self.buffer[4 : 4 + length])
        del self.buffer[: 4 + length]
        return decode(body)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def aclose(self) -> None:
        self.kill()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(5):
                await self.process.wait()
            await self.process.aclose()
        self.channel.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _worker_env() -> dict[str, str]:
    """Only what Python needs: no keys, no HOME, no PATH secrets."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}


class SandboxSession:
    """One persistent REPL: variables survive between `execute` calls until reset or death."""

    def __init__(
        self,
        *,
        context: ContextSpec | None = None,
        limits: SandboxLimits = SandboxLimits(),
        sub_calls: SubCallHandler | None = None,
    ) -> None:
        self.context = context
        self.limits = limits
        self.sub_calls = sub_calls
        self._worker: _Worker | None = None
        self._lock = anyio.Lock()
        self._closed = False
        self.last_used = time.monotonic()
        #: How the last cancelled `execute` ended; the next result also says it in its notes.
        self.last_cancellation: CancelOutcome | None = None
        self._carry: tuple[str, bool] | None = None  # (note, reset) for the next result

    @property
    def is_alive(self) -> bool:
        return self._worker is not None and self._worker.process.returncode is None

    async def __aenter__(self) -> SandboxSession:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the worker if it is not running (idempotent)."""
        if self._closed:
            raise SandboxError("this sandbox session is closed; create a new one")
        if self.is_alive:
            return
        await self._spawn()

    async def _spawn(self) -> None:
        tmpdir = tempfile.mkdtemp(prefix="rlm-sbx-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "rlm_mcp.sandbox.worker",
                    "--fd-channel",
                    str(theirs.fileno()),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=tmpdir,
                env=_worker_env(),
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = _Worker(process, tmpdir, ours)
        ctx = self.context or ContextSpec()
        try:
            with anyio.fail_after(60 + self.limits.hard_timeout_grace):
                await worker.send(
                    {
                        "op": "init",
                        **worker.context_frame(ctx),
                        "confine": self.limits.confine,
                        "max_output_chars": self.limits.max_output_chars,
                        "memory_mb": self.limits.memory_mb,
                        "max_open_files": self.limits.max_open_files,
                        "hard_timeout_grace": self.limits.hard_timeout_grace,
                        "sub_calls": self.sub_calls is not None,
                        "tools": _tool_docs(self.sub_calls),
                        "max_sub_calls": self.limits.max_sub_calls,
                        "max_prompt_chars": self.limits.max_prompt_chars,
                        "max_final_chars": self.limits.max_final_chars,
                    }
                )
                ready = await worker.receive()
        except BaseException:
            await worker.aclose()
            raise
        if ready.get("error"):
            await worker.aclose()
            raise SandboxError(f"the sandbox could not load the context: {ready['error']}")
        _warn_unconfined(ready.get("unconfined") or {})
        self._worker = worker

    async def _restart(self) -> None:
        if self._worker is not None:
            await self._worker.aclose()
            self._worker = None
        if not self._closed:
            with anyio.CancelScope(shield=True):
                await self._spawn()

    async def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        sub_calls: SubCallHandler | None = None,
    ) -> ExecResult:
        """Run `code` in the session; the model's failures come back as data, never raise.

        `sub_calls` answers this execute's llm_query calls (default: the session's handler), so
        concurrent callers sharing a session each get their own sub-calls and usage without
        holding a lock of their own around the call.

        Cancelling the caller interrupts the code softly (the same path as the soft timeout:
        `finally:` blocks run, variables are kept); only if the worker does not stop within
        `hard_timeout_grace` is it killed and restarted. `last_cancellation` and the next result's
        notes say which.
        """
        async with self._lock:
            await self.start()
            assert self._worker is not None
            worker = self._worker
            soft = self.limits.timeout if timeout is None else timeout
            t0 = time.perf_counter()
            # A sub-call still running at the soft limit is cut off a little after it, once the
            # worker's own timer has fired (it then reports a timeout, keeping its variables),
            # and well before the hard kill.
            exchange = _Exchange(
                time.monotonic() + soft + self.limits.hard_timeout_grace / 2,
                sub_calls if sub_calls is not None else self.sub_calls,
            )
            self.last_used = time.monotonic()
            reply: dict[str, Any] | None = None
            status, note = "crashed", _RESET_NOTE
            try:
                with anyio.move_on_after(soft + self.limits.hard_timeout_grace):
                    await worker.send({"op": "exec", "code": code, "timeout": soft})
                    reply = await self._serve(worker, exchange)
                if reply is None:
                    status = "timeout"
                    note = f"code ran past {soft + self.limits.hard_timeout_grace:.1f}s; " + note
            except _WorkerDied:
                note = "the sandbox worker died (memory limit or signal); " + _RESET_NOTE
            except FrameTooLargeError:
                note = "the sandbox worker sent an oversized reply; " + _RESET_NOTE
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._after_cancel(worker, exchange)
                raise
            except BaseException:
                worker.kill()
                with anyio.CancelScope(shield=True):
                    await self._restart()
                raise
            finally:
                self.last_used = time.monotonic()
            duration = time.perf_counter() - t0
            if reply is not None:
                return self._with_carry(_to_result(reply, duration, exchange.sub_calls))
            await self._restart()
            return self._with_carry(
                ExecResult(
                    status=status,  # type: ignore[arg-type]
                    error=ErrorInfo(
                        type="TimeoutError" if status == "timeout" else "WorkerCrash",
                        message=note,
                    ),
                    duration_s=duration,
                    reset=True,
                    sub_calls=exchange.sub_calls,
                    notes=(note,),
                )
            )

    def carry_note(self, note: str, *, reset: bool = False) -> None:
        """Tell the next `execute` result something its caller could not be told yet."""
        self._carry = (note, reset)

    def _with_carry(self, result: ExecResult) -> ExecResult:
        """Prefix what the caller could not be told (a cancelled previous call) to `result`."""
        if self._carry is None:
            return result
        note, reset = self._carry
        self._carry = None
        return dataclasses.replace(result, reset=result.reset or reset, notes=(note, *result.notes))

    async def _after_cancel(self, worker: _Worker, exchange: _Exchange) -> None:
        """Stop the cancelled code softly, keeping the session; kill it after the grace period."""
        grace = self.limits.hard_timeout_grace
        stopped = False
        with anyio.move_on_after(grace):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._poke, worker)
                stopped = await self._drain_after_cancel(worker, exchange)
                tg.cancel_scope.cancel()
        if stopped:
            self.last_cancellation = "interrupted"
            self._carry = (
                "the previous call was cancelled: its code was stopped softly, variables kept",
                False,
            )
            return
        logger.info("sandbox worker did not stop within %.1fs of a cancellation: killed", grace)
        self.last_cancellation = "killed"
        self._carry = (
            f"the previous call was cancelled and its code did not stop within {grace:.1f}s; "
            + _RESET_NOTE,
            True,
        )
        worker.kill()
        await self._restart()

    @staticmethod
    async def _drain_after_cancel(worker: _Worker, exchange: _Exchange) -> bool:
        """Refuse sub-calls until the worker's result arrives; False if the worker died."""
        refusal = {"op": "llm_reply", "ok": False, "error": "cancelled"}
        try:
            if exchange.awaiting_reply:
                exchange.awaiting_reply = False
                await worker.send(refusal)
            while (await worker.receive()).get("op") in _BRIDGE_OPS:
                await worker.send(refusal)
        except (_WorkerDied, FrameTooLargeError):
            return False
        return True

    @staticmethod
    async def _poke(worker: _Worker) -> None:
        """Deliver the interrupt until the worker answers (it ignores it outside user code)."""
        while worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(worker.process.pid, signal.SIGUSR1)
            await anyio.sleep(0.05)

    async def _serve(self, worker: _Worker, exchange: _Exchange) -> dict[str, Any]:
        while True:
            msg = await worker.receive()
            if msg.get("op") not in _BRIDGE_OPS:
                return msg
            exchange.awaiting_reply = True
            answer = await self._bridge_request(msg, exchange)
            exchange.awaiting_reply = False  # the frame is written before send() awaits
            await worker.send({"op": "llm_reply", **answer})

    async def _bridge_request(self, msg: dict[str, Any], exchange: _Exchange) -> dict[str, Any]:
        """One llm_query, rlm_query or tool request: limits checked here too (the worker's own
        checks are not trusted), cut off at the soft deadline, failures become `ok: False`."""
        handler = exchange.handler
        if handler is None:
            return {"ok": False, "error": "no sub-model in this session"}
        op = msg.get("op")
        if op == "tool":
            call = _tool_call(handler, msg)
            if isinstance(call, str):
                return {"ok": False, "error": call}
        else:
            prompts = [str(p) for p in msg.get("prompts", [])]
            refusal = self._refuse_prompts(prompts, exchange)
            if refusal is not None:
                return {"ok": False, "error": refusal}
            exchange.sub_calls += len(prompts)
            if op == "rlm":
                call = _rlm_call(handler, prompts)
            else:
                call = functools.partial(handler, prompts, model=msg.get("model"))
        done = False
        value: Any = None
        try:
            with anyio.move_on_after(max(0.0, exchange.sub_call_deadline - time.monotonic())):
                value = await call()
                done = True
        except Exception as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        if not done:
            return {"ok": False, "error": "the execute time limit ran out during this call"}
        if op == "tool":
            return _tool_reply(str(msg.get("name")), value, self.limits.max_final_chars)
        return {"ok": True, "texts": list(value)}

    def _refuse_prompts(self, prompts: list[str], exchange: _Exchange) -> str | None:
        limits = self.limits
        if exchange.sub_calls + len(prompts) > limits.max_sub_calls:
            return (
                f"llm_query limit reached: at most {limits.max_sub_calls:,} sub-calls per "
                "execute (SandboxLimits.max_sub_calls, or RLM_MCP_MAX_SUB_CALLS for the server)"
            )
        if any(len(p) > limits.max_prompt_chars for p in prompts):
            return (
                f"llm_query prompt over {limits.max_prompt_chars:,} characters "
                "(SandboxLimits.max_prompt_chars, or RLM_MCP_MAX_PROMPT_CHARS)"
            )
        return None

    async def _context_request(
        self, spec: ContextSpec, growing: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        async with self._lock:
            await self.start()
            assert self._worker is not None
            worker = self._worker

        def frame() -> dict[str, Any]:
            if growing is None:
                return worker.context_frame(spec)
            return worker.growing_frame(spec, *growing)

        return await self._request({"op": "context"}, frame_of=frame)

    async def _request(
        self,
        message: dict[str, Any],
        *,
        frame_of: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        async with self._lock:
            await self.start()
            assert self._worker is not None
            try:
                with anyio.fail_after(60 + self.limits.hard_timeout_grace):
                    extra = frame_of() if frame_of is not None else {}
                    await self._worker.send({**message, **extra})
                    return await self._worker.receive()
            except BaseException as exc:
                self._worker.kill()
                with anyio.CancelScope(shield=True):
                    await self._restart()
                if isinstance(exc, _WorkerDied):  # private: say what happened instead
                    raise SandboxError(
                        f"the sandbox worker died during a {message.get('op')!r} request "
                        f"(memory limit or signal); {_RESET_NOTE}"
                    ) from None
                raise

    async def set_context(
        self, ctx: ContextSpec | None, *, growing: tuple[int, int] | None = None
    ) -> None:
        """Swap `context`/`documents`, keeping every other variable.

        A context that does not fit in the worker's memory limit is refused with a SandboxError
        saying so (the session keeps its previous context when nothing was dropped yet).
        `growing` is (file, progress pipe) for a text still being downloaded, read as it lands
        (loader.Growing); the caller names where it landed afterwards with `context_landed`.
        """
        previous, self.context = self.context, ctx
        if not self.is_alive and growing is None:  # read when the worker starts (a growing
            return  # file cannot wait for that: its writer is reporting to this call)
        reply = await self._context_request(ctx or ContextSpec(), growing)
        if reply.get("error"):
            self.context = previous if reply.get("kept") else ContextSpec()
            raise SandboxError(f"the sandbox could not load the context: {reply['error']}")

    def context_landed(self, spec: ContextSpec) -> None:
        """A context set while `growing` is whole at `spec.path`: a restarted worker reads it
        from there."""
        self.context = spec

    async def draft(self) -> str | None:
        """`answer["content"]` set so far, ready or not (None if empty): a partial answer."""
        reply = await self._request({"op": "draft"})
        value = reply.get("value")
        return None if value is None else str(value)

    async def get_variable_text(self, name: str) -> str | None:
        """str() of a variable of the session, None if there is none."""
        reply = await self._request({"op": "get", "name": name})
        value = reply.get("value")
        return None if value is None else str(value)

    async def peak_memory_kb(self) -> int:
        """The worker's peak resident memory (for benchmarks)."""
        reply = await self._request({"op": "peak"})
        return int(reply.get("value") or 0)

    async def rss_kb(self) -> int:
        """The worker's current resident memory (for benchmarks)."""
        reply = await self._request({"op": "rss"})
        return int(reply.get("value") or 0)

    async def reset(self) -> None:
        """Forget every variable (a fresh worker)."""
        async with self._lock:
            self._carry = None
            await self._restart()

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            if self._worker is not None:
                await self._worker.aclose()
                self._worker = None


#: Worker requests that cross to the parent mid-execute: llm_query, rlm_query, the caller's tools.
_BRIDGE_OPS = frozenset({"llm", "rlm", "tool"})


def _tool_docs(handler: SubCallHandler | None) -> list[dict[str, str]]:
    """The caller's tools as the worker lists them: name and description, never the function."""
    docs: Mapping[str, str] = getattr(handler, "tool_docs", None) or {}
    return [{"name": name, "doc": doc} for name, doc in docs.items()]


def _tool_call(handler: SubCallHandler, msg: dict[str, Any]) -> Callable[[], Awaitable[Any]] | str:
    """The call a tool request asks for, or why it is refused (a name the caller never gave)."""
    name, args, kwargs = msg.get("name"), msg.get("args"), msg.get("kwargs")
    tool = getattr(handler, "tool", None)
    known: Mapping[str, str] = getattr(handler, "tool_docs", None) or {}
    if tool is None or not isinstance(name, str) or name not in known:
        return f"no tool named {name!r} in this session"
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return f"{name}: malformed arguments"
    return functools.partial(tool, name, args, kwargs)


def _rlm_call(handler: SubCallHandler, prompts: list[str]) -> Callable[[], Awaitable[Any]]:
    rlm = getattr(handler, "rlm", None)
    if rlm is None:  # a plain handler (run_repl): no child runs here, a model call instead
        return functools.partial(handler, prompts)
    return functools.partial(rlm, prompts)


def _tool_reply(name: str, value: Any, max_chars: int) -> dict[str, Any]:
    """A tool's result crosses as JSON only: anything else is refused, never handed over."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return {
            "ok": False,
            "error": f"{name} returned {type(value).__name__}, which is not a JSON value; a tool "
            "must return str, int, float, bool, None, or lists and dicts of them",
        }
    if len(text) > max_chars:
        return {
            "ok": False,
            "error": f"{name} returned {len(text):,} characters of JSON, over the "
            f"{max_chars:,} limit; return less (or a handle to it)",
        }
    return {"ok": True, "value": json.loads(text)}


def _to_result(reply: dict[str, Any], duration: float, sub_calls: int) -> ExecResult:
    err = reply.get("error")
    final = reply.get("final")
    return ExecResult(
        status=reply.get("status", "error"),
        output=str(reply.get("output", "")),
        error=None if not err else ErrorInfo(str(err["type"]), str(err["message"]), err["line"]),
        variables=tuple(
            VariableInfo(str(v["name"]), str(v["type"]), str(v["summary"]))
            for v in reply.get("variables", [])
        ),
        truncated=bool(reply.get("truncated")),
        output_chars=int(reply.get("output_chars", 0)),
        duration_s=duration,
        final=None
        if not final
        else FinalAnswer(
            str(final["value"]),
            final["source"],
            final.get("variable"),
            chars=int(final.get("chars", len(str(final["value"])))),
            truncated=bool(final.get("truncated")),
        ),
        sub_calls=sub_calls,
        notes=tuple(reply.get("notes", ())),
    )
