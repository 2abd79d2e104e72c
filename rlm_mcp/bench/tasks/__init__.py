"""Benchmark tasks: generators, scorers and user task files."""

from rlm_mcp.bench.tasks.generators import (
    LABELS,
    Task,
    generate,
    make_oolong,
    make_pairs,
    make_sniah,
    parse_length,
)
from rlm_mcp.bench.tasks.scorers import SCORERS, score
from rlm_mcp.bench.tasks.taskfile import load_taskfile

__all__ = [
    "LABELS",
    "SCORERS",
    "Task",
    "generate",
    "load_taskfile",
    "make_oolong",
    "make_pairs",
    "make_sniah",
    "parse_length",
    "score",
]
