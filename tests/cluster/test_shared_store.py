"""The shared store: two replicas (two ContextStores, each with its own local cache) over one
real SeaweedFS bucket."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pytest

from rlm_mcp.errors import ConfigError, ContextDamagedError, ContextNotFoundError, NameTakenError
from rlm_mcp.store import ContextStore
from rlm_mcp.store.shared import key_path, path_key, s3_options
from rlm_mcp.testing.infra import Bucket


@pytest.mark.parametrize(
    "key",
    [
        "meta:ctx_0123456789ab",
        "name:rapport été/2026 ü",
        "name:a:b:c",
        ("own", "", "ctx_0123456789ab"),
        ("tname", "alice", "../../etc"),
        ("pin", "ctx_1", "f00d"),
        ("rec", "session", "rlm-sess-1"),
    ],
)
def test_every_key_has_its_own_object_path_and_comes_back(key: object) -> None:
    path = key_path(key)
    assert ".." not in path.split("/") and "//" not in path
    assert path_key(path) == key


def test_string_and_tuple_keys_never_share_a_path() -> None:
    assert key_path("own:x") != key_path(("own", "x"))
    assert key_path("name:a/b") != key_path("name:a_b")


def test_s3_options_come_from_the_standard_variables_only() -> None:
    env = {"AWS_ENDPOINT_URL": "http://h:1", "AWS_ACCESS_KEY_ID": "a", "OTHER": "x"}
    assert s3_options(env) == {"endpoint_url": "http://h:1", "access_key_id": "a"}


def test_a_bad_store_url_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="s3://BUCKET/PREFIX"):
        ContextStore(tmp_path, shared="https://example.com/x")


def _pair(bucket: Bucket, tmp_path: Path, **kw: object) -> tuple[ContextStore, ContextStore]:
    url = bucket.url("t-" + secrets.token_hex(6))
    a = ContextStore(tmp_path / "a", shared=url, shared_options=bucket.options, **kw)  # type: ignore[arg-type]
    b = ContextStore(tmp_path / "b", shared=url, shared_options=bucket.options, **kw)  # type: ignore[arg-type]
    return a, b


def test_a_context_loaded_on_one_replica_is_read_on_another(bucket: Bucket, tmp_path: Path) -> None:
    a, b = _pair(bucket, tmp_path)
    text = "".join(f"line {i} é\n" for i in range(20_000))
    info = a.load_text(text, name="log")
    assert b.info("log").handle == info.handle
    assert b.read_lines(info.handle, start=19_999, count=1) == "line 19999 é\n"
    assert b.text_path(info.handle).read_text() == text  # whole, through B's local cache
    assert b._cache.downloaded_bytes > 0  # type: ignore[attr-defined]
    before = b._cache.uploaded_bytes  # type: ignore[attr-defined]
    again = b.load_text(text)  # the same bytes: nothing is uploaded twice
    assert again.handle == info.handle
    assert b._cache.uploaded_bytes == before  # type: ignore[attr-defined]


def test_two_replicas_naming_at_once_never_lose_a_write(bucket: Bucket, tmp_path: Path) -> None:
    a, b = _pair(bucket, tmp_path)
    for round_ in range(6):
        name = f"race-{round_}"
        start = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def load(
            store: ContextStore,
            who: str,
            name: str = name,
            start: threading.Barrier = start,
            outcome: dict[str, object] = outcome,
            text: str = f"round {round_}",
        ) -> None:
            start.wait()
            try:
                outcome[who] = store.load_text(f"{who} {text}", name=name).handle
            except NameTakenError as exc:
                outcome[who] = exc

        threads = [threading.Thread(target=load, args=(s, w)) for s, w in ((a, "A"), (b, "B"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [v for v in outcome.values() if isinstance(v, str)]
        lost = [v for v in outcome.values() if isinstance(v, NameTakenError)]
        assert len(won) == 1 and len(lost) == 1, outcome  # exactly one owns the name
        assert a.info(name).handle == b.info(name).handle == won[0]


def test_delete_and_eviction_on_one_replica_hold_on_every_replica(
    bucket: Bucket, tmp_path: Path
) -> None:
    now = [1_000_000.0]
    a, b = _pair(bucket, tmp_path, clock=lambda: now[0], max_age_days=1)
    gone = a.load_text("to be deleted")
    old = a.load_text("to be evicted")
    b.text_path(gone.handle)  # B holds local copies of both
    b.text_path(old.handle)
    assert b.delete(gone.handle)
    with pytest.raises(ContextNotFoundError):
        a.info(gone.handle)
    now[0] += 2 * 86400
    fresh = b.load_text("fresh")  # its load runs eviction: the old one goes for everyone
    with pytest.raises(ContextNotFoundError):
        a.info(old.handle)
    assert [i.handle for i in a.list()] == [fresh.handle]
    a.evict()  # and a replica's eviction also drops its local copies of what went elsewhere
    b.evict()
    local = {k for k in b._cache.local.iterkeys() if isinstance(k, str)}  # type: ignore[attr-defined]
    assert not any(gone.handle in k or old.handle in k for k in local)


def test_a_text_changed_in_the_bucket_is_refused_set_aside_and_healed_by_a_load(
    bucket: Bucket, tmp_path: Path
) -> None:
    import obstore

    url = bucket.url("t-" + secrets.token_hex(6))
    a, b, c = (ContextStore(tmp_path / n, shared=url, shared_options=bucket.options) for n in "abc")
    text = "the real text\n" * 100
    info = a.load_text(text)
    objects = b._cache.objects  # type: ignore[attr-defined]
    path = key_path(f"text:{info.handle}")
    obstore.put(objects, path, b"tampered text\n" * 100)  # same size, stored whole
    with pytest.raises(ContextDamagedError, match="does not match its content hash"):
        b.text_path(info.handle)
    assert not list(b._cache.local.iterkeys())  # type: ignore[attr-defined]  # nothing cached
    # set aside, so the same text loaded again (on any replica) stores a good copy
    b.load_text(text)
    assert b.text_path(info.handle).read_text() == text
    assert c.text_path(info.handle).read_text() == text
    a.delete(info.handle)  # and the set-aside copy goes with the context
    left = [k for k in b._cache.iterkeys() if isinstance(k, tuple)]  # type: ignore[attr-defined]
    assert not [k for k in left if k[0] == "damaged"]


def test_a_damaged_frame_is_refused_and_nothing_half_written_is_kept(
    bucket: Bucket, tmp_path: Path
) -> None:
    import obstore

    a, b = _pair(bucket, tmp_path)
    info = a.load_text("".join(f"record {i} ü\n" for i in range(50_000)))
    objects = b._cache.objects  # type: ignore[attr-defined]
    path = key_path(f"text:{info.handle}")
    stored = bytearray(bytes(obstore.get(objects, path).bytes()))
    stored[100] ^= 0xFF  # one byte inside the first (compressed) frame
    obstore.put(objects, path, bytes(stored))
    with pytest.raises(ContextDamagedError, match="damaged or was changed"):
        b.text_path(info.handle)
    assert not list((tmp_path / "b").rglob("download-*"))


def test_a_full_disk_while_caching_a_download_is_a_clear_error_and_keeps_nothing(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from rlm_mcp.errors import InputTooLargeError

    a, b = _pair(bucket, tmp_path)
    info = a.load_text("a line of text\n" * 10_000)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", full)
        with pytest.raises(InputTooLargeError, match="No room on this machine's disk"):
            b.text_path(info.handle)
    assert not list((tmp_path / "b").rglob("download-*"))
    assert b.text_path(info.handle).read_text() == "a line of text\n" * 10_000  # room again


def test_texts_are_stored_compressed_in_frames_and_read_back_exactly(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obstore

    from rlm_mcp.store import _frames

    # many frames, split inside characters, each mapped from an offset off a page boundary
    monkeypatch.setattr(_frames, "FRAME_BYTES", 5000)
    a, b = _pair(bucket, tmp_path)
    text = "".join(f"{i:06d} 東京 ü naïve {i * 7919 % 1000}\n" for i in range(20_000))
    info = a.load_text(text)
    objects = b._cache.objects  # type: ignore[attr-defined]
    path = key_path(f"text:{info.handle}")
    size = obstore.head(objects, path)["size"]
    assert size < info.bytes / 2  # stored compressed
    frames = _frames.layout(
        size, lambda s, e: bytes(obstore.get_range(objects, path, start=s, end=e))
    )
    assert frames is not None and len(frames) == -(-info.bytes // 5000)
    assert b.text_path(info.handle).read_bytes() == text.encode()
    assert b._cache.downloaded_bytes < info.bytes  # type: ignore[attr-defined]


def test_a_text_stored_whole_before_frames_is_still_read(bucket: Bucket, tmp_path: Path) -> None:
    import hashlib

    import obstore

    a, b = _pair(bucket, tmp_path)
    text = "written by an earlier version é\n" * 1000
    info = a.load_text(text)
    objects = b._cache.objects  # type: ignore[attr-defined]
    assert hashlib.sha256(text.encode()).hexdigest().startswith(info.handle[4:])
    obstore.put(objects, key_path(f"text:{info.handle}"), text.encode())  # no trailer
    assert b.text_path(info.handle).read_text() == text


def test_tenants_stay_apart_across_replicas(bucket: Bucket, tmp_path: Path) -> None:
    a, b = _pair(bucket, tmp_path)
    alice = a.for_tenant("alice").load_text("alice's notes", name="notes")
    assert b.for_tenant("alice").info("notes").handle == alice.handle
    with pytest.raises(ContextNotFoundError):
        b.for_tenant("bob").info("notes")
    with pytest.raises(ContextNotFoundError):
        b.for_tenant("bob").info(alice.handle)


def test_a_large_load_goes_up_in_parts_and_comes_back_whole(bucket: Bucket, tmp_path: Path) -> None:
    from rlm_mcp.store import shared

    a, b = _pair(bucket, tmp_path)
    src = tmp_path / "big.txt"
    line = "0123456789 abcdefghij é\n"
    with src.open("w") as fh:
        for _ in range(40 * 1024 * 1024 // len(line.encode())):
            fh.write(line)
    info = a.load_path(src)
    assert info.bytes > 2 * shared.PART_BYTES  # more than two parts
    assert b.text_path(info.handle).stat().st_size == src.stat().st_size
    assert b.read(info.handle, start=info.chars - len(line), length=len(line)) == line


def _dead_endpoint() -> str:
    from rlm_mcp.testing.infra import free_port

    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_an_unreachable_bucket_is_one_clear_error_in_seconds(tmp_path: Path) -> None:
    import time

    from rlm_mcp.errors import StoreUnavailableError

    options = {"endpoint_url": _dead_endpoint(), "access_key_id": "k", "secret_access_key": "s"}
    store = ContextStore(tmp_path, shared="s3://nowhere/x", shared_options=options)
    t = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="AWS_ENDPOINT_URL") as caught:
        store.check()
    assert time.monotonic() - t < 30  # bounded retries, not minutes
    assert "s3://nowhere/x" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StoreUnavailableError):
        store.load_text("never half-written")
    with pytest.raises(StoreUnavailableError):
        store.info("some-name")


def test_a_missing_bucket_is_refused_at_start_up(bucket: Bucket, tmp_path: Path) -> None:
    from rlm_mcp.errors import StoreUnavailableError

    store = ContextStore(
        tmp_path, shared="s3://no-such-bucket-here/x", shared_options=bucket.options
    )
    with pytest.raises(StoreUnavailableError, match="bucket exists"):
        store.check()
    ContextStore(tmp_path / "ok", shared=bucket.url("fine"), shared_options=bucket.options).check()


def test_serve_with_an_unreachable_bucket_stops_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_MCP_", "AWS_"))}
    env.update(
        {
            "RLM_MCP_HOME": str(tmp_path),
            "RLM_MCP_STORE": "s3://nowhere/x",
            "AWS_ENDPOINT_URL": _dead_endpoint(),
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "rlm_mcp", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "shared store" in lines[0], proc.stderr


def test_a_seaweedfs_that_exits_while_starting_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlm_mcp.testing import infra

    if infra.missing("s3"):
        pytest.skip(infra.missing("s3") or "")
    real = infra._weed_args
    calls: list[int] = []

    def first_one_fails(weed: str, folder: Path) -> tuple[list[str], str]:
        calls.append(1)
        args, endpoint = real(weed, folder)
        return ([weed, "no-such-command"] if len(calls) == 1 else args), endpoint

    monkeypatch.setattr(infra, "_weed_args", first_one_fails)
    with infra.seaweedfs() as started:
        assert len(calls) == 2
        assert started.objects("x") is not None


def test_a_bucket_without_the_compression_library_is_refused_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'rlm-mcp\[cluster\]'"):
        ContextStore(tmp_path, shared="s3://bucket/prefix", shared_options={})
