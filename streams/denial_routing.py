"""The denial routing table: a denial's CARCs and RARCs -> a category -> a work queue.

Data, not code (``denial_routing.yaml``, shipped; ``RCMFLOW_DENIAL_ROUTING`` names another):
first matching rule wins, globs on "GROUP-REASON" CARCs and on RARCs. Applied where denials
are read (the listing, the ops site, the metrics), never kept on the items: a new table
version re-sorts every denial at once, with no event and no rewrite.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rcmflow.streams.data_files import load_data_file
from rcmflow.streams.exceptions import DenialRoutingError

__all__ = ["DenialRouting", "Route", "Category", "load_denial_routing", "DEFAULT_ROUTING"]

DEFAULT_ROUTING = "denial_routing.yaml"
#: Longest routing file read: a table is a few KB.
ROUTING_BYTES_MAX = 1_000_000
RULES_MAX = 2_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Category(_Frozen):
    queue: str = Field(min_length=1, max_length=60)
    label: str = Field("", max_length=120)


class Rule(_Frozen):
    carc: str | None = Field(None, min_length=1, max_length=20)
    rarc: str | None = Field(None, min_length=1, max_length=20)
    category: str = Field(min_length=1, max_length=60)

    @model_validator(mode="after")
    def _matches_something(self) -> Rule:
        if self.carc is None and self.rarc is None:
            raise ValueError("a rule needs a carc or a rarc pattern")
        return self

    def matches(self, carcs: Iterable[str], rarcs: Iterable[str]) -> bool:
        def any_of(codes: Iterable[str], pattern: str | None) -> bool:
            return pattern is None or any(fnmatch.fnmatchcase(c, pattern) for c in codes)
        return any_of(carcs, self.carc) and any_of(rarcs, self.rarc)


class Route(_Frozen):
    category: str
    queue: str
    #: The rule that matched ("carc CO-16"), or "default".
    rule: str


class DenialRouting(_Frozen):
    version: str = Field(min_length=1, max_length=40)
    categories: dict[str, Category]
    default: str
    rules: list[Rule] = Field(max_length=RULES_MAX)

    @model_validator(mode="after")
    def _known_categories(self) -> DenialRouting:
        unknown = {r.category for r in self.rules} | {self.default}
        unknown -= self.categories.keys()
        if unknown:
            raise ValueError(f"rules name categories not under `categories`: "
                             f"{', '.join(sorted(unknown))}")
        return self

    def route(self, carcs: Iterable[str], rarcs: Iterable[str]) -> Route:
        carcs, rarcs = list(carcs), list(rarcs)
        for rule in self.rules:
            if rule.matches(carcs, rarcs):
                name = " ".join(f"{k} {v}" for k, v in (("carc", rule.carc), ("rarc", rule.rarc))
                                if v is not None)
                return Route(category=rule.category,
                             queue=self.categories[rule.category].queue, rule=name)
        return Route(category=self.default, queue=self.categories[self.default].queue,
                     rule="default")



def load_denial_routing(path: Path | None = None) -> DenialRouting:
    """Load and check a routing table; ``None`` loads the one shipped with rcmflow."""
    return load_data_file(DenialRouting, path, shipped=DEFAULT_ROUTING,
                          what="denial routing table", error=DenialRoutingError,
                          bytes_max=ROUTING_BYTES_MAX)
