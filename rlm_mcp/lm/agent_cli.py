"""The user's own logged-in agent CLI as a model: Claude Code (`claude`), Codex (`codex`), Gemini
CLI (`gemini`). For the many users with a subscription and no API key.

Each call runs the program once, non-interactively, with JSON output and no tools:

- in a fresh, empty temporary directory, so it can neither read nor change the user's project;
- with the caller's environment (`environ`: the user's login lives in their HOME);
- with the whole prompt on **stdin**, never on the command line (`ps` would show it, ARG_MAX
  would cut it); a conversation becomes one transcript;
- at most `limit` at once per program (default 4: these are heavy processes);
- in its own process group, killed whole on timeout or cancellation, so no child outlives it.

Usage and cost come from the program's JSON where it reports them (Claude Code reports tokens and
cost, Codex tokens, Gemini tokens); otherwise tokens are estimated and marked `estimated`. A program
that is missing, logged out, rate-limited or prints something that is not its JSON raises a
ProviderError naming the program, what it said, and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from rlm_mcp.config import DEFAULT_AGENT_CONCURRENCY, DEFAULT_LM_TIMEOUT
from rlm_mcp.errors import ProviderError, ProviderTimeoutError
from rlm_mcp.lm.base import Completion, Message, Usage
from rlm_mcp.lm.limits import ConcurrencyLimit
from rlm_mcp.lm.retry import estimate_tokens

__all__ = [
    "AGENT_PROGRAMS",
    "DEFAULT_AGENT_CONCURRENCY",
    "AgentCLILM",
    "AgentProgram",
    "find_program",
]

#: What a program may print before it is stopped (its JSON answer is far smaller).
MAX_OUTPUT_BYTES = 32 * 1024 * 1024
#: Fixed instructions on the command line: our own words, never the user's data.
SYSTEM = (
    "You are a language model called by rlm-mcp as a plain completion: read the request on "
    "standard input and answer it exactly as it asks. Use no tools."
)

#: (text, (input, output, cached input) tokens or None, cost in USD or None)
Parsed = tuple[str, "tuple[int, int, int] | None", "float | None"]


class AgentOutputError(Exception):
    """The program's output is not the JSON it documents, or reports an error."""


@dataclass(frozen=True, slots=True)
class AgentProgram:
    """One agent CLI: how to call it non-interactively and how to read its answer."""

    backend: str  # the backend name: "claude-code", "codex", "gemini-cli"
    command: str  # the executable looked up on PATH
    package: str  # where it comes from, for the "not installed" advice
    login: str  # what to run when it is logged out
    argv: Callable[[str | None], list[str]]  # arguments after the command, for a model
    parse: Callable[[str], Parsed]


def _parse_claude(out: str) -> Parsed:
    data = _json_object(out)
    if data.get("is_error") or data.get("subtype", "success") != "success":
        raise AgentOutputError(str(data.get("result") or data.get("subtype") or "error"))
    usage = data.get("usage") or {}
    reported = None
    if isinstance(usage, dict) and usage.get("input_tokens") is not None:
        read = int(usage.get("cache_read_input_tokens") or 0)
        made = int(usage.get("cache_creation_input_tokens") or 0)
        total_in = int(usage["input_tokens"] or 0) + read + made
        reported = (total_in, int(usage.get("output_tokens") or 0), read)
    cost = data.get("total_cost_usd")
    return str(data.get("result") or ""), reported, None if cost is None else float(cost)


def _parse_codex(out: str) -> Parsed:
    text, reported = None, None
    for line in out.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # codex prints progress lines around its JSONL on some terminals
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "item.completed" and (event.get("item") or {}).get("type") == "agent_message":
            text = str(event["item"].get("text") or "")
        elif kind == "turn.completed":
            u = event.get("usage") or {}
            reported = (
                int(u.get("input_tokens") or 0),
                int(u.get("output_tokens") or 0),
                int(u.get("cached_input_tokens") or 0),
            )
        elif kind in ("turn.failed", "error"):
            err = event.get("error") if kind == "turn.failed" else event
            raise AgentOutputError(str((err or {}).get("message") or event))
    if text is None:
        raise AgentOutputError(f"no agent_message in its JSONL: {out[:200]!r}")
    return text, reported, None


def _parse_gemini(out: str) -> Parsed:
    data = _json_object(out)
    if data.get("error"):
        err = data["error"]
        raise AgentOutputError(str(err.get("message") if isinstance(err, dict) else err))
    if "response" not in data:
        raise AgentOutputError(f"no 'response' in its JSON: {out[:200]!r}")
    inp = outp = cached = 0
    seen = False
    models = ((data.get("stats") or {}).get("models") or {}).values()
    for model in models:
        tokens = (model or {}).get("tokens") or {}
        if tokens:
            seen = True
            inp += int(tokens.get("prompt") or tokens.get("input") or 0)
            outp += int(tokens.get("candidates") or 0)
            cached += int(tokens.get("cached") or 0)
    return str(data.get("response") or ""), (inp, outp, cached) if seen else None, None


def _json_object(out: str) -> dict[str, Any]:
    """The JSON object a program printed (the last line that is one, if it logged first)."""
    candidates = [out.strip()] + [line for line in reversed(out.splitlines()) if line.strip()]
    for chunk in candidates:
        try:
            data = json.loads(chunk)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    raise AgentOutputError(f"not JSON: {out.strip()[:200]!r}")


def _with_model(args: list[str], flag: str) -> Callable[[str | None], list[str]]:
    return lambda model: [*args, *([flag, model] if model else [])]


AGENT_PROGRAMS: dict[str, AgentProgram] = {
    "claude-code": AgentProgram(
        "claude-code",
        "claude",
        "@anthropic-ai/claude-code",
        "run `claude` once and log in with /login (or set ANTHROPIC_API_KEY for it)",
        _with_model(
            [
                "-p",
                "--output-format",
                "json",
                "--tools",
                "",
                "--no-session-persistence",
                "--system-prompt",
                SYSTEM,
            ],
            "--model",
        ),
        _parse_claude,
    ),
    "codex": AgentProgram(
        "codex",
        "codex",
        "@openai/codex",
        "run `codex login`",
        lambda model: [
            *["exec", "--json", "--skip-git-repo-check", "--ephemeral", "--sandbox", "read-only"],
            *(["--model", model] if model else []),
            "-",  # the prompt: read from stdin
        ],
        _parse_codex,
    ),
    "gemini-cli": AgentProgram(
        "gemini-cli",
        "gemini",
        "@google/gemini-cli",
        "run `gemini` once and sign in (or set GEMINI_API_KEY for it)",
        _with_model(["--prompt", "", "--output-format", "json", "--approval-mode", "plan"], "-m"),
        _parse_gemini,
    ),
}


def find_program(program: AgentProgram, environ: Mapping[str, str]) -> str | None:
    """The program's path on `environ`'s PATH (never the server's own PATH unless passed)."""
    path = environ.get("PATH")
    return shutil.which(program.command, path=path) if path else None


def transcript(messages: Sequence[Message]) -> str:
    """A conversation as one prompt: a single user message is sent as it is."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    parts = [f"<{m.role}>\n{m.content}\n</{m.role}>" for m in messages]
    parts.append("Reply as the assistant to the last user message above.")
    return "\n\n".join(parts)


def _advice(program: AgentProgram, said: str, code: int | None) -> str:
    """What to do, from what the program said."""
    low = said.lower()
    logged_out = ("log in", "login", "logged", "401", "unauthorized", "api key", "authentication")
    if any(w in low for w in (*logged_out, "credential")):
        return f"it looks logged out: {program.login}"
    if any(w in low for w in ("429", "rate limit", "rate_limit", "quota", "overloaded")):
        return (
            "it is rate-limited or over quota: wait and retry, or lower RLM_MCP_AGENT_CONCURRENCY"
        )
    return f"check that `{program.command}` works in a terminal (exit code {code})"


class AgentCLILM:
    """An LM answered by an agent CLI the user is logged in to."""

    def __init__(
        self,
        program: AgentProgram,
        *,
        model: str | None = None,
        environ: Mapping[str, str] | None = None,
        executable: str | None = None,
        timeout: float = DEFAULT_LM_TIMEOUT,
        limit: ConcurrencyLimit | None = None,
    ) -> None:
        self.program = program
        self._model = model
        self.environ = dict(environ or {})
        self.executable = executable
        self.timeout = timeout
        self.limit = limit or ConcurrencyLimit(DEFAULT_AGENT_CONCURRENCY)
        #: Processes alive now and at most so far (for tests and diagnostics).
        self.running = 0
        self.peak_running = 0

    @property
    def model(self) -> str:
        return self._model or self.program.backend

    @property
    def backend(self) -> str:
        return self.program.backend

    def __repr__(self) -> str:
        return f"AgentCLILM({self.program.backend!r}, model={self._model!r})"

    def _error(self, message: str, *, timeout: bool = False) -> ProviderError:
        cls = ProviderTimeoutError if timeout else ProviderError
        return cls(message, provider=self.program.backend, model=self.model)

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        prompt = transcript(messages)
        exe = self.executable or find_program(self.program, self.environ)
        if exe is None or not os.path.exists(exe):
            raise self._error(
                f"{self.program.backend}: the `{self.program.command}` program is not on PATH; "
                f"install it (npm install -g {self.program.package}) and log in, or choose "
                "another backend (an API key, or a local OpenAI-compatible server)."
            )
        started = time.monotonic()
        async with self.limit.slot():
            code, out, err = await self._run([exe, *self.program.argv(self._model)], prompt)
        try:
            if code != 0 and not out.strip():
                raise AgentOutputError(err.strip() or f"exit code {code}")
            text, reported, cost = self.program.parse(out)
        except AgentOutputError as exc:
            said = str(exc)[:300]
            raise self._error(
                f"{self.program.backend} (`{self.program.command}`) failed: {said}. To fix: "
                f"{_advice(self.program, said + ' ' + err[:500], code)}."
            ) from None
        return Completion(text=text, usage=self._usage(messages, text, reported, cost, started))

    def _usage(
        self,
        messages: Sequence[Message],
        text: str,
        reported: tuple[int, int, int] | None,
        cost: float | None,
        started: float,
    ) -> Usage:
        latency = time.monotonic() - started
        if reported is not None:
            inp, out, cached = reported
            return Usage(self.model, inp, out, cached, latency_s=latency, cost=cost)
        return Usage(
            self.model,
            sum(estimate_tokens(m.content) for m in messages),
            estimate_tokens(text),
            latency_s=latency,
            cost=cost,
            estimated=True,
        )

    async def _run(self, argv: list[str], prompt: str) -> tuple[int | None, str, str]:
        """Run once in an empty folder; kill the whole process group on timeout or cancel."""
        folder = tempfile.mkdtemp(prefix="rlm-agent-")
        process = await anyio.open_process(
            argv, cwd=folder, env=self.environ, start_new_session=True
        )
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        out, err = bytearray(), bytearray()
        try:
            with anyio.fail_after(self.timeout):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_feed, process, prompt)
                    tg.start_soon(_drain, process.stdout, out)
                    tg.start_soon(_drain, process.stderr, err)
                await process.wait()
        except TimeoutError:
            raise self._error(
                f"{self.program.backend} (`{self.program.command}`) gave no answer within "
                f"{self.timeout:g} s; it was stopped. To fix: raise RLM_MCP_LM_TIMEOUT, or check "
                f"that `{self.program.command}` answers in a terminal.",
                timeout=True,
            ) from None
        finally:
            self.running -= 1
            with anyio.CancelScope(shield=True):
                await _stop(process)
            shutil.rmtree(folder, ignore_errors=True)
        return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


async def _feed(process: anyio.abc.Process, prompt: str) -> None:
    assert process.stdin is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.send(prompt.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.aclose()


async def _drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    with contextlib.suppress(
        anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError
    ):
        while len(into) < MAX_OUTPUT_BYTES:
            into += await stream.receive()


async def _stop(process: anyio.abc.Process) -> None:
    """Kill the process group (the program and whatever it started, which may outlive it even
    after it exited) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with anyio.move_on_after(5):
        await process.wait()
    await process.aclose()
