"""The fault schedule of a run: drawn from its seed alone (a failure replays by its seed), or
given explicitly; and the runner's command line."""

from __future__ import annotations

import pytest

from tests.chaos.__main__ import seeds
from tests.chaos.injector import Fault, Injected, draw_faults, parse_schedule
from tests.chaos.stack import SESSION_TIMEOUT_S


def test_the_same_seed_draws_the_same_faults() -> None:
    assert draw_faults(5, "kafka", 20) == draw_faults(5, "kafka", 20)
    assert draw_faults(5, "kafka", 20) != draw_faults(6, "kafka", 20)


@pytest.mark.parametrize("seed", range(40))
def test_drawn_faults_fit_the_broker_and_the_window(seed: int) -> None:
    tansu = draw_faults(seed, "tansu", 20)
    assert 3 <= len(tansu) <= 5
    assert all(f.kind != "broker_kill" for f in tansu), "Tansu keeps no log to restart from"
    assert any(f.kind in ("worker_kill", "worker_pause") for f in tansu)
    assert all(1.0 <= f.at_s <= 20 for f in tansu)
    assert [f.at_s for f in tansu] == sorted(f.at_s for f in tansu)
    for fault in tansu:
        if fault.kind == "worker_pause":  # past the session: the group must move on
            assert fault.hold_s > SESSION_TIMEOUT_S


def test_kafka_runs_also_kill_the_broker() -> None:
    kinds = {f.kind for seed in range(40) for f in draw_faults(seed, "kafka", 20)}
    assert kinds == {"worker_kill", "worker_pause", "mllp_kill", "erp_kill", "tryton_outage",
                     "broker_kill"}


def test_an_explicit_schedule() -> None:
    assert parse_schedule("9:tryton_outage::4, 3:worker_kill:w1:1.5,12:worker_pause:w2") == [
        Fault(3.0, "worker_kill", "w1", 1.5), Fault(9.0, "tryton_outage", "", 4.0),
        Fault(12.0, "worker_pause", "w2", SESSION_TIMEOUT_S + 2)]
    assert parse_schedule("") == []
    for bad in ("3:reboot", "x:worker_kill:w1", "3:worker_kill", "3:worker_pause:w9"):
        with pytest.raises(ValueError, match="AT:KIND"):
            parse_schedule(bad)


def test_how_a_fault_reads_in_the_line() -> None:
    assert str(Injected(Fault(3.0, "worker_kill", "w1", 1.5), 3.04)) == \
        "worker_kill(w1)@3.0s+1.5s"
    assert str(Injected(Fault(9.0, "tryton_outage", "", 4.0), 9.31)) == \
        "tryton_outage@9.3s+4.0s"


def test_seed_ranges() -> None:
    assert seeds("1-5") == [1, 2, 3, 4, 5]
    assert seeds("7") == [7]
    assert seeds("1-3,9") == [1, 2, 3, 9]
