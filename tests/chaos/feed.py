"""The channels a fault run feeds, each as its real senders behave.

- ``mllp``: a client that sends the message and waits for its ACK; no answer (a timeout, a
  refused or dropped connection) or an AR that says "send it again" makes it send the same
  bytes again on a new connection, as interface engines do.
- ``drop``: the file written as ``NAME.part`` then renamed into the watched folder (the
  watcher leaves ``*.part`` alone); accepted once it is in ``done/`` or ``rejected/``.
- ``payments`` / ``fhir``: ``rcmflow ingest payments|fhir FILE``, run again on exit 3 (the
  broker did not acknowledge); exit 0 or 1 (something went to rcm.dlq) is accepted.

A phase is over when every delivery was accepted and the workers' group has consumed
rcm.events to its end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rcmflow.runtime.kafka_connection import KafkaConnection
from rcmflow.runtime.kafka_io import committed_offsets, log_ends
from tests.chaos.model import Delivery
from tests.chaos.stack import PARTITIONS, Stack

__all__ = ["Accepted", "FeedError", "deliver", "feed_phase", "group_lag", "wait_caught_up"]

FRAME_START, FRAME_END = b"\x0b", b"\x1c\r"
#: Longest wait for one ACK before the client gives up on that connection and sends again
#: (longer than the listener's RCMFLOW_HL7_WRITE_TIMEOUT_S, set to 10 s by the stack).
ACK_TIMEOUT_S = 15.0
#: Longest time one delivery may take, resends included (faults hold a process down for
#: seconds; a machine this busy may take tens of seconds more).
DELIVERY_TIMEOUT_S = 240.0
#: Longest wait for the workers to consume rcm.events to its end after a phase.
CATCH_UP_TIMEOUT_S = 150.0
#: ``rcmflow ingest`` exits 2 when the broker is refusing at start (e.g. restarting):
#: tried again this many times before it counts as a real refusal.
REFUSED_RETRIES = 5


class FeedError(RuntimeError):
    """A delivery was not accepted in time, or a channel refused it for good."""


@dataclass(frozen=True)
class Accepted:
    name: str
    channel: str
    #: The ACK code (AA/AE/AR), "done"/"rejected" (drop folder) or "exit 0"/"exit 1".
    outcome: str
    #: How many times it was sent (1: no resend).
    attempts: int


# -- MLLP ----------------------------------------------------------------------------------


def _ack_code(ack: bytes) -> tuple[str, bool]:
    """(MSA-1, whether the answer asks for the same message again: AR "not stored")."""
    text = ack.strip(b"\x0b\x1c\r")
    code = ""
    for segment in text.split(b"\r"):
        if segment.startswith(b"MSA"):
            code = segment.split(b"|")[1].decode(errors="replace")
    resend = code == "AR" and b"send it again" in text
    return code, resend


def _send_once(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(ACK_TIMEOUT_S)
        sock.sendall(FRAME_START + payload + FRAME_END)
        answer = b""
        while not answer.endswith(FRAME_END):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection before the ACK")
            answer += chunk
        return answer


def send_mllp(stack: Stack, delivery: Delivery) -> Accepted:
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    attempts = 0
    last = ""
    while time.monotonic() < deadline and not stack.stopping.is_set():
        attempts += 1
        try:
            code, resend = _ack_code(_send_once(stack.mllp_port, delivery.payload))
        except (OSError, ConnectionError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
            continue
        if not resend:
            return Accepted(delivery.name, "mllp", code, attempts)
        last = f"{code} send it again"
        time.sleep(0.3)
    raise FeedError(f"mllp {delivery.name}: no final ACK in {DELIVERY_TIMEOUT_S:.0f}s after "
                    f"{attempts} sends (last: {last})")


# -- drop folder ------------------------------------------------------------------------------


def drop_file(stack: Stack, delivery: Delivery) -> Accepted:
    folder = stack.drop_dir
    part = folder / (delivery.name + ".part")
    part.write_bytes(delivery.payload)
    os.replace(part, folder / delivery.name)  # atomic: the watcher sees all of it or nothing
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while time.monotonic() < deadline and not stack.stopping.is_set():
        for where in ("done", "rejected"):
            if (folder / where / delivery.name).exists():
                return Accepted(delivery.name, "drop", where, 1)
        time.sleep(0.2)
    raise FeedError(f"drop {delivery.name}: not moved to done/ or rejected/ in "
                    f"{DELIVERY_TIMEOUT_S:.0f}s (see {stack.procs['watch'].log})")


# -- rcmflow ingest ---------------------------------------------------------------------------


def ingest_file(stack: Stack, delivery: Delivery) -> Accepted:
    inputs = stack.run_dir / "inputs"
    inputs.mkdir(exist_ok=True)
    path = inputs / delivery.name
    path.write_bytes(delivery.payload)
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    attempts = refused = 0
    last = ""
    while time.monotonic() < deadline and not stack.stopping.is_set():
        attempts += 1
        done = stack.command("ingest", delivery.channel, str(path), timeout_s=DELIVERY_TIMEOUT_S)
        if done.returncode in (0, 1):
            return Accepted(delivery.name, delivery.channel, f"exit {done.returncode}",
                            attempts)
        last = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
        if done.returncode == 2:
            refused += 1
            if refused > REFUSED_RETRIES:
                break
        elif done.returncode != 3:
            break
        time.sleep(0.5)
    raise FeedError(f"ingest {delivery.channel} {delivery.name}: not accepted after "
                    f"{attempts} runs ({last})")


def deliver(stack: Stack, delivery: Delivery) -> Accepted:
    if delivery.channel == "mllp":
        return send_mllp(stack, delivery)
    if delivery.channel == "drop":
        return drop_file(stack, delivery)
    if delivery.channel in ("payments", "fhir"):
        return ingest_file(stack, delivery)
    raise FeedError(f"{delivery.name}: unknown channel {delivery.channel!r}")


# -- catching up ------------------------------------------------------------------------------


async def _behind(kafka: KafkaConnection, group: str, topic: str) -> dict[int, tuple[int, int]]:
    partitions = list(range(PARTITIONS))
    ends = await log_ends(kafka, topic, partitions, timeout_s=10)
    committed = await committed_offsets(kafka, group, topic, partitions)
    return {p: (committed.get(p, 0), ends[p]) for p in partitions
            if ends[p] > committed.get(p, 0)}


def partitions_behind(kafka: KafkaConnection, group: str, topic: str
                      ) -> dict[int, tuple[int, int]] | None:
    """Partition -> (committed, log end) where the group is behind; None while the broker
    does not answer (it may be restarting)."""
    try:
        return asyncio.run(asyncio.wait_for(_behind(kafka, group, topic), 20))
    except Exception:  # noqa: BLE001 - a broker down or restarting: not caught up yet
        return None


def group_lag(kafka: KafkaConnection, group: str, topic: str) -> int | None:
    """Σ (log end − committed) over the topic's partitions; None while the broker does not
    answer."""
    behind = partitions_behind(kafka, group, topic)
    return None if behind is None else sum(end - done for done, end in behind.values())


def wait_caught_up(kafka: KafkaConnection, group: str, topic: str, what: str,
                   timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    behind: dict[int, tuple[int, int]] | None = None
    while time.monotonic() < deadline:
        behind = partitions_behind(kafka, group, topic)
        if behind == {}:
            return
        time.sleep(0.5)
    where = ("the broker did not answer" if behind is None else ", ".join(
        f"p{p} committed {done} of {end}" for p, (done, end) in sorted(behind.items())))
    raise FeedError(f"{what} did not catch up on {topic} in {timeout_s:.0f}s ({where})")


def feed_phase(stack: Stack, deliveries: list[Delivery], senders: int = 4) -> list[Accepted]:
    """Send every delivery of one phase (``senders`` at once), then wait until the workers
    have consumed rcm.events to its end. FeedError names what did not get through."""
    pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="sender")
    try:
        accepted = list(pool.map(lambda d: deliver(stack, d), deliveries))
    except BaseException:
        stack.stopping.set()  # the other senders give up at their next attempt
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    from rcmflow.streams.topics import EVENTS

    wait_caught_up(stack.kafka, "rcmflow", EVENTS, "the workers")
    return accepted
