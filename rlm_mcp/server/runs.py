"""Continued rlm_complete runs: `run_id` hands a client back the REPL of its earlier run.

Every rlm_complete gets a server-minted `run_...` id (128 random bits). Passing it to a later
rlm_complete continues that run's `Conversation`: the same REPL, its variables, a recap of the
earlier questions and answers. An id works only for the tenant (bearer token) that started it and
expires after the session idle time unused. The root sandbox is a pool session keyed by the id,
so an idle continued run counts against the pool's limits and is closed by the pool like any
other; a continuation after that starts a fresh REPL, and the model is told so.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from rlm_mcp.conversation import Conversation
from rlm_mcp.errors import SessionExpiredError

__all__ = ["RUN_PREFIX", "ContinuedRun", "RunRegistry"]

RUN_PREFIX = "run_"
_RUN = re.compile(r"run_[0-9a-f]{32}")
#: How many continued runs the server remembers in all (the oldest unused are dropped first).
MAX_RUNS = 4096


@dataclass
class ContinuedRun:
    tenant: str | None
    conversation: Conversation
    last_used: float = field(default_factory=time.monotonic)


class RunRegistry:
    """run_id -> its conversation, per tenant, with idle expiry."""

    def __init__(
        self,
        idle_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        replicas: bool = False,
    ) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        #: One of several replicas (--stateless or a Ray cluster): a run lives on the one that
        #: started it, so an unknown id may be another replica's, and the error says so.
        self.replicas = replicas
        self._runs: OrderedDict[str, ContinuedRun] = OrderedDict()

    def mint(
        self, tenant: str | None, make: Callable[[str], Conversation]
    ) -> tuple[str, Conversation]:
        """A new run id for `tenant` and its conversation, made by `make(run_id)`."""
        self._prune()
        run_id = RUN_PREFIX + secrets.token_hex(16)
        conversation = make(run_id)
        self._runs[run_id] = ContinuedRun(tenant, conversation, self._clock())
        while len(self._runs) > MAX_RUNS:
            self._runs.popitem(last=False)
        return run_id, conversation

    def get(self, tenant: str | None, run_id: str) -> ContinuedRun:
        """The caller's run, marked used; unknown, expired and someone else's look the same."""
        run = self._runs.get(run_id) if _RUN.fullmatch(run_id) else None
        now = self._clock()
        if run is None or run.tenant != tenant or now - run.last_used > self.idle_seconds:
            if run is not None and run.tenant == tenant:
                del self._runs[run_id]
            elsewhere = (
                "; with several replicas a run continues only on the one that started it, and "
                "this call reached another (see docs/deployment.md)"
                if self.replicas
                else ""
            )
            raise SessionExpiredError(
                f"run_id {run_id[:48]!r} is unknown or expired (runs expire after "
                f"{self.idle_seconds:.0f}s unused and belong to the client that started them"
                f"{elsewhere}): call rlm_complete with handle or text to start a new run."
            )
        run.last_used = now
        self._runs.move_to_end(run_id)
        return run

    def _prune(self) -> None:
        now = self._clock()
        for run_id in [k for k, r in self._runs.items() if now - r.last_used > self.idle_seconds]:
            del self._runs[run_id]
