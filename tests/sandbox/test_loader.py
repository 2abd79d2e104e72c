"""Reading a context into the worker: same text as a plain read, one full-size copy at most."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from rlm_mcp.errors import SandboxError
from rlm_mcp.sandbox import ContextSpec, SandboxLimits, SandboxSession, loader
from rlm_mcp.sandbox.worker import Executor

MB = 1024 * 1024


def test_an_ascii_file_reads_into_one_string_equal_to_a_plain_read(tmp_path: Path) -> None:
    path = tmp_path / "ascii.txt"
    text = "".join(f"line {i} needle\n" for i in range(300_000))  # several chunks, odd tail
    path.write_text(text)
    got = loader.read_text(str(path))
    assert got == text and len(got) == len(text) and got.isascii()
    assert hash(got) == hash(text)
    assert got.count("needle") == 300_000 and got.splitlines()[-1] == "line 299999 needle"


@pytest.mark.parametrize("where", [0, 5 * MB + 3])
def test_a_non_ascii_file_falls_back_to_an_ordinary_decode(tmp_path: Path, where: int) -> None:
    path = tmp_path / "utf8.txt"
    text = "a" * where + "\u00e9\u4e2d\U0001f600" + "b" * (2 * MB)
    path.write_text(text, encoding="utf-8")
    got = loader.read_text(str(path))
    assert got == text and not got.isascii()


def test_small_files_and_an_unavailable_fast_path_read_normally(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text("tiny \u00e9")
    assert loader.read_text(str(path)) == "tiny \u00e9"
    big = tmp_path / "big.txt"
    big.write_text("x" * (2 * MB))

    def refuse(n: int) -> tuple[str, int]:
        raise AssertionError("not called for a file that shrank")

    assert loader._read_ascii(str(big), 3 * MB, loader._ascii_allocator() or refuse) is None
    assert loader._read_ascii(str(big), 1 * MB, loader._ascii_allocator() or refuse) is None


def test_check_fits_names_the_limit_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "memory_headroom", lambda: (100 * MB, "the test limit"))
    loader.check_fits(50 * MB)
    loader.check_fits(120 * MB, freeable=50 * MB)
    with pytest.raises(loader.ContextTooLargeError, match="does not fit in the test limit") as e:
        loader.check_fits(120 * MB)
    assert "new session" in str(e.value)
    monkeypatch.setattr(loader, "memory_headroom", lambda: None)
    loader.check_fits(10**15)


def test_memory_headroom_reports_the_machine_or_the_worker_limit() -> None:
    room = loader.memory_headroom()
    assert room is not None and room[0] > 0 and "memory" in room[1]


def test_executor_refuses_a_context_that_does_not_fit_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("new context")
    ex = Executor(max_output_chars=100)
    ex.set_context(path=None, text="old", documents=None)
    monkeypatch.setattr(loader, "memory_headroom", lambda: (0, "no room"))
    with pytest.raises(loader.ContextTooLargeError):
        ex.set_context(path=str(path), text=None, documents=None)
    assert ex.context_intact and ex.ns["context"] == "old"


def test_executor_out_of_memory_while_reading_leaves_an_empty_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("new context")

    def boom(path: str, **_: object) -> str:
        raise MemoryError

    ex = Executor(max_output_chars=100)
    ex.set_context(path=None, text="old", documents=None)
    monkeypatch.setattr(loader, "read_text", boom)
    with pytest.raises(loader.ContextTooLargeError, match="context is now empty"):
        ex.set_context(path=str(path), text=None, documents=None)
    assert not ex.context_intact and ex.ns["context"] == ""


@pytest.mark.anyio
async def test_set_context_bigger_than_the_worker_limit_is_a_clear_error(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (160 * MB))
    limits = SandboxLimits(timeout=10, hard_timeout_grace=1.0, memory_mb=64)
    async with SandboxSession(context=ContextSpec(text="small"), limits=limits) as s:
        with anyio.fail_after(60):
            await s.execute("kept = 1")
            with pytest.raises(SandboxError) as err:
                await s.set_context(ContextSpec(path=big))
            r = await s.execute("print(kept, context)")
    message = str(err.value)
    assert "does not fit" in message and "memory_mb" in message and "MemoryError" not in message
    assert r.output == "1 small\n"
    assert s.context == ContextSpec(text="small")


@pytest.mark.anyio
async def test_reading_a_context_keeps_one_copy_of_it_in_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    path.write_bytes(b"0123456789abcdef\n" * (48 * MB // 17))
    size_kb = path.stat().st_size // 1024
    limits = SandboxLimits(timeout=10, hard_timeout_grace=1.0, memory_mb=256)
    with anyio.fail_after(60):
        async with SandboxSession(limits=limits) as empty:
            base_kb = await empty.peak_memory_kb()
        async with SandboxSession(context=ContextSpec(path=path), limits=limits) as s:
            peak_kb = await s.peak_memory_kb()
            r = await s.execute("print(len(context), context[:5])")
    assert r.output == f"{path.stat().st_size} 01234\n"
    assert peak_kb - base_kb < 1.3 * size_kb  # a bytes + str read peaks at 2x


def _grow(path: Path, data: bytes, pieces: int, *, whole: bool = True) -> tuple[int, Any]:
    """`path` at its final size with nothing in it yet, and a thread that writes `data` into
    it in `pieces` and reports each on a pipe (as a download does): the pipe's read end, and
    the thread, whose `sent_whole` is set just before it says the file is whole."""
    import os
    import threading
    import time

    with path.open("wb") as fh:
        fh.truncate(len(data))  # unwritten: reads as zeros until written
    read_end, write_end = os.pipe()
    step = -(-len(data) // pieces)
    sent_whole = threading.Event()

    def writer() -> None:
        with path.open("r+b") as fh:
            for at in range(0, len(data), step):
                time.sleep(0.02)  # the reader gets ahead of the writer
                fh.seek(at)
                fh.write(data[at : at + step])
                fh.flush()
                os.write(write_end, min(len(data), at + step).to_bytes(8, "big"))
        time.sleep(0.05)  # a whole file, not yet checked: the reader must still wait
        if whole:
            sent_whole.set()
            os.write(write_end, loader.READY_WHOLE.to_bytes(8, "big"))
        os.close(write_end)

    thread = threading.Thread(target=writer)
    thread.sent_whole = sent_whole  # type: ignore[attr-defined]
    thread.start()
    return read_end, thread


@pytest.mark.parametrize("text", ["ascii line of a growing file\n", "ligne accentuée é 東京\n"])
def test_a_growing_file_is_read_as_it_lands_and_returned_only_once_whole(
    tmp_path: Path, text: str
) -> None:
    import os

    data = (text * (3 * MB // len(text))).encode()
    path = tmp_path / "growing.txt"
    ready, thread = _grow(path, data, pieces=7)
    try:
        got = loader.read_text(str(path), growing=loader.Growing(ready))
        confirmed = thread.sent_whole.is_set()  # type: ignore[attr-defined]
    finally:
        thread.join()
        os.close(ready)
    assert confirmed  # it waited for the writer's word, not only for the last byte
    assert got == data.decode()  # never the zeros of a part not yet written


def test_a_growing_file_whose_writer_stops_before_whole_is_refused(tmp_path: Path) -> None:
    import os

    data = b"fully written but never confirmed\n" * (2 * MB // 34)
    path = tmp_path / "growing.txt"
    ready, thread = _grow(path, data, pieces=3, whole=False)
    try:
        with pytest.raises(OSError, match="download stopped before the text was whole"):
            loader.read_text(str(path), growing=loader.Growing(ready))
    finally:
        thread.join()
        os.close(ready)


@pytest.mark.anyio
async def test_a_session_reads_a_growing_context_and_refuses_one_left_unconfirmed(
    tmp_path: Path,
) -> None:
    import os

    data = b"0123456789abcdef\n" * (4 * MB // 17)
    limits = SandboxLimits(timeout=10, hard_timeout_grace=1.0)
    async with SandboxSession(limits=limits) as s:
        with anyio.fail_after(60):
            await s.execute("kept = 7")
            for name, whole in (("good.txt", True), ("bad.txt", False)):
                path = tmp_path / name
                ready, thread = _grow(path, data if whole else b"X" * len(data), 5, whole=whole)
                fd = os.open(path, os.O_RDONLY)
                try:
                    if whole:
                        await s.set_context(ContextSpec(handle="h"), growing=(fd, ready))
                        r = await s.execute("print(len(context), context[-17:-1], kept)")
                        assert r.output == f"{len(data)} 0123456789abcdef 7\n", r
                    else:
                        with pytest.raises(SandboxError, match="stopped before"):
                            await s.set_context(ContextSpec(handle="x"), growing=(fd, ready))
                        r = await s.execute("print(repr(context[:3]), kept)")
                        assert r.output == "'' 7\n", r  # nothing of it kept, nothing else lost
                finally:
                    await anyio.to_thread.run_sync(thread.join)
                    os.close(fd)
                    os.close(ready)


@pytest.mark.anyio
async def test_a_worker_killed_while_it_waits_for_a_growing_context_is_a_sandbox_error(
    tmp_path: Path,
) -> None:
    import os
    import signal

    path = tmp_path / "never.txt"
    path.write_bytes(b"a" * (2 * MB))
    ready, write_end = os.pipe()  # nothing is ever reported: the worker waits
    fd = os.open(path, os.O_RDONLY)
    async with SandboxSession(limits=SandboxLimits(timeout=10, hard_timeout_grace=1.0)) as s:
        with anyio.fail_after(60):
            await s.execute("kept = 1")
            assert s._worker is not None
            pid = s._worker.process.pid
            async with anyio.create_task_group() as tg:

                async def kill_soon() -> None:
                    await anyio.sleep(0.5)
                    os.kill(pid, signal.SIGKILL)

                tg.start_soon(kill_soon)
                with pytest.raises(SandboxError, match="died during a 'context' request"):
                    await s.set_context(ContextSpec(handle="h"), growing=(fd, ready))
            r = await s.execute("print(len(context), 'kept' in SHOW_VARS())")
    for end in (fd, ready, write_end):
        os.close(end)
    assert r.status == "ok" and r.output == "0 False\n", r  # a new worker, as it said
