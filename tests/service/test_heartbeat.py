from __future__ import annotations

import logging

from bridge.engine.stats import BridgeStats
from bridge.service.heartbeat import Heartbeat
from bridge.service.notify import Notifier
from bridge.service.watchdog import WatchdogPolicy

MS = 1_000_000
S = 1_000_000_000


class Recorder:
    """A notify transport that keeps what it was given."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> bool:
        self.messages.append(message)
        return True


def test_pings_are_sent_and_counted_and_status_refreshed() -> None:
    stats = BridgeStats()
    rec = Recorder()
    beat = Heartbeat(stats, Notifier({}, sender=rec), WatchdogPolicy(1_000_000),
                     status_period_ns=S)
    for t in range(0, 2 * S + 1, 50 * MS):
        beat(t)
    assert rec.messages.count("WATCHDOG=1") == 5  # 0, 0.5, 1, 1.5, 2 s
    assert stats.watchdog_pings == 5
    status = [m for m in rec.messages if m.startswith("STATUS=")]
    assert len(status) == 3 and status[0].startswith("STATUS=running:")
    assert rec.messages[0] == "WATCHDOG=1"


def test_withheld_pings_are_logged_once_and_shown_in_status(caplog) -> None:
    stats = BridgeStats()
    rec = Recorder()
    beat = Heartbeat(stats, Notifier({}, sender=rec),
                     WatchdogPolicy(1_000_000, stall_ns=100 * MS), status_period_ns=S)
    with caplog.at_level(logging.WARNING, logger="bridge.service.heartbeat"):
        beat(0)
        beat(2 * S)           # after a 2 s stall: due but unhealthy
        beat(2 * S + 50 * MS)  # still due (no ping since 0), and ticking promptly again
    assert rec.messages.count("WATCHDOG=1") == 2
    assert [r.getMessage() for r in caplog.records] == [
        "withholding watchdog pings: loop stalled for 2.000 s",
        "loop healthy again; watchdog pings resumed",
    ]
    assert any("watchdog withheld: loop stalled" in m for m in rec.messages)


def test_without_watchdog_or_systemd_nothing_is_sent() -> None:
    stats = BridgeStats()
    beat = Heartbeat(stats, Notifier({}), None)
    for t in range(0, S, 10 * MS):
        beat(t)
    assert stats.watchdog_pings == 0


def test_ready_goes_out_once_on_the_first_tick_before_any_ping() -> None:
    stats = BridgeStats()
    rec = Recorder()
    beat = Heartbeat(stats, Notifier({}, sender=rec), WatchdogPolicy(1_000_000),
                     ready="ready: 1 in, 1 out")
    assert rec.messages == []
    beat(0)
    beat(600 * MS)
    assert rec.messages[:2] == ["READY=1\nSTATUS=ready: 1 in, 1 out", "WATCHDOG=1"]
    assert sum(m.startswith("READY=1") for m in rec.messages) == 1
