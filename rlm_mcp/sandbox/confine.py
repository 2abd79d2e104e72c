"""Defence in depth for the worker: what it keeps if RestrictedPython were ever bypassed.

RestrictedPython and the module proxies are the first wall. The worker process is the second:
it must hold nothing worth stealing and be able to do nothing worth doing. Without these layers
it would run as the server's user (often root, where RLIMIT_NPROC means nothing) with the
server's network. `confine()` runs in the worker after its trusted start-up (imports done, the
context read, rlimits set) and before any user code:

- **network**: a new network namespace (no interface but a down loopback), so nothing can be
  reached, not even the server's own loopback ports. As root: `unshare(CLONE_NEWNET)`; otherwise
  inside a new user namespace, where the kernel allows that;
- **user**: as root, drop to an unprivileged uid/gid (65534, nobody/nogroup) with no
  supplementary groups: the server user's 0600 files (keys, the store, the tokens file) become
  unreadable, and RLIMIT_NPROC starts to bind;
- **no_new_privs**: `PR_SET_NO_NEW_PRIVS`, so no setuid program can ever give privileges back;
- **non-dumpable**, and the parent-death signal re-armed (setuid clears it);
- **seccomp**: a libseccomp filter (through `pyseccomp`) that fails the system calls the worker
  never needs: creating sockets, exec, fork, ptrace and other process access, mounts and
  namespaces, kernel modules, keyrings, BPF, perf.

Each layer that the kernel or the machine does not allow is skipped with one logged warning; the
worker still runs, with the layers that remain. Tests run *unrestricted* Python under this same
function (tests/security/test_confinement.py) to show each layer holds on its own.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
from collections.abc import Iterable

__all__ = ["LAYERS", "SANDBOX_GID", "SANDBOX_UID", "confine"]

logger = logging.getLogger(__name__)

try:  # loaded at import, in the trusted start-up: finding libseccomp runs ldconfig in a subprocess
    import pyseccomp as _seccomp_lib
except (ImportError, OSError, AttributeError) as _exc:  # pragma: no cover - machine-dependent
    _seccomp_lib = None
    _SECCOMP_MISSING = str(_exc)

LAYERS = ("network", "user", "no_new_privs", "seccomp")
SANDBOX_UID = 65534  # nobody
SANDBOX_GID = 65534  # nogroup

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38

#: System calls a worker never makes after start-up; they fail with EPERM.
DENIED_SYSCALLS = (
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "execve",
    "execveat",
    "fork",
    "vfork",
    "clone",
    "clone3",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_open",
    "pidfd_getfd",
    "kill",
    "tgkill",
    "tkill",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "personality",
)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _network() -> None:
    libc = _libc()
    if os.geteuid() == 0:
        _check(libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    else:  # an unprivileged user may own a user namespace, and a network namespace inside it
        _check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET), "unshare(CLONE_NEWUSER|NEWNET)")


def _user(uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        raise OSError(errno.EPERM, "not running as root: already unprivileged")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _no_new_privs() -> None:
    _check(_libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _rearm() -> None:
    """setuid clears the parent-death signal and may reset dumpable: set both again."""
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    libc.prctl(_PR_SET_DUMPABLE, 0)


def _seccomp() -> None:
    seccomp = _seccomp_lib
    if seccomp is None:
        raise OSError(errno.ENOSYS, f"libseccomp is not available ({_SECCOMP_MISSING})")
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # a syscall this architecture does not have
    rules.load()


def confine(
    layers: Iterable[str] = LAYERS, *, uid: int = SANDBOX_UID, gid: int = SANDBOX_GID
) -> dict[str, str]:
    """Apply `layers` to this process, in a safe order; return {layer: why it was skipped}.

    Order matters: the network namespace needs root, so it comes before dropping the uid; the
    seccomp filter forbids `unshare`, so it comes last.
    """
    wanted = set(layers)
    unknown = wanted - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown confinement layers: {', '.join(sorted(unknown))}")
    steps = [
        ("network", _network),
        ("user", lambda: _user(uid, gid)),
        ("no_new_privs", _no_new_privs),
        ("seccomp", _seccomp),
    ]
    skipped: dict[str, str] = {}
    for name, step in steps:
        if name not in wanted:
            continue
        try:
            step()
        except OSError as exc:
            skipped[name] = str(exc)
        if name == "user":
            _rearm()
    return skipped
