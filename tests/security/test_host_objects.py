"""Host objects that library functions could hand sandboxed code, and what C code imports."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import anyio
import pytest

from rlm_mcp.sandbox import SandboxLimits, SandboxSession

pytestmark = pytest.mark.anyio

ADDRESS = re.compile(r"0x[0-9a-f]{6,}")


@pytest.fixture
async def session() -> AsyncIterator[SandboxSession]:
    async with SandboxSession(limits=SandboxLimits(timeout=10)) as s:
        yield s


@pytest.mark.parametrize(
    "code",
    [
        "import functools\nprint(functools.partial(print).func)",
        "import functools\nf = functools.partial(print)\nprint(f.args, f.keywords)",
        "import functools\nprint(getattr(functools.partial(print), 'func'))",
    ],
)
async def test_partial_does_not_hand_out_the_wrapped_function(
    session: SandboxSession, code: str
) -> None:
    with anyio.fail_after(30):
        r = await session.execute(code)
    assert r.status in ("error", "violation")
    assert "CappedPrinter" not in r.output + str(r.error)


async def test_print_and_partial_reprs_show_no_addresses(session: SandboxSession) -> None:
    with anyio.fail_after(30):
        r = await session.execute(
            "import functools\nprint(repr(print))\nprint(repr(functools.partial(print, 1)))"
        )
    assert r.ok and not ADDRESS.search(r.output), r.output
    assert "CappedPrinter" not in r.output


async def test_partial_still_works_as_partial(session: SandboxSession) -> None:
    with anyio.fail_after(30):
        r = await session.execute(
            "import functools\nadd = lambda a, b, c=0: a + b + c\n"
            "p = functools.partial(add, 1, c=10)\nprint(p(2), p(2, c=0))"
        )
    assert r.output == "13 3\n"


async def test_datetime_formatting_works_and_time_stays_out_of_reach(
    session: SandboxSession,
) -> None:
    with anyio.fail_after(30):
        ok = await session.execute(
            "import datetime\nd = datetime.datetime(2026, 12, 5, 9, 30)\n"
            "print(d.strftime('%Y-%m-%d %H:%M'), datetime.datetime.strptime('05/12', '%d/%m').day)"
        )
        refused = [await session.execute(c) for c in ("import time", "from time import sleep")]
    assert ok.output == "2026-12-05 09:30 5\n", ok.error
    assert all(r.status == "violation" for r in refused)
