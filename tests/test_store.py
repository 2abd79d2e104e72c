"""ContextStore: round trips, dedupe, slices, decoding, eviction, persistence, crashes."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_mcp.errors import ContextNotFoundError, UnreadablePathError
from rlm_mcp.store import DOC_HEADER, INDEX_BYTES, ContextStore


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
        clock.now += 1
        c = s.load_text("c" * 100)
        clock.now += 120
        s.info(a.handle)  # touch a: b becomes least recently used
        assert s.evict() == [b.handle]
        assert {i.handle for i in s.list()} == {a.handle, c.handle}


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
