from __future__ import annotations

from bridge.engine.stats import BridgeStats
from bridge.service.status import StatusLine

S = 1_000_000_000


def test_first_call_summarises_then_rates_over_the_interval() -> None:
    stats = BridgeStats()
    a, out = stats.add_input("cam"), stats.add_output("board")
    line = StatusLine()
    assert line(0, stats) == "running: 1 in, 1 out, 0 dropped so far"
    a.frames, a.spikes, a.accepted = 2000, 50_000, 1990
    a.drop("bad_crc", 10)
    out.frames, out.spikes = 1000, 3000
    for _ in range(99):
        stats.step_lateness.observe(15_000)
    stats.step_lateness.observe(400_000)
    stats.steps, stats.deadline_misses, stats.realtime_factor = 2000, 3, 0.995
    assert line(2 * S, stats) == (
        "in 1000 fr/s 25.0k spk/s, out 500 fr/s 1500 spk/s, drops 5/s (10 total), "
        "lateness p99 20us, misses 3, rtf 0.99"
    )
    # The next interval sees only what changed since: nothing.
    assert line(3 * S, stats) == (
        "in 0 fr/s 0 spk/s, out 0 fr/s 0 spk/s, drops 0/s (10 total), lateness p99 -, "
        "misses 3, rtf 0.99"
    )


def test_relay_mode_reports_frame_latency() -> None:
    stats = BridgeStats()
    inp = stats.add_input("in0")
    hist = stats.latency("in0->out0")
    line = StatusLine()
    line(0, stats)
    inp.frames = 10
    for _ in range(10):
        hist.observe(150_000_000)  # beyond the last edge
    assert line(S, stats).endswith("latency p99 >max")


def test_totals_since_start() -> None:
    stats = BridgeStats()
    a, b = stats.add_input("a"), stats.add_output("b")
    a.frames, b.frames = 10, 9
    a.drop("stale")
    assert StatusLine.totals(stats) == "10 frames in, 9 out, 1 dropped"
    stats.steps, stats.deadline_misses = 100, 2
    assert StatusLine.totals(stats).endswith(", 100 steps, 2 deadline misses")
