"""Mutation testing of the core and the worker's write order (``python -m tests.mutation``)."""
