"""Fakes that ship with the library so tests, demos and benchmarks need no real provider."""
