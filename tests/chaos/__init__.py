"""Whole-pipeline fault runs (issue 15): a seeded workload, an independent oracle, a runner.

``python -m tests.chaos --help`` runs them; docs/testing.md says how they are read.
"""
