"""Benchmarks: `python -m rlm_mcp.bench NAME` prints a table of measured figures."""
