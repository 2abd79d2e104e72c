"""More escape attempts (from shared/notes/sandbox-hardening.md), each against a real worker.

Every payload must fail with a message the caller can read (policy violation, error, timeout or a
reported reset), leak nothing, and leave the same session answering a trivial call.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from rlm_mcp.sandbox import ContextSpec, SandboxLimits, SandboxSession
from rlm_mcp.sandbox.types import ExecResult

pytestmark = pytest.mark.anyio

LIMITS = SandboxLimits(timeout=1.0, hard_timeout_grace=1.0, memory_mb=256, max_output_chars=4000)
CANARIES = {
    "OPENAI_API_KEY": "sk-canary-openai-5d1c",
    "ANTHROPIC_API_KEY": "sk-ant-canary-77e0",
    "RLM_TEST_CANARY": "canary-escape-3b9a",
}


@pytest.fixture
async def session(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxSession]:
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    s = SandboxSession(context=ContextSpec(text="the shared context"), limits=LIMITS)
    with anyio.fail_after(30):
        await s.start()
    yield s
    await s.close()


async def refused(session: SandboxSession, code: str) -> ExecResult:
    """Run an attack: it fails with a readable message, leaks nothing, the session answers."""
    with anyio.fail_after(20):
        result = await session.execute(code)
    assert result.status in {"violation", "error", "timeout", "crashed"}, (code, result)
    assert result.error is not None and result.error.message.strip(), result
    text = f"{result.output} {result.error} {result.variables}"
    for value in CANARIES.values():
        assert value not in text
    assert "<module" not in text and "<frame" not in text and "<function" not in text
    with anyio.fail_after(10):
        after = await session.execute("print(6 * 7)")
    assert after.output == "42\n", after
    return result


@pytest.mark.parametrize(
    "code",
    [
        "print('{0.__class__.__mro__}'.format(1))",
        "print(str.format('{0.__class__}', 1))",
        "f = ''.format\nprint(f('{0.__class__}', 1))",
        "print('{a.__class__}'.format_map({'a': 1}))",
        "print(str.format_map('{a.__init__}', {'a': 1}))",
        "print(list(map(str.format, ['{0.__class__}'], [1])))",
        "import string\nprint(string.Template('$x').safe_substitute.__globals__)",
    ],
)
async def test_format_string_attribute_walks_fail(session: SandboxSession, code: str) -> None:
    await refused(session, code)


@pytest.mark.parametrize(
    "code",
    [
        "def g():\n    yield 1\nprint(g().gi_frame.f_back)",
        "def g():\n    yield 1\nx = g()\nprint(x.gi_code)",
        "def g():\n    yield 1\nprint(g().gi_yieldfrom)",
        "def g():\n    yield 1\nfr = [y for y in [g()]][0]\nprint(fr.gi_frame.f_globals)",
        "async def a():\n    yield 1\nprint(a().ag_frame)",
        "async def c():\n    pass\nprint(c().cr_frame.f_locals)",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print(e.__traceback__)",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
        "    print(e.with_traceback(None).__context__)",
    ],
)
async def test_frame_and_traceback_walks_fail(session: SandboxSession, code: str) -> None:
    await refused(session, code)


@pytest.mark.parametrize(
    "code",
    [
        "print((1).__reduce__())",
        "print([].__reduce_ex__(2))",
        "import pickle",
        "import copyreg",
        "import marshal",
        "print(int.__subclasses__())",
        "print(type.__subclasses__(type))",
        "print(int.mro())",
        "print(vars())",
        "print(dir())",
        "print(globals())",
        "print(locals())",
        "print(getattr(1, '__cl' + 'ass__'))",
        "name = '_' + '_class__'\nprint(getattr(1, name))",
        "print(object)",
        "print(__builtins__)",
        "print(__builtins__['__import__']('os'))",
        "import builtins",
        "print(__import__('os'))",
        "print(eval('1'))",
        "print(exec('x = 1'))",
        "print(compile('1', 'x', 'eval'))",
        "print(open)",
        "print(breakpoint)",
        "print(memoryview(b'x'))",
        "print(super)",
    ],
)
async def test_introspection_and_builtin_escapes_fail(session: SandboxSession, code: str) -> None:
    await refused(session, code)


@pytest.mark.parametrize(
    "code",
    [
        "import os\nprint(os.fork())",
        "import posix\nprint(posix.fork())",
        "import multiprocessing",
        "import pty",
        "import concurrent.futures",
        "import threading",
        "import ctypes",
        "import _ctypes",
        "from os import fork",
        "import os.path",
        "from . import worker",
        "import signal",
        "import resource",
    ],
)
async def test_process_and_native_code_paths_fail(session: SandboxSession, code: str) -> None:
    result = await refused(session, code)
    assert result.status == "violation"


@pytest.mark.parametrize(
    "code",
    [
        "print(open('/proc/self/environ').read())",
        "import pathlib\nprint(pathlib.Path('/proc/self/environ').read_text())",
        "import io\nprint(io.open('/proc/self/environ').read())",
        "import linecache\nprint(linecache.getlines('/proc/self/environ'))",
        "import json\nprint(json.load)",
        "import codecs\nprint(codecs.open('/proc/self/environ').read())",
        "import difflib\nprint(difflib.sys)",
        "import hashlib\nprint(hashlib.file_digest)",
    ],
)
async def test_environment_cannot_be_read_through_any_allowed_module(
    session: SandboxSession, code: str
) -> None:
    await refused(session, code)


async def test_worker_environment_is_scrubbed_of_provider_keys(session: SandboxSession) -> None:
    assert session._worker is not None
    pid = session._worker.process.pid
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        pytest.skip("reading another process's environment needs root or the same dumpable uid")
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    assert os.environ["OPENAI_API_KEY"] == CANARIES["OPENAI_API_KEY"]  # the parent has them
    assert set(env) <= {"PATH", "LC_ALL"}
    for value in CANARIES.values():
        assert value.encode() not in raw


@pytest.mark.parametrize(
    "code",
    [
        "x = 10**10**10",
        "x = 'a' * 10**12",
        "x = [0] * 10**11",
        "x = list(range(10**10))",
        "def f(n):\n    return f(n + 1) + 1\nf(0)",
        "f = lambda n: f(n + 1)\nf(0)",
        "a = []\nfor i in range(200000):\n    a = [a]\nprint(a)",
        "import json\na = []\nfor i in range(200000):\n    a = [a]\nprint(json.dumps(a))",
        "print(" + "+".join(["1"] * 300000) + ")",
        "x = " + "(" * 500 + "1" + ")" * 500,
    ],
)
async def test_time_and_memory_bombs_are_stopped(session: SandboxSession, code: str) -> None:
    await refused(session, code)
