"""Multi-turn RLM runs: a second question continues in the same REPL.

A `Conversation` is what a persistent RLM keeps between completions: the root's sandbox (with
every variable the earlier turns made), the context it was given, and each turn's question and
answer. The next turn's root model starts with a short summary of those turns, not their whole
transcripts, so the conversation stays small however many turns there are; the work itself lives
in the REPL's variables.

The library keeps the sandbox open itself (`RLM(persistent=True)`, closed by `RLM.close()`); the
server instead hands in a factory that leases the session from its pool, so an idle continued
run counts against the pool's limits and is closed by its idle expiry like any other session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from rlm_mcp.context_input import ContextInput
    from rlm_mcp.loop import SandboxFactory
    from rlm_mcp.sandbox import ContextSpec
    from rlm_mcp.sandbox.types import SubCallHandler

__all__ = ["Conversation", "Turn"]

#: How many earlier turns the next root prompt recalls, and how much of each.
TURNS_SHOWN = 10
TURN_CHARS = 1_500
#: How many turns a conversation remembers at all (older ones are dropped from the summary).
MAX_TURNS = 100


@dataclass(frozen=True)
class Turn:
    question: str | None
    answer: str
    stop_reason: str


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit:,} more chars]"


class Conversation:
    """One REPL and the turns asked in it so far; turns run one at a time."""

    def __init__(self, sandbox: SandboxFactory | None = None) -> None:
        #: A factory that keeps its session between turns (the server's pool); None: this object
        #: holds the session open itself until `aclose`.
        self._open = sandbox
        self.turns: list[Turn] = []
        self.context: ContextInput | None = None
        self.lock = anyio.Lock()
        self._stack: AsyncExitStack | None = None
        self._session: Any = None
        #: Some turns ran on another replica (known from the shared record): their answers are
        #: recalled, their variables are not in this REPL.
        self.moved = False

    def record(self, question: str | None, answer: str, stop_reason: str) -> None:
        self.turns.append(Turn(question, answer, stop_reason))
        del self.turns[:-MAX_TURNS]

    def recap(self) -> str:
        """What the next root model is told about the earlier turns (empty on the first)."""
        if not self.turns:
            return ""
        shown = self.turns[-TURNS_SHOWN:]
        first = len(self.turns) - len(shown) + 1
        lines = [
            f"Turn {first + i}: question: {_cut(t.question or '(none)', 500)}\n"
            f"  answer ({t.stop_reason}): {_cut(t.answer, TURN_CHARS)}"
            for i, t in enumerate(shown)
        ]
        skipped = f" (the first {first - 1} are not shown)" if first > 1 else ""
        if self.moved:
            head = (
                f"This continues earlier turns{skipped}, some or all of which ran on another "
                "server: their variables may be missing from this REPL (print(SHOW_VARS()) lists "
                "what it has); recompute what you need.\n"
            )
        else:
            head = (
                f"This continues earlier turns in the same REPL{skipped}. Their variables are "
                "still defined (print(SHOW_VARS()) lists them); reuse them instead of redoing "
                "the work.\n"
            )
        return head + "\n".join(lines) + "\n\n"

    def root_sandbox(self, fallback: SandboxFactory) -> SandboxFactory:
        """The sandbox factory for this conversation's root runs."""
        if self._open is not None:
            return self._open

        @asynccontextmanager
        async def held(spec: ContextSpec, sub_calls: SubCallHandler) -> AsyncIterator[Any]:
            session = self._session
            if session is None or getattr(session, "_closed", False):
                stack = AsyncExitStack()
                session = await stack.enter_async_context(fallback(spec, sub_calls))
                self._stack, self._session = stack, session
            else:
                session.sub_calls = sub_calls  # this turn's budget, usage and tools
                if session.context != spec:
                    await session.set_context(spec)
            yield session

        return held

    async def aclose(self) -> None:
        """Close the sandbox this conversation holds (a no-op for a pool's)."""
        stack, self._stack, self._session = self._stack, None, None
        if stack is not None:
            await stack.aclose()
