"""A session actor's first attach while its text downloads (`SessionActor._stream`), with a real
worker and a scripted download standing in for the bucket, so each failure lands at a chosen
moment: the download failing after every byte arrived, and the worker dying mid-read."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from rlm_mcp.cluster.actor import SessionActor
from rlm_mcp.errors import ContextDamagedError
from rlm_mcp.sandbox.session import SandboxLimits
from rlm_mcp.store.shared import Feed

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
DATA = b"0123456789abcdef\n" * (3 * MB // 17)


class ScriptedDownload:
    """`text_path` as a node's store does it on a miss: the file at its final size, filled in
    pieces in order, each reported to the feed; then it fails with `fail`, or lands."""

    def __init__(
        self,
        tmp: Path,
        *,
        fail: Exception | None = None,
        midway: Callable[[], None] | None = None,
    ) -> None:
        self.tmp, self.fail, self.midway = tmp, fail, midway

    def text_path(self, handle: str, feed: Feed | None = None) -> Path:
        assert feed is not None
        part = self.tmp / f"download-{handle}"
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, len(DATA))
            feed.opened(fd, len(DATA))
            step = len(DATA) // 6 + 1
            for at in range(0, len(DATA), step):
                os.pwrite(fd, DATA[at : at + step], at)
                feed.filled(min(len(DATA), at + step))
                time.sleep(0.01)
                if at and self.midway is not None:
                    self.midway()
                    self.midway = None
        finally:
            os.close(fd)
        if self.fail is not None:
            part.unlink()
            raise self.fail
        landed = self.tmp / f"landed-{handle}"
        part.rename(landed)
        return landed


def _actor(tmp: Path) -> SessionActor:
    return SessionActor(None, SandboxLimits(timeout=10), str(tmp / "node"), "", {}, 600)


async def test_a_streamed_first_attach_lands_where_a_restarted_worker_would_read_it(
    tmp_path: Path,
) -> None:
    actor = _actor(tmp_path)
    with anyio.fail_after(60):
        session = await actor._stream(ScriptedDownload(tmp_path), "ctx_a", ())
        try:
            r = await session.execute("print(len(context), context[:5])")
            assert r.output == f"{len(DATA)} 01234\n"
            assert session.context is not None and session.context.path == tmp_path / "landed-ctx_a"
        finally:
            await session.close()


async def test_a_download_that_fails_after_every_byte_leaves_the_worker_with_nothing(
    tmp_path: Path,
) -> None:
    actor = _actor(tmp_path)
    failing = ScriptedDownload(tmp_path, fail=ContextDamagedError("ctx_b", "it does not match"))
    with anyio.fail_after(60):
        with pytest.raises(ContextDamagedError):
            await actor._stream(failing, "ctx_b", ())
        session = actor._session
        assert session is not None
        try:
            r = await session.execute("print(repr(context[:5]))")
            assert r.status == "ok" and r.output == "''\n" and not r.reset, r
        finally:
            await session.close()


async def test_a_worker_that_dies_mid_read_gets_the_landed_text_once_the_download_ends(
    tmp_path: Path,
) -> None:
    actor = _actor(tmp_path)

    def kill_worker() -> None:  # once the worker is reading (it waits for the next piece)
        for _ in range(200):
            worker = actor._session._worker if actor._session is not None else None
            if worker is not None:
                break
            time.sleep(0.05)
        assert worker is not None
        time.sleep(0.3)
        os.kill(worker.process.pid, signal.SIGKILL)

    with anyio.fail_after(60):
        session = await actor._stream(ScriptedDownload(tmp_path, midway=kill_worker), "c", ())
        try:
            r = await session.execute("print(len(context), context[-4:-1])")
            assert r.status == "ok" and r.output == f"{len(DATA)} def\n", r
        finally:
            await session.close()
