"""Continued rlm_complete runs: `run_id` hands a client back the REPL of its earlier run.

Every rlm_complete gets a server-minted `run_...` id (128 random bits). Passing it to a later
rlm_complete continues that run's `Conversation`: the same REPL, its variables, a recap of the
earlier questions and answers. An id works only for the tenant (bearer token) that started it and
expires after the session idle time unused. The root sandbox is a pool session keyed by the id,
so an idle continued run counts against the pool's limits and is closed by the pool like any
other; a continuation after that starts a fresh REPL, and the model is told so.

With a shared store (several replicas), each run's tenant and turns are also kept as a small
record in the bucket, rewritten after every turn. A follow-up that reaches another replica
continues there from the record: the recap of the earlier turns, in a fresh REPL (the variables
lived in the other replica's sandbox), and the model is told that too. The record says when it
expires, and the store's eviction pass removes it after that.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm_mcp.conversation import Conversation, Turn
from rlm_mcp.errors import SessionExpiredError

__all__ = ["RUN_PREFIX", "ContinuedRun", "RunRegistry"]

RUN_PREFIX = "run_"
_RUN = re.compile(r"run_[0-9a-f]{32}")
#: How many continued runs the server remembers in all (the oldest unused are dropped first).
MAX_RUNS = 4096


def _turns(listed: Any) -> list[Turn]:
    """The turns of a shared record (JSON lists), whatever a bucket writer put there."""
    out = []
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, list) and len(item) == 3:
            question, answer, stop = item
            out.append(Turn(None if question is None else str(question), str(answer), str(stop)))
    return out


@dataclass
class ContinuedRun:
    tenant: str | None
    conversation: Conversation
    last_used: float = field(default_factory=time.monotonic)
    #: Continued from another replica's record: the stored context its turns were asked about
    #: (None when they were about inline text, which the record does not carry).
    handle: str | None = None


class RunRegistry:
    """run_id -> its conversation, per tenant, with idle expiry."""

    def __init__(
        self,
        idle_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        records: Callable[[], Any] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        #: The shared store (its get_record/put_record), made on first use; None: runs stay here.
        self._records = records
        self._wall = wall
        self._runs: OrderedDict[str, ContinuedRun] = OrderedDict()

    def mint(
        self, tenant: str | None, make: Callable[[str], Conversation]
    ) -> tuple[str, Conversation]:
        """A new run id for `tenant` and its conversation, made by `make(run_id)`."""
        self._prune()
        run_id = RUN_PREFIX + secrets.token_hex(16)
        conversation = make(run_id)
        self._keep(run_id, ContinuedRun(tenant, conversation, self._clock()))
        return run_id, conversation  # its record is written after its first turn (`save`)

    def _keep(self, run_id: str, run: ContinuedRun) -> None:
        self._runs[run_id] = run
        while len(self._runs) > MAX_RUNS:
            self._runs.popitem(last=False)

    def save(self, run_id: str) -> None:
        """Write the run's record to the shared store (after each turn); a no-op without one.
        Blocking: call it from a thread."""
        run = self._runs.get(run_id)
        if self._records is None or run is None:
            return
        conversation = run.conversation
        turns = [[t.question, t.answer, t.stop_reason] for t in conversation.turns]
        handle = getattr(conversation.context, "handle", run.handle)  # a StoredContext's
        record = {
            "tenant": run.tenant,
            "turns": turns,
            "handle": handle if isinstance(handle, str) else None,
            "expires": self._wall() + self.idle_seconds,
        }
        self._records().put_record(("run", run_id), record)

    def _read(self, run_id: str) -> dict[str, Any] | None:
        """The run's shared record, if there is a shared store and it holds one."""
        record = None if self._records is None else self._records().get_record(("run", run_id))
        return record if isinstance(record, dict) else None

    def _restore(
        self, tenant: str | None, run_id: str, make: Callable[[str], Conversation]
    ) -> ContinuedRun | None:
        """The run another replica started, from its shared record (a fresh REPL here)."""
        record = self._read(run_id)
        if record is None or record.get("tenant") != tenant:
            return None
        if not isinstance(record.get("expires"), (int, float)) or record["expires"] < self._wall():
            return None
        conversation = make(run_id)
        conversation.turns = _turns(record.get("turns"))
        conversation.moved = True
        handle = record.get("handle")
        run = ContinuedRun(
            tenant, conversation, self._clock(), handle=handle if isinstance(handle, str) else None
        )
        self._keep(run_id, run)
        return run

    def _catch_up(self, run_id: str, run: ContinuedRun) -> None:
        """Take the turns another replica added since this one last ran the run."""
        record = self._read(run_id)
        turns = None if record is None else record.get("turns")
        if isinstance(turns, list) and len(turns) > len(run.conversation.turns):
            run.conversation.turns = _turns(turns)
            run.conversation.moved = True

    def get(
        self, tenant: str | None, run_id: str, make: Callable[[str], Conversation] | None = None
    ) -> ContinuedRun:
        """The caller's run, marked used; unknown, expired and someone else's look the same.
        With a shared store and `make`, a run started on another replica continues here.
        Blocking when it reads the shared store: call it from a thread."""
        well_formed = _RUN.fullmatch(run_id) is not None
        run = self._runs.get(run_id) if well_formed else None
        if run is None and well_formed and make is not None:
            run = self._restore(tenant, run_id, make)
        elif run is not None and run.tenant == tenant:
            self._catch_up(run_id, run)
        now = self._clock()
        if run is None or run.tenant != tenant or now - run.last_used > self.idle_seconds:
            if run is not None and run.tenant == tenant:
                del self._runs[run_id]
            raise SessionExpiredError(
                f"run_id {run_id[:48]!r} is unknown or expired (runs expire after "
                f"{self.idle_seconds:.0f}s unused and belong to the client that started them): "
                "call rlm_complete with handle or text to start a new run."
            )
        run.last_used = now
        self._runs.move_to_end(run_id)
        return run

    def _prune(self) -> None:
        now = self._clock()
        for run_id in [k for k, r in self._runs.items() if now - r.last_used > self.idle_seconds]:
            del self._runs[run_id]
