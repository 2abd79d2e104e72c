"""ContextStore: round trips, dedupe, slices, decoding, eviction, persistence, crashes."""

from __future__ import annotations

import codecs
import errno
import hashlib
import multiprocessing
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_mcp.errors import (
    ContextError,
    ContextNotFoundError,
    InputTooLargeError,
    UnreadablePathError,
)
from rlm_mcp.store import DOC_HEADER, INDEX_BYTES, ContextStore
from rlm_mcp.store._ingest import KERNEL_COPY_MIN


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContextStore]:
    s = ContextStore(tmp_path / "store")
    yield s
    s.close()


def test_text_round_trips_with_stats(store: ContextStore) -> None:
    info = store.load_text("one\ntwo\nthree", name="t")
    assert info.handle.startswith("ctx_") and len(info.handle) == 16
    assert (info.chars, info.lines, info.name, info.source) == (13, 3, "t", "text")
    assert store.read(info.handle) == "one\ntwo\nthree"
    assert store.read("t", start=4, length=3) == "two"
    assert store.text_path(info.handle).read_text(encoding="utf-8") == "one\ntwo\nthree"


def test_same_text_twice_gives_same_handle_and_one_entry(store: ContextStore) -> None:
    a = store.load_text("same text")
    b = store.load_text("same text", name="alias")
    assert a.handle == b.handle
    assert len(store.list()) == 1
    assert store.info("alias").handle == a.handle


def test_char_slices_across_checkpoints_with_multibyte_text(store: ContextStore) -> None:
    text = "".join(chr(0x4E00 + i % 500) + ("\n" if i % 37 == 0 else "é😀") for i in range(90_000))
    info = store.load_text(text)
    assert info.chars == len(text) and info.bytes == len(text.encode("utf-8"))
    for start in (0, INDEX_BYTES - 3, INDEX_BYTES, 2 * INDEX_BYTES + 1, len(text) - 5):
        assert store.read(info.handle, start=start, length=10) == text[start : start + 10]
    assert store.read(info.handle, start=len(text) + 10, length=5) == ""
    assert "".join(store.iter_chunks(info.handle, chunk_chars=50_000)) == text


def test_line_slices_past_line_checkpoints(store: ContextStore) -> None:
    lines = [f"line {i} ü\n" for i in range(20_000)]
    info = store.load_text("".join(lines))
    assert info.lines == 20_000
    for start in (0, 4095, 4096, 4097, 12_345, 19_999):
        assert store.read_lines(info.handle, start=start, count=2) == "".join(
            lines[start : start + 2]
        )
    assert store.read_lines(info.handle, start=25_000, count=1) == ""


def test_file_round_trip_and_preview(store: ContextStore, tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("x" * 2000 + "END", encoding="utf-8")
    info = store.load_path(f)
    assert info.chars == 2003 and info.replaced == 0 and info.source == str(f.resolve())
    p = store.preview(info.handle, head=5, tail=3)
    assert p.startswith("xxxxx") and p.endswith("END") and "omitted" in p


def test_directory_loads_documents_and_skips_junk_binary_and_gitignored(
    store: ContextStore, tmp_path: Path
) -> None:
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("print('a')\n")
    (root / "b.md").write_text("# B")
    (root / "img.png").write_bytes(b"\x89PNG\x00\x00data")
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "node_modules" / "x" / "i.js").write_text("junk")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("built")
    (root / "secret.log").write_text("log")
    (root / ".gitignore").write_text("# c\nbuild/\n*.log\n")
    info = store.load_path(root)
    paths = [d.path for d in info.documents]
    assert paths == [".gitignore", "b.md", "src/a.py"]
    assert store.read_document(info.handle, "src/a.py") == "print('a')\n"
    assert store.read_document(info.handle, 1) == "# B"
    whole = store.read(info.handle)
    assert DOC_HEADER.format(path="b.md") in whole
    with pytest.raises(ContextNotFoundError):
        store.read_document(info.handle, "nope.py")


def test_glob_loads_matching_files(store: ContextStore, tmp_path: Path) -> None:
    for n in ("a.md", "b.md", "c.txt"):
        (tmp_path / n).write_text(n)
    info = store.load_path(str(tmp_path / "*.md"))
    assert [Path(d.path).name for d in info.documents] == ["a.md", "b.md"]


def test_latin1_and_binary_files_load_with_replacements(
    store: ContextStore, tmp_path: Path
) -> None:
    f = tmp_path / "latin.txt"
    f.write_bytes("café naïve".encode("latin-1"))
    info = store.load_path(f)
    assert info.replaced == 2
    assert store.read(info.handle) == "caf\ufffd na\ufffdve"
    b = tmp_path / "blob.bin"
    b.write_bytes(bytes(range(256)) * 4)
    binfo = store.load_path(b)
    assert binfo.replaced == 128 * 4 and binfo.chars == 256 * 4


def test_missing_path_raises_helpful_error(store: ContextStore, tmp_path: Path) -> None:
    with pytest.raises(UnreadablePathError, match="does not exist"):
        store.load_path(tmp_path / "nope.txt")
    with pytest.raises(UnreadablePathError, match="matched no files"):
        store.load_path(str(tmp_path / "*.zzz"))
    with pytest.raises(ContextNotFoundError):
        store.info("ctx_000000000000")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_system_paths_are_refused_even_through_symlinks_globs_and_directories(
    store: ContextStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A document can tell an agent to load /proc/self/environ: the server's own environment,
    # which holds the API keys its client config gave it.
    canary = "canary-4d1f-environ"
    monkeypatch.setenv("RLM_TEST_CANARY", canary)
    for target in ("/proc/self/environ", "/proc/self/status", "/dev/zero", "/dev/null"):
        with pytest.raises(UnreadablePathError, match="under /proc, /sys or /dev"):
            store.load_path(target)
    (tmp_path / "innocent.txt").symlink_to("/proc/self/environ")
    with pytest.raises(UnreadablePathError, match=r"links to\) a path under /proc") as err:
        store.load_path(tmp_path / "innocent.txt")
    assert "/proc/self" not in str(err.value)  # the link's target is never named
    with pytest.raises(UnreadablePathError, match="matched no files"):
        store.load_path("/proc/self/env*")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("fine\n")
    (docs / "b.txt").symlink_to("/proc/self/environ")
    info = store.load_path(docs)
    assert [d.path for d in info.documents] == ["a.txt"]
    (tmp_path / "ok.txt").write_text("also fine\n")
    globbed = store.load_path(str(tmp_path / "*.txt"))  # innocent.txt matches and is skipped
    assert [d.path for d in globbed.documents] == [str(tmp_path / "ok.txt")]
    assert canary not in store.read(globbed.handle) + store.read(info.handle)


def test_devices_pipes_and_sockets_are_refused_clearly(store: ContextStore, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UnreadablePathError, match="device, pipe or socket"):
        store.load_path(fifo)  # would block forever in open() if it were read


def test_delete_removes_context_and_aliases(store: ContextStore) -> None:
    info = store.load_text("bye", name="n")
    assert store.delete("n") is True
    assert store.delete(info.handle) is False
    with pytest.raises(ContextNotFoundError):
        store.read(info.handle)
    with pytest.raises(ContextNotFoundError):
        store.info("n")


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_evict_by_size_drops_least_recently_used(tmp_path: Path) -> None:
    clock = FakeClock()
    with ContextStore(tmp_path / "s", max_bytes=250, clock=clock) as s:
        a = s.load_text("a" * 100)
        clock.now += 1
        b = s.load_text("b" * 100)
        clock.now += 120
        s.info(a.handle)  # touch a: b becomes least recently used
        c = s.load_text("c" * 100)  # every load evicts down to the cap, sparing what it loaded
        assert {i.handle for i in s.list()} == {a.handle, c.handle}
        assert b.handle not in {i.handle for i in s.list()}
        assert s.evict() == []


def test_evict_by_age(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s", max_age_days=1.0) as s:
        a = s.load_text("old")
        assert s.evict() == []
        assert s.evict(now=time.time() + 2 * 86400) == [a.handle]
        assert s.list() == []


def test_max_age_zero_disables_age_eviction(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s", max_age_days=0) as s:
        s.load_text("kept")
        assert s.evict(now=time.time() + 1e9) == []


def test_store_persists_across_new_objects(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s") as s:
        info = s.load_text("keep me", name="k")
    with ContextStore(tmp_path / "s") as s2:
        assert s2.read("k") == "keep me"
        assert s2.info(info.handle).chars == 7


def test_crash_during_ingest_leaves_nothing_visible(store: ContextStore, tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    f.write_text("z" * 50_000)
    s = ContextStore(store.directory, chunk_bytes=1000)

    def boom(done: int, total: int | None) -> None:
        if done > 10_000:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        s.load_path(f, name="partial", progress=boom)
    s.close()
    with ContextStore(store.directory) as again:
        assert again.list() == []
        with pytest.raises(ContextNotFoundError):
            again.info("partial")
    assert list((store.directory / "tmp").iterdir()) == []


def _load_many(directory: str, worker: int) -> None:
    with ContextStore(directory) as s:
        for i in range(10):
            s.load_text(f"shared {i}\n" * 100)
            s.load_text(f"worker {worker} item {i}\n" * 100, name=f"w{worker}-{i}")


def test_allowed_roots_confine_loads_through_symlinks_globs_and_directories(
    tmp_path: Path,
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "secrets"
    allowed.mkdir()
    outside.mkdir()
    (outside / "key.txt").write_text("sk-canary-outside\n")
    (allowed / "doc.txt").write_text("allowed text\n")
    (allowed / "sneaky.txt").symlink_to(outside / "key.txt")
    (allowed / "sub").mkdir()
    (allowed / "sub" / "a.txt").write_text("inner\n")
    with ContextStore(tmp_path / "store", allowed_roots=[allowed]) as store:
        assert store.read(store.load_path(allowed / "doc.txt").handle) == "allowed text\n"
        # outside, existing or not, is refused without saying whether it exists
        for target in (outside / "key.txt", outside / "nope.txt", outside, "~/.ssh/id_rsa"):
            with pytest.raises(UnreadablePathError, match="RLM_MCP_ALLOWED_PATHS"):
                store.load_path(target)
        with pytest.raises(UnreadablePathError, match=r"links to\) a path outside") as err:
            store.load_path(allowed / "sneaky.txt")
        assert "secrets" not in str(err.value)  # the link's target is never named
        with pytest.raises(UnreadablePathError, match="outside the folders"):
            store.load_path(allowed / ".." / "secrets" / "key.txt")
        walked = store.load_path(allowed)  # the link inside the folder is skipped
        assert [d.path for d in walked.documents] == ["doc.txt", "sub/a.txt"]
        globbed = store.load_path(str(allowed / "**" / "*.txt"))
        assert sorted(Path(d.path).name for d in globbed.documents) == ["a.txt", "doc.txt"]
        with pytest.raises(UnreadablePathError, match="matched no files"):  # searches outside
            store.load_path(str(tmp_path / "**" / "*.txt"))
        for info in (walked, globbed):
            assert "canary" not in store.read(info.handle)
        with pytest.raises(UnreadablePathError, match="matched no files"):
            store.load_path(str(outside / "*.txt"))
        assert store.load_text("text is never confined").chars == 22


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    d = str(tmp_path / "shared")
    ContextStore(d).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_load_many, args=(d, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with ContextStore(d) as s:
        assert len(s.list()) == 30
        assert s.read("w1-3") == "worker 1 item 3\n" * 100


def test_evict_removes_orphan_text_left_by_a_crash_between_text_and_metadata(
    store: ContextStore,
) -> None:
    info = store.load_text("orphan soon")
    store._cache.delete(f"meta:{info.handle}")  # as if the process died before publishing
    store._cache.set(f"pending:{info.handle}", time.time())
    assert store.evict() == [] and f"text:{info.handle}" in store._cache  # too fresh: maybe live
    store.evict(now=time.time() + 2 * 3600)
    assert f"text:{info.handle}" not in store._cache
    assert store.list() == []


# -- exact offsets on multi-byte input, whatever the chunk and piece edges -----------------------


def _tricky_bytes() -> bytes:
    """Emoji, CJK, CRLF and invalid bytes, with sequences straddling piece and chunk edges."""
    unit = "a😀b東京\r\nçé ".encode()
    parts = [unit * 30_000]  # ~0.5 MB of valid multi-byte text with CRLF lines
    parts.append(b"\xff\xfe latin-1 caf\xe9 \xc3(\xe2\x82 broken\n")  # invalid + truncated
    parts.append(("línea 行\n" * 40_000).encode())
    data = b"".join(parts)
    # put a 4-byte emoji across every piece edge, and invalid bytes right at a few of them
    out = bytearray(data)
    for k in range(1, len(out) // INDEX_BYTES):
        edge = k * INDEX_BYTES
        out[edge - 2 : edge + 2] = "😀".encode() if k % 3 else b"\xf0\x9f\xff\n"
    return bytes(out) + "😀".encode()[:3]  # ends in a truncated emoji


def _replaced_reference(data: bytes) -> tuple[str, int]:
    bad = 0
    text = []
    dec = codecs_decoder()
    for i in range(0, len(data), 1000):
        text.append(dec.decode(data[i : i + 1000]))
    text.append(dec.decode(b"", final=True))
    whole = "".join(text)
    assert whole == data.decode("utf-8", errors="replace")
    # each replacement char stands for 1-3 bytes; count them like the store does
    for exc_range in _error_spans(data):
        bad += exc_range
    return whole, bad


def codecs_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _error_spans(data: bytes) -> Iterator[int]:
    pos = 0
    while pos < len(data):
        try:
            data[pos:].decode("utf-8")
            return
        except UnicodeDecodeError as exc:
            yield exc.end - exc.start
            pos += exc.end


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "write"])
@pytest.mark.parametrize("chunk_bytes", [4 * INDEX_BYTES, 4 * INDEX_BYTES + 1, 4 * 1024 * 1024])
def test_file_with_emoji_cjk_crlf_and_invalid_bytes_reads_back_exactly(
    tmp_path: Path, chunk_bytes: int, kernel_copy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kernel_copy:
        monkeypatch.setattr("rlm_mcp.store._ingest.KERNEL_COPY_MIN", 0)
    else:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    data = _tricky_bytes()
    ref, bad = _replaced_reference(data)
    f = tmp_path / "tricky.txt"
    f.write_bytes(data)
    with ContextStore(tmp_path / "s", chunk_bytes=chunk_bytes) as s:
        info = s.load_path(f)
        assert (info.chars, info.replaced) == (len(ref), bad)
        assert info.bytes == len(ref.encode("utf-8"))
        assert info.lines == ref.count("\n") + (0 if ref.endswith("\n") else 1)
        assert s.text_path(info.handle).read_bytes() == ref.encode("utf-8")
        assert info.handle == "ctx_" + hashlib.sha256(ref.encode("utf-8")).hexdigest()[:12]
        starts = [0, 1, len(ref) - 1, len(ref) - 7]
        starts += [k * 21_841 + d for k in range(1, len(ref) // 21_841) for d in (-1, 0, 1)]
        for start in starts:
            assert s.read(info.handle, start=start, length=9) == ref[start : start + 9], start
        lines = ref.split("\n")
        for n in (0, 1, 4095, 4096, 29_999, 30_000, 30_001, 50_000, len(lines) - 2, len(lines) - 1):
            want = "\n".join(lines[n : n + 2]) + ("\n" if n + 2 < len(lines) else "")
            assert s.read_lines(info.handle, start=n, count=2) == want, n
        assert "".join(s.iter_chunks(info.handle, chunk_chars=77_777)) == ref
        # the repaired text, loaded as a string, is the same content: the same handle
        assert s.load_text(ref).handle == info.handle


def test_a_truncated_character_at_a_file_end_does_not_merge_with_the_next_document(
    store: ContextStore, tmp_path: Path
) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.txt").write_bytes("end 😀".encode()[:-2])  # emoji cut after 2 of 4 bytes
    (root / "b.txt").write_bytes(b"\x9f\x98\x80 next\n")  # its missing bytes start the next file
    info = store.load_path(root)
    assert store.read_document(info.handle, "a.txt") == "end \ufffd"
    assert store.read_document(info.handle, "b.txt") == "\ufffd\ufffd\ufffd next\n"
    assert info.replaced == 2 + 3
    assert [d.lines for d in info.documents] == [1, 1]


def test_lone_surrogates_in_a_string_are_stored_as_replacement_characters(
    store: ContextStore,
) -> None:
    info = store.load_text("ok \ud800 ok")
    assert store.read(info.handle) == "ok \ufffd\ufffd\ufffd ok"
    assert info.replaced == 3


def test_stores_from_before_the_separate_index_key_still_read(tmp_path: Path) -> None:
    text = "".join(f"{i} 東京\n" for i in range(30_000))
    with ContextStore(tmp_path / "s") as s:
        info = s.load_text(text)
        idx = s._index(s._meta(info.handle))
        meta = s._meta(info.handle)
        meta["char_cp"] = list(zip(idx.chars, idx.char_bytes, strict=True))
        meta["line_cp"] = list(zip(idx.lines, idx.line_bytes, strict=True))
        s._cache.set(f"meta:{info.handle}", meta)
        s._cache.delete(f"index:{info.handle}")
    with ContextStore(tmp_path / "s") as s2:
        assert s2.read(info.handle, start=200_001, length=20) == text[200_001:200_021]
        assert s2.read_lines(info.handle, start=20_000, count=1) == "20000 東京\n"


# -- caps: one context's size, the free disk space ------------------------------------------------


def test_a_text_over_the_context_size_cap_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s", max_context_bytes=100) as s:
        with pytest.raises(InputTooLargeError, match="RLM_MCP_MAX_CONTEXT_BYTES"):
            s.load_text("x" * 101)
        f = tmp_path / "big.txt"
        f.write_text("y" * 150)
        with pytest.raises(InputTooLargeError, match="150 bytes, over the 100-byte limit"):
            s.load_path(f)
        assert s.load_text("x" * 100).bytes == 100  # exactly the cap is fine
        assert len(s.list()) == 1
        assert list((s.directory / "tmp").iterdir()) == []


def test_the_cap_also_counts_bytes_that_grow_when_replaced(tmp_path: Path) -> None:
    f = tmp_path / "binary.bin"
    f.write_bytes(b"\xff" * 90)  # 90 bytes in, 270 out (each becomes a 3-byte U+FFFD)
    with ContextStore(tmp_path / "s", max_context_bytes=100) as s:
        with pytest.raises(InputTooLargeError, match="over the 100-byte limit"):
            s.load_path(f)
        assert s.list() == [] and list((s.directory / "tmp").iterdir()) == []


def test_zero_means_no_context_size_cap(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s", max_context_bytes=0) as s:
        assert s.load_text("z" * 1000).chars == 1000


def test_a_load_that_would_not_fit_on_the_disk_fails_before_writing(
    store: ContextStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.txt"
    f.write_text("q" * 10_000)
    fake = shutil._ntuple_diskusage(10**12, 10**12 - 5000, 5000)  # type: ignore[attr-defined]
    monkeypatch.setattr("rlm_mcp.store.shutil.disk_usage", lambda _p: fake)
    with pytest.raises(InputTooLargeError, match=r"Not enough free disk space.*RLM_MCP_HOME"):
        store.load_path(f)
    assert store.list() == [] and list((store.directory / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("err", "raised", "match"),
    [
        (errno.ENOSPC, InputTooLargeError, "filled up"),
        (errno.EIO, ContextError, "failed: .*Check the disk"),
    ],
)
def test_a_write_error_mid_load_is_a_clear_error_and_the_store_stays_readable(
    store: ContextStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    raised: type[Exception],
    match: str,
) -> None:
    kept = store.load_text("kept")
    f = tmp_path / "a.txt"
    f.write_text("w" * 3_000_000)

    def failing_write(*args: object) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr("rlm_mcp.store._ingest._write_all", failing_write)
    monkeypatch.setattr("rlm_mcp.store._ingest.os.copy_file_range", failing_write)
    with pytest.raises(raised, match=match):
        store.load_path(f)
    assert [i.handle for i in store.list()] == [kept.handle]
    assert store.read(kept.handle) == "kept"
    assert list((store.directory / "tmp").iterdir()) == []


# -- last-used time ----------------------------------------------------------------------------


def test_info_rewrites_metadata_at_most_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    with ContextStore(tmp_path / "s", clock=clock) as s:
        info = s.load_text("used")
        writes: list[str] = []
        real_set = s._cache.set

        def counting_set(key: str, *args: object, **kwargs: object) -> object:
            writes.append(key)
            return real_set(key, *args, **kwargs)

        monkeypatch.setattr(s._cache, "set", counting_set)
        clock.now += 30
        for _ in range(5):
            assert s.info(info.handle).last_used == info.last_used
        s.read(info.handle)
        assert writes == []
        clock.now += 31
        assert s.info(info.handle).last_used == clock.now
        assert writes == [f"meta:{info.handle}"]


# -- another process during a load, and a kill -9 in the middle of one ---------------------------

_LOADER = r"""
import sys
from rlm_mcp.store import ContextStore

store_dir, path, stage = sys.argv[1], sys.argv[2], sys.argv[3]
s = ContextStore(store_dir, chunk_bytes=256 * 1024)

def pause(what):
    print(what, flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(3)

if stage == "publish":  # stop after the text is in, right before the metadata makes it visible
    real_set = s._cache.set
    def set_then_pause(key, *args, **kwargs):
        if isinstance(key, str) and key.startswith("meta:"):
            pause("paused")
        return real_set(key, *args, **kwargs)
    s._cache.set = set_then_pause
    progress = None
else:  # stop after the first chunk has been read
    seen = []
    def progress(done, total):
        if not seen:
            seen.append(done)
            pause("paused")

info = s.load_path(path, name="big", progress=progress)
print(info.handle, flush=True)
s.close()
"""


class Loader:
    """A child process loading `path`, paused at `stage` until told to go (or killed)."""

    def __init__(self, store_dir: Path, path: Path, stage: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOADER, str(store_dir), str(path), stage],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the loader did not answer in time"
        return self.proc.stdout.readline().strip()

    def go(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        handle = self.line()
        assert self.proc.wait(timeout=60) == 0
        self._close()
        return handle

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._close()

    def _close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _big_file(tmp_path: Path) -> tuple[Path, str]:
    text = "".join(f"row {i}: naïve café 東京 😀\n" for i in range(60_000))  # ~2 MB, 8 chunks
    f = tmp_path / "big.txt"
    f.write_text(text, encoding="utf-8")
    return f, text


def _assert_whole(s: ContextStore, handle: str, text: str) -> None:
    info = s.info(handle)
    assert (info.chars, info.lines, info.name) == (len(text), 60_000, "big")
    assert s.read(handle) == text
    assert s.read_lines(handle, start=59_999, count=1) == text.splitlines(keepends=True)[-1]


@pytest.mark.parametrize("stage", ["reading", "publish"])
def test_another_process_sees_nothing_or_the_whole_context_never_part(
    tmp_path: Path, stage: str
) -> None:
    f, text = _big_file(tmp_path)
    d = tmp_path / "shared"
    with ContextStore(d) as s:
        before = s.load_text("earlier context")
        loader = Loader(d, f, stage)
        try:
            assert loader.line() == "paused"
            with ContextStore(d) as other:  # a second process's view, opened mid-load
                assert [i.handle for i in other.list()] == [before.handle]
                with pytest.raises(ContextNotFoundError):
                    other.info("big")
                assert other.evict() == []  # a live load's text is fresh: not an orphan
            handle = loader.go()
        finally:
            if loader.proc.poll() is None:
                loader.kill()
        assert {i.handle for i in s.list()} == {before.handle, handle}
        _assert_whole(s, handle, text)
        assert list((d / "tmp").iterdir()) == []


@pytest.mark.parametrize("stage", ["reading", "publish"])
def test_kill_9_mid_load_keeps_the_store_readable_and_earlier_contexts_intact(
    tmp_path: Path, stage: str
) -> None:
    f, text = _big_file(tmp_path)
    d = tmp_path / "shared"
    with ContextStore(d) as s:
        earlier = [s.load_text(f"context {i}\n" * 1000, name=f"c{i}") for i in range(3)]
    loader = Loader(d, f, stage)
    assert loader.line() == "paused"
    loader.kill()
    with ContextStore(d) as s:
        assert [i.handle for i in s.list()] == [e.handle for e in earlier]
        for i, e in enumerate(earlier):
            assert s.read(f"c{i}") == f"context {i}\n" * 1000 and s.info(e.handle).name == f"c{i}"
        with pytest.raises(ContextNotFoundError):
            s.info("big")
        again = s.load_path(f, name="big")  # loading it again works (reusing a whole orphan)
        _assert_whole(s, again.handle, text)
        s.evict(now=time.time() + 2 * 3600)  # what the crash left behind goes
        assert list((d / "tmp").iterdir()) == []
        kinds = {k.split(":")[0] if isinstance(k, str) else k[0] for k in s._cache.iterkeys()}
        assert kinds == {"meta", "text", "index", "name", "own"}
        _assert_whole(s, again.handle, text)


# -- kernel copies of big files: fallbacks and a source that changes mid-load ----------------------


def _mixed_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = ("ascii line\n" * 50_000 + "東京 😀\n" * 50_000).encode() + b"\xff bad\n" * 10
    f = tmp_path / "mixed.txt"
    f.write_bytes(data)
    assert len(data) >= KERNEL_COPY_MIN
    return f, data


@pytest.mark.parametrize("failure", ["unsupported", "source_shrank"])
def test_when_the_kernel_copy_cannot_copy_the_buffer_is_written_instead(
    store: ContextStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    f, data = _mixed_file(tmp_path)
    calls: list[int] = []

    def fake_copy(src: int, dst: int, count: int, offset: int | None = None) -> int:
        calls.append(count)
        if failure == "unsupported":
            raise OSError(errno.EXDEV, "cross-device")
        return 0  # as if the file were truncated after it was read

    monkeypatch.setattr("rlm_mcp.store._ingest.os.copy_file_range", fake_copy)
    info = store.load_path(f)
    want = data.decode("utf-8", errors="replace")
    assert calls and store.read(info.handle) == want
    assert store.text_path(info.handle).read_bytes() == want.encode()


def test_a_file_appended_to_while_loading_loads_a_consistent_prefix(
    store: ContextStore, tmp_path: Path
) -> None:
    f, data = _mixed_file(tmp_path)

    appended: list[int] = []

    def append(done: int, total: int | None) -> None:
        if len(appended) < 3:  # a log that grows a little while it is read
            appended.append(done)
            with open(f, "ab") as fh:
                fh.write(b"appended\n")

    info = store.load_path(f, progress=append)
    final = f.read_bytes()
    text = store.read(info.handle)
    assert info.bytes >= len(data.decode("utf-8", errors="replace").encode())
    assert text == final.decode("utf-8", errors="replace")[: len(text)]
    assert info.handle == "ctx_" + hashlib.sha256(text.encode()).hexdigest()[:12]


def test_a_file_rewritten_in_place_while_loading_is_refused(
    store: ContextStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f, _ = _mixed_file(tmp_path)
    real_copy = os.copy_file_range

    def rewrite_then_copy(src: int, dst: int, count: int, offset: int | None = None) -> int:
        with open(f, "r+b") as fh:  # someone rewrites bytes that were already read and checked
            fh.seek(offset or 0)
            fh.write(b"X" * min(count, 100))
        return real_copy(src, dst, count, offset)

    monkeypatch.setattr("rlm_mcp.store._ingest.os.copy_file_range", rewrite_then_copy)
    with pytest.raises(UnreadablePathError, match="rewritten while it was being loaded"):
        store.load_path(f)
    assert store.list() == [] and list((store.directory / "tmp").iterdir()) == []


def test_loads_shorten_the_gil_switch_interval_only_while_feeding(tmp_path: Path) -> None:
    # the helper thread (hash, copy) must not wait 5 ms for the GIL twice per chunk; the process
    # setting is put back after every load, also when loads overlap or one fails
    import threading

    original = sys.getswitchinterval()
    seen: list[float] = []
    big = tmp_path / "big.txt"
    big.write_text("line of text\n" * 200_000)
    with ContextStore(tmp_path / "s", chunk_bytes=256 * 1024) as store:
        store.load_path(big, progress=lambda done, total: seen.append(sys.getswitchinterval()))
        assert seen and max(seen) <= 0.0005 < original
        assert sys.getswitchinterval() == original
        errors: list[BaseException] = []

        def load(i: int) -> None:
            try:
                store.load_text(f"thread {i}\n" * 300_000)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and sys.getswitchinterval() == original

        def stop(done: int, total: int | None) -> None:
            raise KeyboardInterrupt  # a load that fails mid-feed

        with pytest.raises(KeyboardInterrupt):
            store.load_path(big, progress=stop)
        assert sys.getswitchinterval() == original
