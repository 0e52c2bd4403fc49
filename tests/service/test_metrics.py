from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.engine.stats import BridgeStats
from bridge.errors import DROP_REASONS
from bridge.service.metrics import BridgeCollector, register

BUILD = {"version": "9.9.9", "python": "3.11.2", "numpy": "1.26.4", "brian2": ""}


def busy_stats() -> BridgeStats:
    stats = BridgeStats(miss_ns=1_500_000)
    cam = stats.add_input("cam")
    board = stats.add_output("board")
    cam.frames, cam.accepted, cam.spikes, cam.lost, cam.reordered = 120, 117, 4000, 2, 1
    cam.drop("bad_crc", 2)
    cam.drop("stale")
    cam.one_way.observe(40_000)
    board.frames, board.spikes, board.up = 117, 3900, 0
    board.drop("send_failed", 3)
    for ns in (5_000, 15_000, 1_600_000, 200_000_000):
        stats.step_lateness.observe(ns)
    stats.latency("cam->board").observe(30_000)
    stats.steps, stats.steps_skipped, stats.deadline_misses = 5000, 4, 2
    stats.realtime_factor = 0.98
    stats.serial_reconnects, stats.serial_crc_errors = 1, 2
    stats.watchdog_pings, stats.watchdog_usec = 7, 4_000_000
    stats.loop_ticks, stats.processor_errors = 9000, 1
    stats.realtime_refused.update(priority=1, mlock=0)
    return stats


def scrape(stats: BridgeStats) -> tuple[CollectorRegistry, str]:
    reg = CollectorRegistry()
    register(stats, reg, build=BUILD)
    return reg, generate_latest(reg).decode()


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_counters_and_gauges_read_the_stats_at_scrape_time() -> None:
    stats = busy_stats()
    reg, _ = scrape(stats)
    assert value(reg, "spikebridge_frames_received_total", endpoint="cam") == 120
    assert value(reg, "spikebridge_frames_accepted_total", endpoint="cam") == 117
    assert value(reg, "spikebridge_frames_sent_total", endpoint="board") == 117
    assert value(reg, "spikebridge_frames_received_total", endpoint="board") is None
    assert value(reg, "spikebridge_spikes_received_total", endpoint="cam") == 4000
    assert value(reg, "spikebridge_spikes_sent_total", endpoint="board") == 3900
    assert value(reg, "spikebridge_frames_lost_total", endpoint="cam") == 2
    assert value(reg, "spikebridge_frames_reordered_total", endpoint="cam") == 1
    assert value(reg, "spikebridge_frames_dropped_total", endpoint="cam", reason="bad_crc") == 2
    assert value(reg, "spikebridge_frames_dropped_total", endpoint="cam", reason="stale") == 1
    assert value(reg, "spikebridge_frames_dropped_total", endpoint="board",
                 reason="send_failed") == 3
    assert value(reg, "spikebridge_endpoint_up", endpoint="board") == 0
    assert value(reg, "spikebridge_endpoint_up", endpoint="cam") == 1
    for name, expected in (
        ("spikebridge_steps_total", 5000), ("spikebridge_steps_skipped_total", 4),
        ("spikebridge_deadline_misses_total", 2), ("spikebridge_realtime_factor", 0.98),
        ("spikebridge_serial_reconnects_total", 1), ("spikebridge_serial_crc_errors_total", 2),
        ("spikebridge_watchdog_pings_total", 7), ("spikebridge_watchdog_timeout_seconds", 4.0),
        ("spikebridge_loop_ticks_total", 9000), ("spikebridge_processor_errors_total", 1),
        ("spikebridge_miss_threshold_seconds", 0.0015),
    ):
        assert value(reg, name) == expected, name
    assert value(reg, "spikebridge_build_info", **BUILD) == 1
    assert value(reg, "spikebridge_realtime_refused", setting="priority") == 1
    assert value(reg, "spikebridge_realtime_refused", setting="mlock") == 0
    # Read at scrape time: a later change shows in the next scrape without re-registering.
    stats.inputs[0].frames += 5
    assert value(reg, "spikebridge_frames_received_total", endpoint="cam") == 125


def test_drop_reasons_are_exported_from_zero_where_they_apply() -> None:
    stats = busy_stats()
    reg, _ = scrape(stats)

    def exported(endpoint: str) -> set[str]:
        return {r for r in DROP_REASONS if value(
            reg, "spikebridge_frames_dropped_total", endpoint=endpoint, reason=r) is not None}

    assert exported("cam") == set(DROP_REASONS) - {"send_failed", "peer_unreachable"}
    assert "unrouted" in exported("cam")
    assert exported("board") == {"queue_full", "send_failed", "peer_unreachable"}
    # A reason that does not usually apply shows up once it is counted.
    stats.outputs[0].drop("oversized")
    assert exported("board") == {"queue_full", "send_failed", "peer_unreachable", "oversized"}


def test_unrouted_spikes_and_peer_up_are_exported() -> None:
    stats = busy_stats()
    stats.inputs[0].unrouted = 17
    stats.outputs[0].peer_up = 0
    stats.processor_unrouted = 4
    reg, _ = scrape(stats)
    assert value(reg, "spikebridge_spikes_dropped_total", endpoint="cam", reason="unrouted") == 17
    assert value(reg, "spikebridge_peer_up", endpoint="board") == 0
    assert value(reg, "spikebridge_processor_spikes_unrouted_total") == 4


def test_histograms_in_seconds_with_the_stats_buckets() -> None:
    stats = busy_stats()
    reg, text = scrape(stats)
    bucket = "spikebridge_step_lateness_seconds_bucket"
    assert value(reg, bucket, le="1e-05") == 1
    assert value(reg, bucket, le="2e-05") == 2
    assert value(reg, bucket, le="0.0015") == 2  # the miss threshold is an edge
    assert value(reg, bucket, le="0.002") == 3
    assert value(reg, bucket, le="0.1") == 3
    assert value(reg, bucket, le="+Inf") == 4
    assert value(reg, "spikebridge_step_lateness_seconds_count") == 4
    assert value(reg, "spikebridge_step_lateness_seconds_sum") == pytest.approx(0.20162)
    assert value(reg, "spikebridge_frame_latency_seconds_bucket",
                 path="cam->board", le="5e-05") == 1
    assert value(reg, "spikebridge_one_way_latency_seconds_count", endpoint="cam") == 1
    edges = [line for line in text.splitlines()
             if line.startswith("spikebridge_step_lateness_seconds_bucket")]
    assert len(edges) == len(stats.step_lateness.edges_ns) + 1


def test_a_fresh_stats_object_exports_every_family() -> None:
    stats = BridgeStats()
    stats.add_input("in0")
    stats.add_output("out0")
    _reg, text = scrape(stats)
    for family in (
        "frames_received_total", "frames_sent_total", "frames_dropped_total",
        "spikes_received_total", "spikes_sent_total", "step_lateness_seconds_bucket",
        "one_way_latency_seconds_bucket", "deadline_misses_total", "realtime_factor",
        "serial_reconnects_total", "serial_crc_errors_total", "watchdog_pings_total",
        "build_info",
    ):
        assert f"\nspikebridge_{family}" in text, family


def test_default_build_labels_name_this_version() -> None:
    from bridge import __version__

    labels = BridgeCollector(BridgeStats())._build
    assert labels["version"] == __version__
    assert set(labels) == {"version", "python", "numpy", "brian2"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_check_metrics_is_clean() -> None:
    _, text = scrape(busy_stats())
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


def test_an_endpoints_own_counters_are_read_live_at_scrape_time() -> None:
    from bridge.endpoints.base import CounterView

    class Ep:
        reconnects, slow_clients = 2, 0

    ep = Ep()
    stats = BridgeStats()
    stats.add_input("cam").counters = CounterView(ep, ("reconnects", "slow_clients"))
    stats.add_output("net")  # no counters of its own: no samples
    reg, _ = scrape(stats)
    assert value(reg, "spikebridge_endpoint_events_total", endpoint="cam",
                 counter="reconnects") == 2
    ep.slow_clients = 5  # the endpoint increments; the next scrape sees it
    reg, text = scrape(stats)
    assert value(reg, "spikebridge_endpoint_events_total", endpoint="cam",
                 counter="slow_clients") == 5
    assert not [line for line in text.splitlines()
                if line.startswith("spikebridge_endpoint_events_total") and '"net"' in line]
    with pytest.raises(KeyError):
        CounterView(ep, ("reconnects",))["slow_clients"]  # only the names it was given
