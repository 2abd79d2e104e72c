"""The worker's confinement, layer by layer, shown with *unrestricted* Python.

Each test runs plain Python (no RestrictedPython, no module proxies: what a sandbox bypass would
have) in a child process under `rlm_mcp.sandbox.confine.confine` with one layer, and shows what
that layer alone forbids. A control run without the layer shows the same action works, so a
pass means the layer did it. A layer this kernel refuses skips with the kernel's reason.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from rlm_mcp.sandbox import ContextSpec, SandboxLimits, SandboxSession

CANARY = "canary-confinement-0600"


def _run(body: str, layers: list[str]) -> dict[str, Any]:
    """Run `body` under `layers`; it sets `result`, printed as JSON with what was skipped."""
    script = (
        textwrap.dedent(
            f"""
        import json, os, socket, sys
        from rlm_mcp.sandbox.confine import confine
        skipped = confine({layers!r})
        result = {{}}
        """
        )
        + textwrap.dedent(body)
        + "\nprint(json.dumps({'skipped': skipped, 'result': result}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _needs(layer: str, got: dict[str, Any]) -> None:
    if layer in got["skipped"]:
        pytest.skip(f"this kernel refuses the {layer} layer: {got['skipped'][layer]}")


@pytest.fixture
def listener() -> Any:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


CONNECT = """
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    result["connected"] = True
except OSError as exc:
    result["connected"] = False
    result["error"] = str(exc)
"""

READ = """
try:
    result["read"] = open({path!r}).read()
except OSError as exc:
    result["read"] = None
    result["error"] = str(exc)
"""


def test_the_network_layer_reaches_nothing_not_even_loopback(listener: int) -> None:
    assert _run(CONNECT.format(port=listener), [])["result"]["connected"] is True  # control
    got = _run(CONNECT.format(port=listener), ["network"])
    _needs("network", got)
    assert got["result"]["connected"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop applies when the server runs as root")
def test_the_user_layer_cannot_read_a_0600_file_of_the_servers_user(tmp_path: Path) -> None:
    secret = tmp_path / "key.txt"
    secret.write_text(CANARY)
    secret.chmod(0o600)
    assert _run(READ.format(path=str(secret)), [])["result"]["read"] == CANARY  # control
    got = _run(READ.format(path=str(secret)) + "\nresult['uid'] = os.getuid()", ["user"])
    _needs("user", got)
    assert got["result"]["read"] is None and got["result"]["uid"] == 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop applies when the server runs as root")
def test_privileges_cannot_be_regained_after_the_drop() -> None:
    body = """
    try:
        os.setuid(0)
        result["root_again"] = True
    except OSError:
        result["root_again"] = False
    result["nnp"] = [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0]
    """
    got = _run(body, ["user", "no_new_privs"])
    _needs("user", got)
    _needs("no_new_privs", got)
    assert got["result"]["root_again"] is False
    assert got["result"]["nnp"].split()[1] == "1"


def test_the_seccomp_layer_refuses_sockets_and_processes(listener: int) -> None:
    body = (
        CONNECT.format(port=listener)
        + """
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    result["forked"] = True
except OSError as exc:
    result["forked"] = False
try:
    os.execv("/bin/true", ["true"])
except OSError:
    result["exec"] = False
"""
    )
    assert _run(CONNECT.format(port=listener), [])["result"]["connected"] is True  # control
    got = _run(body, ["seccomp"])
    _needs("seccomp", got)
    assert got["result"]["connected"] is False
    assert got["result"]["forked"] is False and got["result"]["exec"] is False


@pytest.mark.anyio
async def test_a_real_worker_runs_confined_and_still_reads_a_0600_context(tmp_path: Path) -> None:
    text = tmp_path / "context.txt"
    text.write_text("the context")
    text.chmod(0o600)
    async with SandboxSession(context=ContextSpec(path=text), limits=SandboxLimits()) as session:
        with anyio.fail_after(30):
            assert (await session.execute("print(context)")).output == "the context\n"
            swapped = tmp_path / "other.txt"
            swapped.write_text("another one")
            swapped.chmod(0o600)
            await session.set_context(ContextSpec(path=swapped))  # passed as a descriptor
            assert (await session.execute("print(context)")).output == "another one\n"
        assert session._worker is not None
        status = Path(f"/proc/{session._worker.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    if os.geteuid() == 0:
        assert fields["Uid"].split()[0] == "65534"
