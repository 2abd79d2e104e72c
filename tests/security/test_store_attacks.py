"""Attacks on the store itself: a swap between check and open, names that impersonate handles,
tenants reading each other, and a store that grows past its cap."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_mcp.errors import (
    ConfigError,
    ContextNotFoundError,
    InputTooLargeError,
    InvalidNameError,
    NameTakenError,
    UnreadablePathError,
)
from rlm_mcp.store import ContextStore, _paths, probe_store_dir, validate_name

CANARY = "sk-canary-7d2e-never-load-me"


@pytest.fixture
def swap_on_open() -> Iterator[dict[str, Path]]:
    """Between the check and the open of `victim`, replace it with a symlink to `target`."""
    plan: dict[str, Path] = {}

    def hook(path: Path) -> None:
        if plan and path == plan["victim"]:
            path.unlink()
            path.symlink_to(plan["target"])

    _paths.before_open = hook
    try:
        yield plan
    finally:
        _paths.before_open = None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_file_swapped_for_a_link_to_environ_mid_load_is_refused(
    tmp_path: Path, swap_on_open: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_TEST_SECRET", CANARY)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("first\n")
    (folder / "z.txt").write_text("last\n")
    swap_on_open.update(victim=folder / "z.txt", target=Path("/proc/self/environ"))
    with ContextStore(tmp_path / "store") as store:
        info = store.load_path(folder)
        assert CANARY not in store.read(info.handle)
        assert [d.path for d in info.documents] == ["a.txt"]
        assert info.skipped.get("refused") == 1


def test_a_swap_out_of_the_allowed_folders_is_refused(
    tmp_path: Path, swap_on_open: dict[str, Path]
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (outside / "key.txt").write_text(CANARY)
    (allowed / "a.txt").write_text("fine\n")
    (allowed / "b.txt").write_text("also fine\n")
    with ContextStore(tmp_path / "store", allowed_roots=[allowed]) as store:
        swap_on_open.update(victim=allowed / "b.txt", target=outside / "key.txt")
        info = store.load_path(allowed)
        assert CANARY not in store.read(info.handle)
        # a single file swapped after its check is refused outright, naming only what was typed
        (allowed / "c.txt").write_text("c\n")
        swap_on_open.update(victim=allowed / "c.txt", target=outside / "key.txt")
        with pytest.raises(UnreadablePathError, match="outside the folders") as err:
            store.load_path(allowed / "c.txt")
        assert "elsewhere" not in str(err.value)


def test_names_cannot_take_handle_form_or_hide_direction_controls() -> None:
    for bad in ["", "  ", "ctx_0123456789ab", "CTX_x", "a\u202eb", "a\u2066b", "tab\tx", "x" * 129]:
        with pytest.raises(InvalidNameError):
            validate_name(bad)
    assert validate_name("q3 contracts (final)") == "q3 contracts (final)"


def test_a_handle_is_only_a_handle_and_a_name_only_a_name(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s") as store:
        first = store.load_text("the first text")
        with pytest.raises(InvalidNameError):
            store.load_text("impostor", name=first.handle)
        store.delete(first.handle)
        with pytest.raises(ContextNotFoundError):
            store.read(first.handle)  # no impostor answers for the deleted handle


def test_repointing_a_name_must_be_explicit(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s") as store:
        one = store.load_text("one", name="doc")
        assert store.load_text("one", name="doc").handle == one.handle  # same content: fine
        with pytest.raises(NameTakenError, match="replace"):
            store.load_text("two", name="doc")
        assert store.read("doc") == "one"
        store.load_text("two", name="doc", replace=True)
        assert store.read("doc") == "two"


def test_tenants_see_only_what_they_loaded(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s") as store:
        alice, bob = store.for_tenant("alice"), store.for_tenant("bob")
        secret = alice.load_text("alice's private text", name="main")
        assert bob.list() == []
        for ref in (secret.handle, "main"):
            with pytest.raises(ContextNotFoundError):
                bob.read(ref)
        with pytest.raises(ContextNotFoundError):
            bob.pin(secret.handle)
        # the same bytes loaded by bob are his too, under his own name and source
        shared = bob.load_text("alice's private text", source="bob's upload", name="mine")
        assert shared.handle == secret.handle
        assert bob.info(shared.handle).name == "mine"
        assert alice.info(secret.handle).source == "text"
        assert bob.info(shared.handle).source == "bob's upload"
        # deleting gives up one claim; the bytes go with the last owner
        assert alice.delete("main")
        assert bob.read("mine") == "alice's private text"
        with pytest.raises(ContextNotFoundError):
            alice.read(secret.handle)
        assert bob.delete("mine")
        assert store.list() == []
        # the unscoped store (the CLI, a single user) sees every context
        alice.load_text("a")
        bob.load_text("b")
        assert len(store.list()) == 2


def test_a_pinned_context_survives_eviction_and_a_dead_processes_pin_does_not(
    tmp_path: Path,
) -> None:
    with ContextStore(tmp_path / "s", max_bytes=250) as store:
        a = store.load_text("a" * 100)
        with store.pinned(a.handle):
            store.load_text("b" * 100)
            store.load_text("c" * 100)  # over the cap: b goes, a is pinned
            assert a.handle in {i.handle for i in store.list()}
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        pid = int(dead.stdout)
        token = store.pin(a.handle)
        key = ("pin", a.handle, token.partition("/")[2])
        store._cache.set(key, {**store._cache.get(key), "pid": pid})  # as if it had crashed
        store.load_text("d" * 100)
        assert a.handle not in {i.handle for i in store.list()}


def test_one_input_larger_than_the_whole_store_is_refused(tmp_path: Path) -> None:
    with (
        ContextStore(tmp_path / "s", max_bytes=1000) as store,
        pytest.raises(InputTooLargeError, match="RLM_MCP_MAX_STORE_BYTES"),
    ):
        store.load_text("x" * 5000)


def _load_many(directory: str, worker: int) -> None:
    with ContextStore(directory, max_bytes=3_000_000) as store:
        for i in range(6):
            store.load_text(f"{worker}-{i}-" + os.urandom(250_000).hex())


def test_two_processes_loading_at_once_end_under_the_cap(tmp_path: Path) -> None:
    d = str(tmp_path / "shared")
    ContextStore(d).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_load_many, args=(d, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with ContextStore(d, max_bytes=3_000_000) as store:
        assert sum(i.bytes for i in store.list()) <= 3_000_000


def test_an_unusable_data_folder_is_a_config_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad in (afile, afile / "sub", Path("/proc/rlm-mcp-test")):
        with pytest.raises(ConfigError, match="RLM_MCP_HOME"):
            probe_store_dir(bad)
        with pytest.raises(ConfigError, match="cannot be used"):
            ContextStore(bad)


def test_an_empty_path_is_refused_not_the_working_directory(tmp_path: Path) -> None:
    with ContextStore(tmp_path / "s") as store:
        for empty in ("", "   "):
            with pytest.raises(UnreadablePathError, match="Empty path"):
                store.load_path(empty)
