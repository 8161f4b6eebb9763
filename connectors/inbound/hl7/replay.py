"""Replay memory: MSH-3|MSH-4|MSH-10 -> content digest of every message answered AA.

A small local RocksDB (rocksdict) under the data dir, not a compacted topic: the check sits
on every message's path before its ACK, where a local read costs microseconds, and it must
survive a listener restart (it does: RocksDB's write-ahead log is on disk before the AA goes
out). A compacted topic would have to be read whole at every start and still races between
two listeners. What a local store cannot see (a replay that reaches another listener, or
one older than the retention) still changes nothing: the events carry the same event ids,
and the worker's dedup table drops them, or parks them as a conflict if they differ.

One process opens a store at a time (RocksDB's lock); ``ReplayStoreLocked`` says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from rocksdict import AccessType, Options, Rdict

from rcmflow.connectors.inbound.exceptions import ReplayStoreLocked

__all__ = ["ReplayStore",]


class ReplayStore:
    def __init__(self, path: Path, retention_s: int) -> None:
        assert retention_s > 0
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        try:
            self._db = Rdict(str(path), options, access_type=AccessType.with_ttl(retention_s))
        except Exception as exc:  # rocksdict raises a bare Exception for the lock
            if "lock" in str(exc).lower():
                raise ReplayStoreLocked(
                    f"the HL7 replay store {path} is held by another process "
                    "(one `rcmflow mllp` per data dir)") from exc
            raise
        self.path = path
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def get(self, key: str) -> str | None:
        value = self._db.get(key.encode())
        return None if value is None else bytes(value).decode()

    def put(self, key: str, digest: str) -> None:
        self._db.put(key.encode(), digest.encode())

    @asynccontextmanager
    async def claim(self, key: str) -> AsyncIterator[None]:
        """Serialise messages with one key: two connections sending the same MSH-10 at
        once must not both pass the check before either is stored."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def close(self) -> None:
        self._db.close()
