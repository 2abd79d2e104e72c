"""Which files a load may read, found and opened so that what is read is what was judged.

A directory load lists its entries, then reads them; an attacker who can write into the folder can
swap an entry for a symlink between the two (to `/proc/self/environ`, where the server's API keys
are, or out of `RLM_MCP_ALLOWED_PATHS`). So the decision is made twice: once on the name when
walking (to skip early and count), and again on the **opened descriptor** — it must be a regular
file, and its real path, read back through `/proc/self/fd`, must pass the same rules. An entry that
was a plain file when listed is opened with `O_NOFOLLOW`, so becoming a symlink makes the open
fail. Errors name only what the user typed, never where a symlink leads.
"""

from __future__ import annotations

import glob as globmod
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlm_mcp.store._parts import SKIP_DIRS, ignored, read_gitignore

__all__ = [
    "SYSTEM_ROOTS",
    "OpenedFile",
    "Refused",
    "Walk",
    "fixed_prefix",
    "open_checked",
    "refusal",
]

logger = logging.getLogger(__name__)

#: Pseudo-filesystems that hold the server's own state, never a user's document: the server's
#: environment, with its API keys, is /proc/self/environ; devices can stream forever.
SYSTEM_ROOTS = ("/proc", "/sys", "/dev")

#: For tests only: called with the path between the check and the open, where a swap would land.
before_open: Callable[[Path], None] | None = None


class Refused(Exception):
    """This file must not be read; `str()` says why without naming where a link leads."""


def _inside(real: str, root: str) -> bool:
    """`real` is `root` or below it (a sibling such as /procfs is not below /proc)."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def refusal(path: Path | str, roots: Sequence[str] = ()) -> str | None:
    """Why `path` must not be loaded, or None (checked as written and where its links lead)."""
    for real in (os.path.abspath(path), os.path.realpath(path)):
        why = _judge(real, roots)
        if why is not None:
            return why
    return None


def _judge(real: str, roots: Sequence[str]) -> str | None:
    if any(_inside(real, r) for r in SYSTEM_ROOTS):
        return (
            "it is (or links to) a path under /proc, /sys or /dev, which hold the server's own "
            "process state and devices (its environment holds your API keys); rlm-mcp loads "
            "regular files and directories only."
        )
    if roots and not any(_inside(real, r) for r in roots):
        return (
            "it is (or links to) a path outside the folders this server may read "
            f"(RLM_MCP_ALLOWED_PATHS: {os.pathsep.join(roots)}); copy it into one of them, or add "
            "its folder to RLM_MCP_ALLOWED_PATHS in the server's config."
        )
    return None


def _fd_path(fd: int) -> str | None:
    """Where an open descriptor really is (Linux); None where the OS cannot say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


@dataclass
class OpenedFile:
    """A file descriptor that was judged after it was opened."""

    fd: int
    size: int

    def close(self) -> None:
        os.close(self.fd)


def open_checked(path: Path, roots: Sequence[str], *, was_link: bool | None = None) -> OpenedFile:
    """Open `path` for reading and judge the descriptor, not the name.

    `was_link=False` (a directory walk saw a plain file) opens with O_NOFOLLOW, so a swap to a
    symlink fails; None (a path the user typed, which may be a link on purpose) follows links.
    Raises Refused or OSError.
    """
    if before_open is not None:
        before_open(path)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    if was_link is False:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == getattr(__import__("errno"), "ELOOP", -1):
            raise Refused("it changed into a symbolic link while it was being loaded") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("it is not a regular file (a device, pipe, socket or directory)")
        real = _fd_path(fd) or os.path.realpath(path)
        why = _judge(real, roots)
        if why is not None:
            raise Refused(why)
        os.set_blocking(fd, True)
        return OpenedFile(fd, st.st_size)
    except BaseException:
        os.close(fd)
        raise


def fixed_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard component: the folder it searches."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if globmod.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


@dataclass
class Walk:
    """The files a directory or glob load will read, and what it left out, by reason."""

    files: list[tuple[Path, str, bool]] = field(default_factory=list)  # (path, label, is_link)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, path: Path, why: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        logger.info("skipping %s (%s) %s", path, reason, why)


def is_binary_fd(opened: OpenedFile) -> bool:
    """A NUL byte in the first 8 KB: not text (read through the judged descriptor)."""
    head = os.pread(opened.fd, 8192, 0)
    return b"\x00" in head


def walk_directory(root: Path, roots: Sequence[str]) -> Walk:
    """Every text file under `root` a load may read (gitignore, skip dirs, rules applied)."""
    patterns = read_gitignore(root / ".gitignore")
    out = Walk()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        keep = []
        for dn in sorted(dirnames):
            rel = (d / dn).relative_to(root).as_posix()
            if (
                dn in SKIP_DIRS
                or (d / dn / "pyvenv.cfg").exists()
                or ignored(rel, dn, True, patterns)
            ):
                out.skip("ignored", d / dn)
                continue
            keep.append(dn)
        dirnames[:] = keep
        for fn in sorted(filenames):
            f = d / fn
            rel = f.relative_to(root).as_posix()
            if ignored(rel, fn, False, patterns):
                out.skip("ignored", f)
                continue
            consider(out, f, rel, roots)
    return out


def consider(out: Walk, f: Path, label: str, roots: Sequence[str]) -> None:
    """Add `f` to `out` if it is a regular text file a load may read; else count why not."""
    try:
        is_link = f.is_symlink()
        if not f.is_file():
            out.skip("not_a_file", f)
            return
    except OSError:
        out.skip("unreadable", f)
        return
    if why := refusal(f, roots):
        out.skip("refused", f, why)
        return
    try:
        opened = open_checked(f, roots, was_link=is_link)
    except Refused as exc:
        out.skip("refused", f, str(exc))
        return
    except OSError as exc:
        out.skip("unreadable", f, exc.strerror or str(exc))
        return
    try:
        binary = is_binary_fd(opened)
    finally:
        opened.close()
    if binary:
        out.skip("binary", f)
        return
    out.files.append((f, label, is_link))
