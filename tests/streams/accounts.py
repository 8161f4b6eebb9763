"""Accounts in memory for tests: a head and its items, applied to as the worker does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rcmflow.streams.chart import ChartOfAccounts
from rcmflow.streams.core import Applied, apply, new_account
from rcmflow.streams.events import Event
from rcmflow.streams.postings import UnmappedLine
from rcmflow.streams.rejections import Rejection
from rcmflow.streams.state import AccountHead, Balances, Item, ItemRef


@dataclass(frozen=True)
class AccountView:
    """One account's head and every item (what ``rcmflow accounts show`` assembles)."""

    head: AccountHead
    items: Mapping[ItemRef, Item] = field(default_factory=dict)

    @classmethod
    def new(cls, account: str) -> AccountView:
        return cls(new_account(account))

    @property
    def balances(self) -> Balances:
        return self.head.balances

    @property
    def version(self) -> int:
        return self.head.version

    @property
    def status(self) -> str:
        return self.head.status

    @property
    def claims(self) -> dict[str, Any]:
        return {ref[1]: item for ref, item in self.items.items() if ref[0] == "claim"}

    def of(self, kind: str) -> list[Any]:
        return [item for ref, item in self.items.items() if ref[0] == kind]

    def applied(self, event: Event, chart: ChartOfAccounts,
                **options: Any) -> tuple[Applied | Rejection, AccountView]:
        outcome = apply(self.head, event, chart, self.items.get, **options)
        if isinstance(outcome, Rejection):
            return outcome, self
        return outcome, AccountView(outcome.head, {**self.items, **outcome.items})


class Outcome(NamedTuple):
    """An applied event and the account after it."""

    delta: bytes | None
    unmapped: tuple[UnmappedLine, ...]
    state: AccountView
