"""aiokafka's ``stop()`` can raise the CancelledError of its own fetch task (a fetch backing
off while the broker is down). ``stop_consumer`` keeps that from ending the caller (the
worker's watchdog timer, a fault run's wait), and lets a real cancellation through."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from rcmflow.runtime.kafka_io import stop_consumer


class _FetchTaskCancelled:
    async def stop(self) -> None:
        raise asyncio.CancelledError  # as aiokafka's fetcher.close() re-raises it


def test_a_fetch_task_cancelled_inside_stop_is_not_the_callers_cancellation() -> None:
    async def caller() -> str:
        await stop_consumer(cast(Any, _FetchTaskCancelled()))
        return "went on"

    assert asyncio.run(caller()) == "went on"


def test_a_cancellation_of_the_caller_still_cancels_it() -> None:
    class Slow:
        async def stop(self) -> None:
            await asyncio.sleep(10)

    async def caller() -> None:
        task = asyncio.create_task(stop_consumer(cast(Any, Slow())))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(caller())
