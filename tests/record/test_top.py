"""spikebridge top: exposition parsing, Prometheus quantiles, the endpoint and daemon views."""

from __future__ import annotations

import io
import math
import selectors
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.codecs.native import NativeCodec
from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.engine.stats import BridgeStats
from bridge.frame import SpikeFrame
from bridge.record.intake import Intake
from bridge.record.top import (
    EndpointWatch,
    bucket_delta,
    histogram_quantile,
    main,
    parse_exposition,
    render_metrics,
)
from bridge.service.exporter import MetricsServer
from bridge.service.metrics import BridgeCollector

EXPOSITION = """\
# TYPE spikebridge_frames_received_total counter
spikebridge_frames_received_total{endpoint="in0"} 100
# TYPE spikebridge_frames_dropped_total counter
spikebridge_frames_dropped_total{endpoint="in0",reason="stale"} 7
spikebridge_frames_dropped_total{endpoint="in0",reason="bad_crc"} 0
# TYPE spikebridge_step_lateness_seconds histogram
spikebridge_step_lateness_seconds_bucket{le="1e-05"} 10
spikebridge_step_lateness_seconds_bucket{le="2e-05"} 90
spikebridge_step_lateness_seconds_bucket{le="0.001"} 100
spikebridge_step_lateness_seconds_bucket{le="+Inf"} 100
spikebridge_step_lateness_seconds_count 100
spikebridge_step_lateness_seconds_sum 0.003
"""


def test_parse_exposition() -> None:
    s = parse_exposition(EXPOSITION)
    assert s.get("spikebridge_frames_received_total", endpoint="in0") == 100
    assert s.get("spikebridge_frames_dropped_total", endpoint="in0", reason="stale") == 7
    assert s.get("spikebridge_frames_received_total", endpoint="nope") == 0
    assert s.buckets[("spikebridge_step_lateness_seconds", ())] == [
        (1e-5, 10), (2e-5, 90), (1e-3, 100), (math.inf, 100)
    ]
    assert s.label_values("spikebridge_frames_dropped_total", "reason") == ["stale", "bad_crc"]


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    b = [(1e-5, 10.0), (2e-5, 90.0), (1e-3, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.05, b) == pytest.approx(0.5e-5)
    assert histogram_quantile(0.5, b) == pytest.approx(1e-5 + 1e-5 * 40 / 80)
    assert histogram_quantile(0.99, b) == pytest.approx(2e-5 + (1e-3 - 2e-5) * 9 / 10)
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    # Beyond the last finite edge the answer is that edge: a lower bound.
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


def test_bucket_delta_and_counter_reset() -> None:
    before = [(1.0, 5.0), (math.inf, 8.0)]
    now = [(1.0, 6.0), (math.inf, 12.0)]
    assert bucket_delta(now, before) == [(1.0, 1.0), (math.inf, 4.0)]
    assert bucket_delta(before, now) == before  # went down: the daemon restarted
    assert bucket_delta(now, None) == now


def test_render_metrics_rates_and_drops() -> None:
    before = parse_exposition(EXPOSITION)
    after = parse_exposition(EXPOSITION.replace("} 100\n# TYPE spikebridge_frames_dropped",
                                                "} 300\n# TYPE spikebridge_frames_dropped"))
    text = "\n".join(render_metrics(after, before, 2.0, "test"))
    row = next(line for line in text.splitlines() if line.startswith("in0"))
    assert row.split()[:5] == ["in0", "100.0", "0.0", "300", "7"]
    assert "stale=7" in row and "bad_crc" not in row
    assert "step_lateness" in text and "since start" in text  # no new observations


@pytest.fixture
def metrics_url() -> Iterator[str]:
    stats = BridgeStats()
    inp = stats.add_input("in0")
    stats.add_output("out0").frames = 90
    inp.frames, inp.accepted = 100, 93
    inp.drop("stale", 7)
    for v in (5_000, 15_000, 15_000, 30_000, 2_000_000):
        stats.step_lateness.observe(v)
    registry = CollectorRegistry()
    registry.register(BridgeCollector(stats))
    server = MetricsServer("127.0.0.1", 0, registry)
    host, port = server.start()
    yield f"http://{host}:{port}/metrics"
    server.close()


@pytest.mark.integration
def test_daemon_view_reads_the_real_collector(metrics_url: str) -> None:
    out = io.StringIO()
    assert main(["--metrics", metrics_url, "--iterations", "2", "--interval", "0.05"],
                out=out) == 0
    text = out.getvalue()
    snapshots = text.split("spikebridge top  ")[1:]
    assert len(snapshots) == 2
    assert "\x1b[" not in text  # not a terminal: plain snapshots
    row = next(line for line in snapshots[1].splitlines() if line.startswith("in0"))
    assert row.split()[:5] == ["in0", "0.0", "0.0", "100", "7"]
    assert "stale=7" in row
    late = next(line for line in snapshots[0].splitlines() if line.startswith("step_lateness"))
    assert late.split()[-3:] == ["5", "since", "start"]


@pytest.mark.integration
def test_endpoint_view_counts_sources_gaps_and_active_neurons() -> None:
    spec = endpoint_spec("udp://127.0.0.1:0?format=native", "in")
    ep = open_endpoint(spec)
    watch = EndpointWatch(Intake(ep, make_codec(spec), spec.stream), top=2)
    port = ep.local_address()[1]  # type: ignore[attr-defined]
    codec = NativeCodec(0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for seq in (0, 1, 2, 5):  # 3 and 4 never sent
        tx.sendto(codec.encode(SpikeFrame.of([1, 7, 7 + seq], source=4, seq=seq))[0],
                  ("127.0.0.1", port))
        sent += 1
    tx.sendto(codec.encode(SpikeFrame.of([7], source=9, seq=0))[0], ("127.0.0.1", port))
    tx.sendto(b"junk", ("127.0.0.1", port))
    sent += 2
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    while watch.intake.datagrams < sent and sel.select(5.0):
        watch.drain()
    sel.close()
    tx.close()
    lines = watch.render(2.0)
    ep.close()
    text = "\n".join(lines)
    assert lines[1].split() == ["4", "2.0", "6.0", "4", "2"]
    assert lines[2].split() == ["9", "0.5", "0.5", "1", "0"]
    assert "dropped: 1" in text
    top = lines[lines.index("most active neurons (spikes/s over 2.0 s):") + 1:]
    assert [row.split() for row in top] == [["7", "3.0"], ["1", "2.0"]]


def test_config_without_metrics_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "b.toml"
    cfg.write_text('[[input]]\nurl = "udp://127.0.0.1:5000?neurons=10"\n')
    assert main([str(cfg)]) == 2


def test_bad_arguments(tmp_path: Path) -> None:
    assert main([]) == 2
    assert main(["--metrics", "http://x", "--interval", "0"]) == 2
    assert main(["udp://127.0.0.1:5000?bogus=1"]) == 2
