"""Benchmark of the rcmflow worker against framework ceilings and peer implementations.

``python -m bench.pipeline`` (from the repository root) runs everything; see README.md.
"""
