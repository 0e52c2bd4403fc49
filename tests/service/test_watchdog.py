from __future__ import annotations

import itertools

import pytest

from bridge.engine.stats import BridgeStats
from bridge.errors import ConfigError
from bridge.service.watchdog import WatchdogConfig, WatchdogPolicy, parse_config, watchdog_usec

MS = 1_000_000
S = 1_000_000_000


def run(policy: WatchdogPolicy, stats: BridgeStats, start: int, stop: int, step: int) -> list[int]:
    """Tick every ``step`` ns from ``start`` to ``stop``; the times at which a ping was due."""
    return [t for t in range(start, stop, step) if policy.tick(t, stats)]


def test_watchdog_usec_follows_sd_watchdog_enabled() -> None:
    assert watchdog_usec({}, 10) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "4000000"}, 10) == 4_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "10"}, 10) == 4_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "11"}, 10) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "x"}, 10) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "0"}, 10) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}, 10) == 0


def test_pings_at_half_the_period_not_more_often() -> None:
    stats = BridgeStats()
    policy = WatchdogPolicy(2_000_000)  # 2 s: ping every 1 s
    pings = run(policy, stats, 0, 5 * S, 10 * MS)
    assert pings == [0, 1 * S, 2 * S, 3 * S, 4 * S]


def test_first_ping_on_first_tick_then_interval_from_the_last_ping() -> None:
    stats = BridgeStats()
    policy = WatchdogPolicy(1_000_000)  # ping every 0.5 s
    pings = run(policy, stats, 7 * MS, 7 * MS + 2 * S, 30 * MS)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert pings[0] == 7 * MS
    assert all(500 * MS <= g < 530 * MS for g in gaps)


def test_a_stalled_loop_gets_no_ping_until_it_ticks_steadily_again() -> None:
    stats = BridgeStats()
    policy = WatchdogPolicy(2_000_000, stall_ns=200 * MS)
    assert policy.tick(0, stats)
    # The loop hangs for 3 s: the tick that ends the hang is due but unhealthy.
    assert not policy.tick(3 * S, stats)
    assert "stalled" in policy.unhealthy
    # The next iteration comes promptly: healthy, pinged at once.
    assert policy.tick(3 * S + 10 * MS, stats)
    assert policy.unhealthy == ""


def test_iterations_slower_than_the_stall_limit_never_ping() -> None:
    stats = BridgeStats()
    policy = WatchdogPolicy(10_000_000, stall_ns=500 * MS)
    assert policy.tick(0, stats)
    assert run(policy, stats, 700 * MS, 20 * S, 700 * MS) == []


def test_deadline_misses_over_the_threshold_withhold_pings() -> None:
    stats = BridgeStats()
    policy = WatchdogPolicy(2_000_000, max_misses=5)  # window = 2 s
    pings = []
    for t in range(0, 10 * S, 10 * MS):
        if 3 * S <= t < 4 * S:
            stats.deadline_misses += 1   # 100 misses in one second
        if policy.tick(t, stats):
            pings.append(t)
    # The ping due at 4 s sees 100 misses in the window and is withheld, and so is every
    # tick until the 2 s window (sampled every 250 ms) has moved past the last miss at 4 s.
    assert [p for p in pings if p < 6 * S] == [0, 1 * S, 2 * S, 3 * S]
    assert 6 * S <= pings[4] <= 6 * S + 250 * MS
    assert policy.unhealthy == ""


def test_misses_under_the_threshold_keep_pings_going() -> None:
    stats = BridgeStats()
    policy = WatchdogPolicy(2_000_000, max_misses=5)
    pings = []
    for t in range(0, 6 * S, 10 * MS):
        if t % S == 0:
            stats.deadline_misses += 1  # one per second: 2-3 per window
        if policy.tick(t, stats):
            pings.append(t)
    assert pings == [0, 1 * S, 2 * S, 3 * S, 4 * S, 5 * S]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        WatchdogPolicy(0)
    with pytest.raises(ValueError):
        WatchdogPolicy(1000, stall_ns=0)
    with pytest.raises(ValueError):
        WatchdogPolicy(1000, max_misses=-1)


def test_parse_config() -> None:
    assert parse_config({}, "watchdog") == WatchdogConfig()
    cfg = parse_config({"stall_ms": 250, "max_misses": 0, "window_s": 5}, "watchdog")
    assert cfg == WatchdogConfig(stall_ns=250 * MS, max_misses=0, window_ns=5 * S)
    policy = cfg.policy(4_000_000)
    assert (policy.interval_ns, policy.stall_ns, policy.window_ns) == (2 * S, 250 * MS, 5 * S)
    with pytest.raises(ConfigError, match=r"watchdog\.stall_ms"):
        parse_config({"stall_ms": -1}, "watchdog")
    with pytest.raises(ConfigError, match=r"watchdog\.max_misses"):
        parse_config({"max_misses": 1.5}, "watchdog")
    with pytest.raises(ConfigError, match=r"watchdog\.window"):
        parse_config({"window": 1}, "watchdog")
