"""Deadline arithmetic on a fake clock: no drift, lateness, catch-up and skip policies."""

from __future__ import annotations

import pytest

from bridge.engine.clock import FakeClock
from bridge.engine.pacer import Pacer

MS = 1_000_000


def test_deadlines_are_absolute_so_jitter_does_not_accumulate() -> None:
    clock = FakeClock(start_ns=5 * MS)
    pacer = Pacer(MS)
    pacer.start(clock.monotonic_ns())
    lateness = []
    for k in range(1, 10_001):
        clock.set(5 * MS + k * MS + (k * 7919) % 300_000)  # wake 0..300 us late, every step
        due = pacer.due(clock.monotonic_ns())
        assert due is not None and due.step == k and due.skipped == 0
        lateness.append(due.lateness_ns)
    assert pacer.deadline_ns == 5 * MS + 10_001 * MS  # exactly start + k*dt: no drift
    assert max(lateness) < 300_000


def test_nothing_is_due_before_the_deadline_and_sleep_leaves_room_to_spin() -> None:
    pacer = Pacer(MS, spin_ns=100_000)
    pacer.start(0)
    assert pacer.due(MS - 1) is None
    assert pacer.sleep_ns(0) == MS - 100_000
    assert pacer.sleep_ns(MS - 50_000) == 0
    due = pacer.due(MS)
    assert due is not None and due.lateness_ns == 0


def test_catch_up_runs_every_missed_step() -> None:
    pacer = Pacer(MS, policy="catch-up")
    pacer.start(0)
    now = 5 * MS + 10  # four deadlines were missed
    steps = []
    while (due := pacer.due(now)) is not None:
        steps.append((due.step, due.lateness_ns, due.skipped))
    assert steps == [(1, 4 * MS + 10, 0), (2, 3 * MS + 10, 0), (3, 2 * MS + 10, 0),
                     (4, MS + 10, 0), (5, 10, 0)]


def test_skip_runs_the_newest_step_and_counts_the_rest() -> None:
    pacer = Pacer(MS, policy="skip")
    pacer.start(0)
    due = pacer.due(5 * MS + 10)
    assert due is not None and (due.step, due.skipped, due.lateness_ns) == (5, 4, 10)
    assert pacer.due(5 * MS + 10) is None
    assert pacer.elapsed_steps() == 5


def test_catch_up_gives_up_beyond_its_bound() -> None:
    pacer = Pacer(MS, policy="catch-up", max_catchup=10)
    pacer.start(0)
    due = pacer.due(100 * MS)
    assert due is not None and due.skipped == 99 and due.step == 100


def test_realtime_factor() -> None:
    pacer = Pacer(MS)
    pacer.start(0)
    for k in range(1, 101):
        pacer.due(k * MS)
    assert pacer.realtime_factor(100 * MS) == pytest.approx(1.0)
    assert pacer.realtime_factor(200 * MS) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs", [{"dt_ns": 0}, {"dt_ns": MS, "policy": "late"},
                                    {"dt_ns": MS, "spin_ns": MS}])
def test_bad_settings_are_value_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Pacer(**kwargs)  # type: ignore[arg-type]
