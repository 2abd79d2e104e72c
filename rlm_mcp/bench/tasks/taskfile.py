"""Load a user's own tasks: JSONL, one object per line.

Fields: `question`, `answer`, `scorer` (default "exact"), and either `context` (text) or
`context_path` (relative paths resolve against the task file's folder); optional `id`, `metadata`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlm_mcp.bench.tasks.generators import Task
from rlm_mcp.bench.tasks.scorers import SCORERS
from rlm_mcp.errors import ConfigError

__all__ = ["load_taskfile"]


def load_taskfile(path: str | Path) -> list[Task]:
    p = Path(path)
    tasks: list[Task] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}:{n}: not valid JSON ({exc.msg}); one object per line") from None
        missing = [k for k in ("question", "answer") if k not in obj]
        if missing or ("context" not in obj and "context_path" not in obj):
            raise ConfigError(
                f"{p}:{n}: needs question, answer and context or context_path (missing {missing})"
            )
        if "context" in obj:
            context = str(obj["context"])
        else:
            cpath = Path(obj["context_path"])
            cpath = cpath if cpath.is_absolute() else p.parent / cpath
            if not cpath.is_file():
                raise ConfigError(f"{p}:{n}: context_path {cpath} does not exist")
            context = cpath.read_text(encoding="utf-8", errors="replace")
        scorer = obj.get("scorer", "exact")
        if scorer not in SCORERS:
            raise ConfigError(
                f"{p}:{n}: unknown scorer {scorer!r}; choose one of {sorted(SCORERS)}"
            )
        tasks.append(
            Task(
                task_id=str(obj.get("id", f"{p.stem}-{n}")),
                suite="file",
                context=context,
                question=str(obj["question"]),
                answer=str(obj["answer"]),
                scorer=scorer,
                metadata=dict(obj.get("metadata", {})),
            )
        )
    return tasks
