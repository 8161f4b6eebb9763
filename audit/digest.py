"""`rcmflow digest`: one SHA-256 that names the live account state.

**What goes in.** Every account with a head on ``rcm.accounts`` (the compacted changelog of
the accounts table, ``streams/layout.py``): the newest record under the key ``<account>``
wins, a tombstone (no value) removes the account, item records (``<account>/<kind>/<id>``)
are not read. Of each head: its ``version`` and its twelve **ledger buckets** (integer
cents; the tracking buckets ``denied`` and ``patient_responsibility`` and the derived
``balance`` are not in it). A bucket a head lacks counts as 0. A layout-1 record (the whole
account under ``<account>``) gives the same fields.

**In which order and encoding.** The digest is the SHA-256 of these bytes, ASCII (an
account number is ``[A-Za-z0-9][A-Za-z0-9:._-]*``, ``events.AccountKey``):

1. a header line: ``rcmflow-state-digest/1``, then ``account``, ``version`` and the bucket
   names in this order (alphabetical): ``contractual_adjustments gross_charges
   insurance_ar interest_income other_adjustments patient_ar patient_paid
   payer_overpayments payer_paid refunds unapplied_credit write_offs``, separated by one
   TAB and ended by one LF;
2. one line per account, in ascending byte order of the account number: the account
   number, its version, its bucket cents in the header's order, as decimal integers (a
   leading ``-`` when negative, no ``+``, no leading zeros), TAB-separated, LF-ended.

No accounts: the header alone. The digest is printed as 64 lowercase hex digits, with the
number of accounts and each bucket's total over them. The same definition holds for
``rcmflow rebuild`` (``audit/rebuild.py``), whose heads come from replaying rcm.events, so
the two compare directly; docs/operations/rebuild.md recomputes it with ``jq`` and
``sha256sum`` from ``rcmflow accounts list --limit 0 --json``.

**Memory.** The heads read are kept in a RocksDB store (rocksdict) in a directory of their
own, keyed by account, so the key order comes from the store and memory stays that of one
read batch and RocksDB's buffers whatever the number of accounts; the store is deleted
afterwards unless the caller keeps it (``rebuild --compare`` merges it with the rebuilt
state's to name the accounts that differ).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import orjson
from rich.console import Console
from rocksdict import Options, Rdict, WriteBatch

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import iter_topic, log_ends, topic_partitions
from rcmflow.runtime.progress import LOG_EVERY_S, progress
from rcmflow.streams.layout import is_head_key
from rcmflow.streams.state import LEDGER_BUCKETS
from rcmflow.streams.topics import ACCOUNTS

__all__ = ["FORMAT", "BUCKETS", "AccountState", "StateDigest", "HeadStore", "digest_of",
           "header", "line", "state_of", "store_options", "differing_accounts", "live_digest",
           "read_live", "scratch_dir", "DIFFERENCES_SHOWN"]

FORMAT = "rcmflow-state-digest/1"
#: The ledger buckets in the digest's order.
BUCKETS: tuple[str, ...] = tuple(sorted(LEDGER_BUCKETS))
#: Accounts a comparison names (the first in key order): enough to start looking.
DIFFERENCES_SHOWN = 20
#: rcm.accounts records one read holds at once.
READ_BATCH = 10_000


class AccountState(NamedTuple):
    """What the digest takes of one account."""

    account: str
    version: int
    buckets: tuple[int, ...]  # in BUCKETS order


def state_of(account: str, head: Mapping[str, Any]) -> AccountState:
    """The digest's part of a head record (layout 1 or 2: both carry these fields)."""
    balances = head.get("balances") or {}
    return AccountState(account, int(head.get("version", 0)),
                        tuple(int(balances.get(b, 0)) for b in BUCKETS))


def header() -> bytes:
    return "\t".join((FORMAT, "account", "version", *BUCKETS)).encode() + b"\n"


def line(state: AccountState) -> bytes:
    return "\t".join((state.account, str(state.version),
                      *(str(c) for c in state.buckets))).encode() + b"\n"


@dataclass
class StateDigest:
    """A state's digest, how many accounts went in, and each bucket's total (cents)."""

    sha256: str
    accounts: int
    totals: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "sha256": self.sha256, "accounts": self.accounts,
                "totals_cents": self.totals}

    def render(self, console: Console, title: str) -> None:
        from rich.table import Table

        console.print(f"{title}: [bold]{self.sha256}[/bold]", soft_wrap=True)
        table = Table("bucket", "total (cents)", title=f"{self.accounts} accounts")
        for bucket in BUCKETS:
            table.add_row(bucket, str(self.totals[bucket]))
        console.print(table)


def digest_of(states: Iterable[AccountState]) -> StateDigest:
    """The digest of states given in ascending key order (ValueError otherwise: the
    definition needs one order, and a store that gave another is a bug worth stopping on)."""
    sha = hashlib.sha256(header())
    totals = [0] * len(BUCKETS)
    count = 0
    previous: bytes | None = None
    for state in states:
        key = state.account.encode()
        if previous is not None and key <= previous:
            raise ValueError(f"accounts out of key order: {state.account!r} after "
                             f"{previous.decode()!r}")
        previous = key
        sha.update(line(state))
        count += 1
        for i, cents in enumerate(state.buckets):
            totals[i] += cents
    return StateDigest(sha.hexdigest(), count, dict(zip(BUCKETS, totals, strict=True)))


def differing_accounts(ours: Iterable[AccountState], theirs: Iterable[AccountState],
                       limit: int = DIFFERENCES_SHOWN) -> tuple[list[str], int]:
    """(the first ``limit`` account numbers whose digest lines differ, how many differ in
    all): both sides in ascending key order, merged; an account on one side only differs."""
    shown: list[str] = []
    count = 0
    a, b = iter(ours), iter(theirs)
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.account.encode() < y.account.encode()):
            name, x = x.account if x else "", next(a, None)
        elif x is None or y.account.encode() < x.account.encode():
            name, y = y.account, next(b, None)
        else:
            name = x.account if x != y else ""
            x, y = next(a, None), next(b, None)
        if name:
            count += 1
            if len(shown) < limit:
                shown.append(name)
    return shown, count


def scratch_dir(parent: Path, prefix: str) -> Path:
    """A new directory under ``parent`` (made if missing) for a command's scratch stores."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def store_options() -> Options:
    """RocksDB options of a scratch store: raw bytes, and at most two 16 MiB memtables (the
    defaults, 64 MiB, would triple the memory of a rebuild for no gain)."""
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(16 * 1024**2)
    options.set_max_write_buffer_number(2)
    return options


class HeadStore:
    """Account -> its newest head record, in a RocksDB store in ``directory`` (key order =
    the digest's order). ``temporary``: the directory is removed on close."""

    def __init__(self, directory: Path, *, temporary: bool = False) -> None:
        self.directory = directory
        self.temporary = temporary
        directory.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(directory), options=store_options())

    @classmethod
    def scratch(cls, parent: Path) -> HeadStore:
        """A store in a new temporary directory under ``parent``, removed on close."""
        return cls(scratch_dir(parent, "digest-"), temporary=True)

    def put(self, key: bytes, value: bytes | None) -> None:
        """One rcm.accounts head record (a None value: a tombstone)."""
        if value is None:
            self.db.delete(key)
        else:
            self.db[key] = value

    def put_many(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Head records (key, value) in one write."""
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            batch.put(key, value)
        self.db.write(batch)

    def states(self) -> Iterator[AccountState]:
        for key, value in self.db.items():
            assert isinstance(key, bytes)  # raw mode
            yield state_of(key.decode(), orjson.loads(value))

    def digest(self) -> StateDigest:
        return digest_of(self.states())

    def close(self) -> None:
        self.db.close()
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> HeadStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


async def read_live(kafka: KafkaConnection, store: HeadStore, *, console: Console | None = None,
                    progress_every_s: float = LOG_EVERY_S) -> int:
    """Every head on rcm.accounts into ``store`` (newest per account: each partition read in
    offset order, an account's records sharing one partition); returns the records read."""
    console = console or Console(file=io.StringIO())
    partitions = await topic_partitions(kafka, ACCOUNTS)
    ends = await log_ends(kafka, ACCOUNTS, partitions) if partitions else {}
    read = 0
    with progress(console, f"reading {ACCOUNTS}", total=sum(ends.values()) or None,
                  every_s=progress_every_s) as advance:
        for p in partitions:
            if not ends.get(p):
                continue
            async for records in iter_topic(kafka, ACCOUNTS, start={p: 0}, keep=is_head_key,
                                            batch_records=READ_BATCH, on_read=advance):
                for record in records:
                    assert record.key is not None  # is_head_key
                    store.put(record.key, record.value)
                read += len(records)
    return read


async def live_digest(kafka: KafkaConnection, scratch_parent: Path, *,
                      console: Console | None = None,
                      progress_every_s: float = LOG_EVERY_S) -> StateDigest:
    """The digest of the heads on rcm.accounts now (a scratch store under
    ``scratch_parent``, removed afterwards)."""
    with HeadStore.scratch(scratch_parent) as store:
        await read_live(kafka, store, console=console, progress_every_s=progress_every_s)
        return store.digest()
