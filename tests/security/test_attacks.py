"""Attacks, each asserting it fails and that the session then answers a trivial call.

Run against real workers: the process boundary and the OS limits are part of what is tested.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from rlm_mcp.sandbox import ContextSpec, SandboxLimits, SandboxSession, SessionPool

pytestmark = pytest.mark.anyio

LIMITS = SandboxLimits(timeout=1.0, hard_timeout_grace=1.0, memory_mb=256, max_output_chars=2000)
CANARY = "canary-7f3e9b-secret"


@pytest.fixture
async def session(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxSession]:
    monkeypatch.setenv("RLM_TEST_CANARY", CANARY)
    s = SandboxSession(context=ContextSpec(text="shared context\nline two"), limits=LIMITS)
    with anyio.fail_after(30):
        await s.start()
    yield s
    await s.close()


async def attack(session: SandboxSession, code: str) -> str:
    """Run `code`, assert nothing secret came back, then prove the session still answers."""
    with anyio.fail_after(20):
        result = await session.execute(code)
    text = f"{result.output} {result.error}"
    assert CANARY not in text
    with anyio.fail_after(10):
        after = await session.execute("print(1 + 1)")
    assert after.output == "2\n"
    assert result.status != "ok" or "SAFE" in result.output, (result.status, result.output)
    return text


async def test_server_canary_env_var_is_not_readable(session: SandboxSession) -> None:
    assert os.environ["RLM_TEST_CANARY"] == CANARY
    await attack(session, "import os\nprint(os.environ['RLM_TEST_CANARY'])")
    await attack(session, "print(__import__('os').environ)")


async def test_canary_file_cannot_be_read(session: SandboxSession, tmp_path: Path) -> None:
    canary = tmp_path / "secret.txt"
    canary.write_text(CANARY)
    await attack(session, f"print(open({str(canary)!r}).read())")


async def test_file_cannot_be_written(session: SandboxSession, tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    await attack(session, f"open({str(target)!r}, 'w').write('x')")
    assert not target.exists()


async def test_socket_cannot_be_opened(session: SandboxSession) -> None:
    await attack(session, "import socket\nsocket.socket()")


async def test_process_cannot_be_started(session: SandboxSession) -> None:
    await attack(session, "import subprocess\nsubprocess.run(['id'])")


@pytest.mark.parametrize("module", ["os", "sys", "subprocess", "ctypes", "importlib", "io"])
async def test_dangerous_modules_cannot_be_imported(session: SandboxSession, module: str) -> None:
    text = await attack(session, f"import {module}")
    assert "allowed modules" in text


async def test_str_format_attribute_walk_is_refused(session: SandboxSession) -> None:
    await attack(session, "print('{0.__class__}'.format(1))")
    await attack(session, "f = 'x'.format\nprint(f)")


async def test_userstring_format_walk_is_refused(session: SandboxSession) -> None:
    await attack(session, "from collections import UserString\nprint(UserString('{0}').format(1))")
    await attack(session, "import collections\nprint(collections.UserString)")


@pytest.mark.parametrize(
    "code",
    [
        "def g():\n    yield 1\nprint(g().gi_frame.f_globals)",
        "async def c():\n    pass\nprint(c().cr_frame)",
        "try:\n    1/0\nexcept Exception as e:\n    print(e.__traceback__.tb_frame)",
        "print(().__class__.__bases__[0].__subclasses__())",
        "print([c for c in object.__subclasses__()])",
        "print(type(1))",
        "print(getattr(1, '__class__'))",
        "try:\n    1/0\nexcept* ZeroDivisionError:\n    print('x')",
        "raise SystemExit(0)",
        "raise KeyboardInterrupt",
    ],
)
async def test_introspection_escapes_fail(session: SandboxSession, code: str) -> None:
    await attack(session, code)


@pytest.mark.parametrize(
    "code",
    [
        "import statistics\nprint(statistics.sys)",
        "import datetime\nprint(datetime.sys)",
        "import json\nprint(json.codecs)",
        "import textwrap\nprint(textwrap.re)",
        "import re\nprint(re.enum)",
        "import string\nprint(string.Formatter)",
        "import random\nprint(random._os)",
    ],
)
async def test_module_reexport_walks_fail(session: SandboxSession, code: str) -> None:
    await attack(session, code)


async def test_another_sessions_variable_is_not_readable() -> None:
    pool = SessionPool(limits=LIMITS)
    try:
        with anyio.fail_after(30):
            a = await pool.get("a", context=None, sub_calls=None)
            b = await pool.get("b", context=None, sub_calls=None)
            await a.execute("secret_of_a = 'top-secret'")
            result = await b.execute("print(secret_of_a)")
        assert result.error is not None and result.error.type == "NameError"
        assert await b.get_variable_text("secret_of_a") is None
    finally:
        await pool.aclose()


async def test_shared_context_cannot_be_changed(tmp_path: Path) -> None:
    path = tmp_path / "ctx.txt"
    path.write_text("original text")
    spec = ContextSpec(path=path)
    async with SandboxSession(context=spec, limits=LIMITS) as one:
        with anyio.fail_after(20):
            r = await one.execute("context[0] = 'X'")
            assert r.status != "ok"
            await one.execute("context = 'replaced'\ndocuments = None")
            async with SandboxSession(context=spec, limits=LIMITS) as two:
                r2 = await two.execute("print(context)")
    assert r2.output == "original text\n"
    assert path.read_text() == "original text"


async def test_infinite_loop_is_interrupted_keeping_state(session: SandboxSession) -> None:
    await session.execute("kept = 5")
    with anyio.fail_after(20):
        r = await session.execute("while True:\n    pass")
    assert r.status == "timeout"
    assert r.reset is False
    assert (await session.execute("print(kept)")).output == "5\n"


async def test_loop_that_swallows_the_timeout_is_killed_and_reset(session: SandboxSession) -> None:
    code = "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass"
    with anyio.fail_after(20):
        r = await session.execute(code)
    assert r.status == "timeout"
    await attack(session, "try:\n    while True: pass\nfinally:\n    while True: pass")


async def test_huge_string_allocation_fails(session: SandboxSession) -> None:
    text = await attack(session, "x = 'a' * 10**10")
    assert "MemoryError" in text or "reset" in text


async def test_deep_recursion_fails(session: SandboxSession) -> None:
    text = await attack(session, "def f(n):\n    return f(n + 1)\nf(0)")
    assert "RecursionError" in text


async def test_printing_1_gb_is_capped(session: SandboxSession) -> None:
    with anyio.fail_after(20):
        r = await session.execute("s = 'a' * 1000000\nfor i in range(1000):\n    print(s)")
    assert len(r.output) <= LIMITS.max_output_chars
    await attack(session, "print('a' * 10**9)")


async def test_big_power_is_stopped(session: SandboxSession) -> None:
    with anyio.fail_after(20):
        r = await session.execute("x = 9**9**9")
    assert r.status in {"timeout", "crashed"}
    assert not r.reset or "variable" in r.notes[0]
    assert (await session.execute("print(3)")).output == "3\n"


async def test_catastrophic_regex_is_killed(session: SandboxSession) -> None:
    with anyio.fail_after(20):
        r = await session.execute("import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')")
    assert r.status in {"timeout", "crashed"}
    assert (await session.execute("print(4)")).output == "4\n"
