"""The worker: `python -I -m rlm_mcp.sandbox.worker`. Trusted startup, then a frame loop.

Startup imports everything it needs, moves fd 1 away (the protocol owns the original stdout), arms
the parent-death signal and sets rlimits; only then does it run user code. `Executor` is the
execution core, importable in-process for unit tests (without timers or limits).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from rlm_mcp.config import (
    DEFAULT_MAX_FINAL_CHARS,
    DEFAULT_MAX_PROMPT_CHARS,
    DEFAULT_MAX_SUB_CALLS,
)
from rlm_mcp.sandbox import loader, policy
from rlm_mcp.sandbox.confine import confine
from rlm_mcp.sandbox.extras import RPC, ToolProxy, show_vars
from rlm_mcp.sandbox.protocol import encode, read_frame_sync

__all__ = ["Executor", "main"]

LLMBridge = Callable[[list[str], "str | None"], list[str]]
_INTERNAL = frozenset(
    {
        "context",
        "documents",
        "document",
        "peek",
        "grep",
        "lines",
        "llm_query",
        "llm_query_batched",
        "FINAL",
        "FINAL_VAR",
        "rlm_query",
        "rlm_query_batched",
        "SHOW_VARS",
    }
)


#: Every field of a reply that code can make long is cut here (the parent cuts again).
FIELD_CHARS = 120
MAX_VARIABLES = 50
MAX_ERROR_CHARS = 2_000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 12] + " [... cut]"


def _summary(value: Any) -> tuple[str, str]:
    """(type name, one-line summary); never raises: it runs outside the user code's try.

    The type name is code's to choose (`namedtuple('T' * 10**7, ...)`), so it is cut too.
    """
    kind = _cut(type(value).__name__, FIELD_CHARS)
    try:
        return _describe_value(value, kind)
    except Exception:
        return kind, kind


def _describe_value(value: Any, kind: str) -> tuple[str, str]:
    if isinstance(value, str):
        return kind, f"str, {len(value):,} chars"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return kind, f"{kind}, {len(value):,} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # repr of a huge int is slow, and over 4,300 digits it raises ValueError
        return kind, f"int, about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, (int, float, bool)) or value is None:
        text = repr(value)
        return kind, f"{kind} = {text[:40]}"
    return kind, kind


class _FinalSignal:
    def __init__(self) -> None:
        self.value: dict[str, Any] | None = None


class Executor:
    """Runs user code against one persistent namespace."""

    def __init__(
        self,
        *,
        max_output_chars: int,
        llm: LLMBridge | None = None,
        use_timer: bool = False,
        max_sub_calls: int = DEFAULT_MAX_SUB_CALLS,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        max_final_chars: int = DEFAULT_MAX_FINAL_CHARS,
        rpc: RPC | None = None,
        tools: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.max_output_chars = max_output_chars
        self.max_final_chars = max_final_chars
        #: The parent, for rlm_query and the caller's tools (None: not in an RLM run).
        self.rpc = rpc
        self.tools = tuple(tools)
        self.llm = llm
        self.use_timer = use_timer
        self.max_sub_calls = max_sub_calls
        self.max_prompt_chars = max_prompt_chars
        self.sub_calls_used = 0
        #: "idle" (trusted code), "user" (interruptible), "bridge" (waiting for the parent: an
        #: interrupt is deferred until the reply is read, so the frame stream stays in step),
        #: "interrupted" (unwinding after an interrupt: `finally:` blocks run, further signals
        #: are ignored; the parent's hard deadline covers a `finally:` that never ends).
        self.phase = "idle"
        self.pending: str | None = None
        self.rng = random.Random()
        self.printer = policy.CappedPrinter(max_output_chars)
        self.final = _FinalSignal()
        self.context = ""
        self.context_intact = True  # False once a failed set_context has dropped the old one
        self.documents: tuple[tuple[str, int, int], ...] = ()
        self._lines: tuple[str, ...] | None = None
        extras = {name: ToolProxy(name, doc, self._rpc) for name, doc in self.tools}
        self.ns = policy.build_globals(self.printer, self.rng, {**self._helpers(), **extras})
        self.ns["context"] = ""
        self.ns["documents"] = ()
        # The reference library's answer dict exists from the start, so `answer["content"] = x`
        # works as the prompt says (and a draft survives a run stopped by a budget).
        self.ns["answer"] = {"content": "", "ready": False}

    # -- context -----------------------------------------------------------------------------
    def set_context(
        self,
        *,
        path: str | None,
        text: str | None,
        documents: list[list[Any]] | None,
        fd: int | None = None,
        ready: int | None = None,
    ) -> None:
        """Replace `context`/`documents`; a context that cannot fit is refused before reading.
        `ready` is the progress pipe of a file still being written (loader.Growing).

        The old context counts as freeable unless a user variable still refers to it. It is
        dropped before the new one is read, so a read that still fails leaves an empty context
        (and says so) rather than two half-loaded ones.
        """
        source: str | int | None = fd if fd is not None else path
        size = loader.source_size(source) if source is not None else 0
        held = sum(1 for v in self.ns.values() if v is self.context)
        freeable = len(self.context) if held <= 1 else 0
        loader.check_fits(size, freeable=freeable)
        self.context_intact = False
        self.context = ""
        self._lines = None
        self.ns["context"] = ""
        self.ns["documents"] = self.documents = ()
        try:
            growing = loader.Growing(ready) if ready is not None else None
            ctx = loader.read_text(source, growing=growing) if source is not None else (text or "")
        except MemoryError:
            raise loader.ContextTooLargeError(
                f"ran out of memory reading the context ({size / 2**20:,.1f} MB); the session's "
                "context is now empty. Start a new session with this context or raise "
                "SandboxLimits.memory_mb (RLM_MCP_WORKER_MEMORY_MB)."
            ) from None
        self.context_intact = True
        self.context = ctx
        self._lines = None
        self.ns["context"] = ctx
        # (name, start, length) into `context`, as the RLM prompt and the server's tool text tell
        # the model: no copy of the text (slices per document doubled a multi-document context).
        self.documents = tuple(
            (str(name), int(start), int(length)) for name, start, length in (documents or ())
        )
        self.ns["documents"] = self.documents

    def _helpers(self) -> dict[str, Any]:
        def peek(start: int = 0, n: int = 2000) -> str:
            """Return n characters of the context from `start`."""
            return self.context[start : start + n]

        def document(which: int | str) -> str:
            """The text of one document of `documents`, by position or by name."""
            docs = self.documents
            for i, (name, start, length) in enumerate(docs):
                if which in (i, name):
                    return self.context[start : start + length]
            names = ", ".join(repr(d[0]) for d in docs[:20]) or "none (a single text)"
            raise KeyError(f"no document {which!r}; documents: {names}")

        def lines() -> tuple[str, ...]:
            """All lines of the context (computed once per context)."""
            if self._lines is None:
                self._lines = tuple(self.context.splitlines())
            return self._lines

        def grep(pattern: str, max_results: int = 50, flags: int = 0) -> list[tuple[int, str]]:
            """(line number, line) for lines of the context matching `pattern`."""
            rx = re.compile(pattern, flags)
            out: list[tuple[int, str]] = []
            ctx = self.context
            last_end, last_start, lineno = -1, 0, 1
            for m in rx.finditer(ctx):
                if m.start() <= last_end:
                    continue
                start = ctx.rfind("\n", 0, m.start()) + 1
                end = ctx.find("\n", m.end())
                end = len(ctx) if end < 0 else end
                lineno += ctx.count("\n", last_start, start)
                last_start, last_end = start, end
                out.append((lineno, ctx[start:end]))
                if len(out) >= max_results:
                    break
            return out

        def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
            """Ask the sub-model every prompt (concurrently, in the parent); answers in order."""
            if self.llm is None:
                raise RuntimeError("llm_query is not available: this session has no sub-model")
            texts = [str(p) for p in prompts]
            self._check_sub_calls(texts)
            self.sub_calls_used += len(texts)
            return self._bridge(texts, None if model is None else str(model))

        def llm_query(prompt: str, model: str | None = None) -> str:
            """Ask the sub-model one prompt; returns its text."""
            return llm_query_batched([prompt], model)[0]

        def rlm_query_batched(prompts: list[str]) -> list[str]:
            """A child RLM per prompt (its own REPL over the prompt); their answers in order."""
            if self.rpc is None:
                raise RuntimeError(
                    "rlm_query is not available here: it runs child RLMs inside an RLM run "
                    "(rlm_complete, RLM.completion); use llm_query for a plain model call"
                )
            texts = [str(p) for p in prompts]
            self._check_sub_calls(texts)
            self.sub_calls_used += len(texts)
            reply = self._rpc({"op": "rlm", "prompts": texts})
            if not reply.get("ok"):
                raise RuntimeError(str(reply.get("error", "rlm_query failed")))
            return [str(t) for t in reply.get("texts", [])]

        def rlm_query(prompt: str) -> str:
            """A child RLM over `prompt` (it becomes the child's context); returns its answer."""
            return rlm_query_batched([prompt])[0]

        def SHOW_VARS() -> str:
            """The variables you made so far: name, type and a short summary, one per line."""
            return show_vars(self.user_names(), self.ns, _summary)

        def FINAL(value: Any) -> None:
            """Finish: `value` is the answer."""
            self.final.value = {"value": str(value), "source": "FINAL", "variable": None}

        def FINAL_VAR(name: str) -> None:
            """Finish with the text of the variable called `name`."""
            if name not in self.ns or name.startswith("_"):
                raise NameError(
                    f"FINAL_VAR: no variable {name!r}; variables: {', '.join(self.user_names())}"
                )
            self.final.value = {
                "value": str(self.ns[name]),
                "source": "FINAL_VAR",
                "variable": name,
            }

        return {
            "peek": peek,
            "document": document,
            "lines": lines,
            "grep": grep,
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "SHOW_VARS": SHOW_VARS,
        }

    def _check_sub_calls(self, prompts: list[str]) -> None:
        for p in prompts:
            if len(p) > self.max_prompt_chars:
                raise RuntimeError(
                    f"llm_query prompt of {len(p):,} characters is over the sandbox limit of "
                    f"{self.max_prompt_chars:,} (SandboxLimits.max_prompt_chars, or "
                    "RLM_MCP_MAX_PROMPT_CHARS): send a slice of the context, e.g. split it into "
                    "chunks and query each"
                )
        if self.sub_calls_used + len(prompts) > self.max_sub_calls:
            raise RuntimeError(
                f"llm_query limit reached: at most {self.max_sub_calls:,} sub-calls per execute "
                "(SandboxLimits.max_sub_calls, or RLM_MCP_MAX_SUB_CALLS for the server), "
                f"{self.sub_calls_used:,} used, "
                f"{len(prompts):,} more asked: batch several items into one prompt, or "
                "continue in the next execute"
            )

    def _rpc(self, message: dict[str, Any]) -> dict[str, Any]:
        """A request to the parent (rlm_query, tools), with interrupts deferred like llm_query."""
        if self.rpc is None:
            return {"ok": False, "error": "not available in this session"}
        before = self.phase
        self.phase = "bridge"
        try:
            return self.rpc(message)
        finally:
            self.phase = before
            if self.pending is not None and before == "user":
                self.raise_interrupt(self.pending)

    def _bridge(self, prompts: list[str], model: str | None) -> list[str]:
        """Call the parent with interrupts deferred: a signal during the wait is raised after."""
        assert self.llm is not None
        before = self.phase
        self.phase = "bridge"
        try:
            return self.llm(prompts, model)
        finally:
            self.phase = before
            if self.pending is not None and before == "user":
                self.raise_interrupt(self.pending)

    def interrupt(self, reason: str) -> None:
        """Signal handler body: stop user code now, later (bridge) or not at all (trusted code)."""
        if self.phase == "user":
            self.raise_interrupt(reason)
        elif self.phase == "bridge":
            self.pending = self.pending or reason

    def raise_interrupt(self, reason: str) -> None:
        self.phase = "interrupted"
        self.pending = None
        raise policy.SandboxTimeout(reason)

    def user_names(self) -> list[str]:
        return sorted(n for n in self.ns if not n.startswith("_") and n not in _INTERNAL)

    # -- execution ---------------------------------------------------------------------------
    def execute(self, code: str, timeout: float | None = None) -> dict[str, Any]:
        self.printer = policy.CappedPrinter(self.max_output_chars)
        self.ns["_print_"] = self.printer
        self.final.value = None
        self.sub_calls_used = 0
        self.pending = None
        before: dict[str, Any] = {
            n: (id(self.ns[n]), _summary(self.ns[n])) for n in self.user_names()
        }
        before["\0answer"] = self._ready_answer()  # a key no variable can have
        result: dict[str, Any] = {"status": "ok", "error": None, "notes": []}
        try:
            compiled, errors = policy.compile_user_code(code)
        except BaseException as exc:  # huge expressions raise RecursionError/MemoryError
            compiled, errors = (
                None,
                [
                    f"SyntaxError: the code is too big or too deeply nested to compile "
                    f"({type(exc).__name__}); send it in smaller run_repl calls"
                ],
            )
        if compiled is None:
            result["status"] = "violation" if not errors[0].startswith("SyntaxError") else "error"
            result["error"] = {
                "type": "SyntaxError" if result["status"] == "error" else "PolicyViolation",
                "message": _cut("; ".join(errors), MAX_ERROR_CHARS),
                "line": None,
            }
            return self._finish(result, before)
        try:
            self.phase = "user"  # before the timer: an early alarm must not be ignored
            if self.use_timer and timeout:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            exec(compiled, self.ns)
            self.phase = "idle"
        except policy.SandboxTimeout as exc:
            self.phase = "idle"
            cancelled = exc.args[:1] == ("cancelled",)
            result["status"] = "timeout"
            result["error"] = {
                "type": "CancelledError" if cancelled else "TimeoutError",
                "message": (
                    "cancelled by the caller" if cancelled else f"interrupted after {timeout}s"
                )
                + "; variables kept (finally: blocks ran; nothing was rolled back)",
                "line": _user_line(exc.__traceback__),
            }
        except BaseException as exc:
            self.phase = "idle"
            status = (
                "violation" if isinstance(exc, policy.PolicyViolation | ImportError) else "error"
            )
            result["status"] = status
            result["error"] = {
                "type": type(exc).__name__,
                "message": _message(exc),
                "line": _user_line(exc.__traceback__),
            }
        finally:
            self.phase = "idle"
            if self.use_timer:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return self._finish(result, before)

    def _ready_answer(self) -> tuple[int, int] | None:
        """Identity of a ready `answer` dict and its content, or None when none is ready."""
        answer = self.ns.get("answer")
        if isinstance(answer, dict) and answer.get("ready") is True:
            return id(answer), id(answer.get("content"))
        return None

    def _changed_variables(self, before: dict[str, Any]) -> list[dict[str, str]]:
        """The variables this call created or changed: at most MAX_VARIABLES, then a count."""
        variables: list[dict[str, str]] = []
        more = 0
        try:
            for name in self.user_names():
                value = self.ns[name]
                kind, summary = _summary(value)
                if before.get(name) == (id(value), (kind, summary)):
                    continue
                if len(variables) < MAX_VARIABLES:
                    variables.append(
                        {"name": _cut(name, FIELD_CHARS), "type": kind, "summary": summary}
                    )
                else:
                    more += 1
        except BaseException:
            pass
        if more:
            variables.append(
                {"name": "...", "type": "", "summary": f"{more:,} more changed variables"}
            )
        return variables

    def _final(self, before: dict[str, Any]) -> dict[str, Any] | None:
        """The answer this call gave: FINAL/FINAL_VAR, or `answer` made ready (or replaced)
        during this call. A ready `answer` left from an earlier call is not an answer again."""
        final = self.final.value
        if final is None:
            ready = self._ready_answer()
            if ready is None or ready == before.get("\0answer"):
                return None
            content = self.ns["answer"].get("content", "")
            final = {"value": str(content), "source": "answer", "variable": None}
        value = final["value"]
        final["chars"] = len(value)
        final["truncated"] = len(value) > self.max_final_chars
        final["value"] = value[: self.max_final_chars]
        return final

    def _finish(self, result: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        variables = self._changed_variables(before)
        final = self._final(before) if result["status"] == "ok" else None
        printer = self.printer
        result.update(
            output=printer.text,
            output_chars=printer.total,
            truncated=printer.total > printer.stored,
            variables=variables,
            final=final,
        )
        if result["truncated"]:
            result["notes"].append(
                f"output truncated: showing {printer.stored:,} of {printer.total:,} characters"
            )
        return result

    def get_variable_text(self, name: str) -> str | None:
        if name.startswith("_") or name not in self.ns:
            return None
        return str(self.ns[name])

    def draft(self) -> str | None:
        """`answer["content"]` even when not ready: the best partial answer of a stopped run."""
        answer = self.ns.get("answer")
        if not isinstance(answer, dict):
            return None
        content = answer.get("content")
        if content is None or content == "":
            return None
        return str(content)[: self.max_final_chars]


def _message(exc: BaseException) -> str:
    """The exception's text, or what it means when it has none (MemoryError usually has none)."""
    text = str(exc)[:2000]
    if text.strip():
        return text
    if isinstance(exc, MemoryError):
        return (
            "out of memory: the sandbox worker's memory limit was reached (SandboxLimits.memory_mb"
            ", RLM_MCP_WORKER_MEMORY_MB); work on slices of the context instead of copies of it"
        )
    return f"{type(exc).__name__} raised without a message"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, loader.ContextTooLargeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _user_line(tb: Any) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == policy.USER_FILENAME:
            line = lineno
    return line


def _set_limits(memory_mb: int, max_open_files: int) -> None:
    import resource

    def lim(which: int, soft: int, hard: int | None = None) -> None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (soft, soft if hard is None else hard))

    lim(resource.RLIMIT_CORE, 0)
    lim(resource.RLIMIT_FSIZE, 0)
    lim(resource.RLIMIT_NOFILE, max_open_files)
    lim(resource.RLIMIT_NPROC, 0)  # does not bind root; no os/threading is reachable anyway
    vm = _vm_size()
    lim(resource.RLIMIT_AS, vm + memory_mb * 1024 * 1024, resource.RLIM_INFINITY)


def _vm_size() -> int:
    return _status_kb("VmSize:") * 1024


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _set_cpu_budget(seconds: float) -> None:
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    total = used.ru_utime + used.ru_stime
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (int(total + seconds) + 1, resource.RLIM_INFINITY))


def _pdeathsig() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        libc.prctl(4, 0)  # PR_SET_DUMPABLE = 0
    except Exception:
        pass


#: Modules code can reach only lazily (C code importing for itself, codecs looked up by name):
#: imported in the trusted start-up, because a confined worker can no longer read the files
#: of the Python installation (its uid may not even traverse the folder they are in).
_PRELOAD = (
    "time",
    "_strptime",
    "encodings.latin_1",
    "encodings.ascii",
    "encodings.cp1252",
    "encodings.utf_16",
    "encodings.utf_32",
    "encodings.utf_8_sig",
    "encodings.unicode_escape",
    "encodings.raw_unicode_escape",
    "encodings.idna",
    "encodings.punycode",
    "encodings.hex_codec",
    "encodings.base64_codec",
)


def _preload() -> None:
    import importlib

    for name in (*policy.ALLOWED_MODULES, *_PRELOAD):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _receive_fds(channel: socket.socket | None, msg: dict[str, Any]) -> list[int]:
    """The descriptors the parent passed along with `msg` (SCM_RIGHTS): the context's file,
    then, for a file still being downloaded, the pipe its progress comes on."""
    if channel is None or not msg.get("fd"):
        return []
    _, fds, _, _ = socket.recv_fds(channel, 1, 2)
    return list(fds)


def _set_context(executor: Executor, channel: socket.socket | None, msg: dict[str, Any]) -> None:
    fds = _receive_fds(channel, msg)
    try:
        if msg.get("growing") and len(fds) < 2:  # never read a growing file blind
            raise OSError("the context's progress pipe did not arrive (too many open files?)")
        executor.set_context(
            path=None if fds else msg.get("path"),
            text=msg.get("text"),
            documents=msg.get("documents"),
            fd=fds[0] if fds else None,
            ready=fds[1] if msg.get("growing") else None,
        )
    finally:
        for fd in fds:
            os.close(fd)


def main() -> int:
    """Frame loop: init, exec, context, get, ping."""
    channel = None
    if "--fd-channel" in sys.argv:
        fileno = int(sys.argv[sys.argv.index("--fd-channel") + 1])
        channel = socket.socket(fileno=fileno)
    out: BinaryIO = os.fdopen(os.dup(1), "wb")
    inp: BinaryIO = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    _pdeathsig()

    def send(msg: dict[str, Any]) -> None:
        out.write(encode(msg))
        out.flush()

    def rpc(message: dict[str, Any]) -> dict[str, Any]:
        send(message)
        reply = read_frame_sync(inp)
        if reply is None:
            raise SystemExit(0)
        return reply

    def bridge(prompts: list[str], model: str | None) -> list[str]:
        reply = rpc({"op": "llm", "prompts": prompts, "model": model})
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error", "sub-call failed")))
        return [str(t) for t in reply.get("texts", [])]

    init = read_frame_sync(inp)
    if init is None:
        return 0
    executor = Executor(
        max_output_chars=int(init["max_output_chars"]),
        llm=bridge if init.get("sub_calls") else None,
        use_timer=True,
        max_sub_calls=int(init.get("max_sub_calls", DEFAULT_MAX_SUB_CALLS)),
        max_prompt_chars=int(init.get("max_prompt_chars", DEFAULT_MAX_PROMPT_CHARS)),
        max_final_chars=int(init.get("max_final_chars", DEFAULT_MAX_FINAL_CHARS)),
        rpc=rpc if init.get("sub_calls") else None,
        tools=[(str(t["name"]), str(t.get("doc") or "")) for t in init.get("tools") or ()],
    )
    signal.signal(signal.SIGALRM, lambda signum, frame: executor.interrupt("timeout"))
    signal.signal(signal.SIGUSR1, lambda signum, frame: executor.interrupt("cancelled"))
    try:
        _set_context(executor, channel, init)
        error = None
    except BaseException as exc:
        error = _describe(exc)
    _preload()
    _set_limits(int(init["memory_mb"]), int(init["max_open_files"]))
    skipped = confine() if init.get("confine") else {}
    hard = float(init.get("hard_timeout_grace", 5.0))
    send({"op": "ready", "error": error, "unconfined": skipped})
    while True:
        msg = read_frame_sync(inp)
        if msg is None:
            return 0
        op = msg.get("op")
        if op == "exec":
            timeout = msg.get("timeout")
            _set_cpu_budget((timeout or 3600.0) + hard)
            t0 = time.perf_counter()
            reply = executor.execute(str(msg["code"]), timeout)
            reply["duration_s"] = time.perf_counter() - t0
            send({"op": "result", **reply})
        elif op == "context":
            try:
                _set_context(executor, channel, msg)
                send({"op": "ok"})
            except BaseException as exc:
                send({"op": "ok", "error": _describe(exc), "kept": executor.context_intact})
        elif op == "get":
            send({"op": "value", "value": executor.get_variable_text(str(msg["name"]))})
        elif op == "draft":
            send({"op": "value", "value": executor.draft()})
        elif op == "peak":
            # VmHWM is this process's own peak; ru_maxrss also counts the parent's RSS at fork.
            send({"op": "value", "value": _status_kb("VmHWM:")})
        elif op == "rss":
            send({"op": "value", "value": _status_kb("VmRSS:")})
        else:
            send({"op": "ok"})


if __name__ == "__main__":
    sys.exit(main())
