"""A pytest plugin for mutation runs (``-p tests.mutation.hypothesis_profile``).

- The same examples for every mutant, and no example database: a mutant's verdict does not
  depend on which mutants ran before it.
- At most ``EXAMPLES_MAX`` examples per property (the suite's own runs keep theirs, up to 150),
  and no shrinking: a mutation run needs a verdict per mutant, a thousand times over, not the
  smallest failing example (shrinking one can take minutes, which mutmut counts as a timeout).
- mutmut 3.7 (the last release that installs beside faust-streaming's click<8.4) reads a
  test's ``item._nodeid``, which pytest 9 no longer has: it is given the public ``nodeid``.
"""

from __future__ import annotations

import pytest
from _pytest.nodes import Node
from hypothesis import Phase, settings

EXAMPLES_MAX = 30

settings.register_profile("mutation", derandomize=True, database=None,
                          max_examples=EXAMPLES_MAX,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("mutation")

if not hasattr(Node, "_nodeid"):
    Node._nodeid = property(lambda node: node.nodeid)  # type: ignore[attr-defined]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Cap the properties whose own settings ask for more examples."""
    for item in items:
        test = getattr(item, "obj", None)
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if isinstance(own, settings) and own.max_examples > EXAMPLES_MAX:
            test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
                own, max_examples=EXAMPLES_MAX, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
