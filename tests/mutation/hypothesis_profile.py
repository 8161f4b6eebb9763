"""A pytest plugin for mutation runs (``-p tests.mutation.hypothesis_profile``).

- The same examples for every mutant, and no example database: a mutant's verdict does not
  depend on which mutants ran before it. No shrinking: a mutation run needs the verdict, not
  the smallest example (shrinking a failure can take minutes, which mutmut counts as a
  timeout rather than a kill).
- mutmut 3.7 (the last release that installs beside faust-streaming's click<8.4) reads a
  test's ``item._nodeid``, which pytest 9 no longer has: it is given the public ``nodeid``.
"""

from __future__ import annotations

from _pytest.nodes import Node
from hypothesis import Phase, settings

settings.register_profile("mutation", derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("mutation")

if not hasattr(Node, "_nodeid"):
    Node._nodeid = property(lambda node: node.nodeid)  # type: ignore[attr-defined]
