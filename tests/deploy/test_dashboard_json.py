"""Structure of the Grafana dashboard (Grafana itself is not installed here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bridge.engine.stats import BridgeStats
from bridge.record.format import EndpointInfo
from bridge.record.recorder import Recorder
from bridge.service.metrics import register

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "spikebridge.json"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def exported_names() -> set[str]:
    """Every family the collector yields, with a recorder and a [realtime] setting asked for."""
    stats = BridgeStats()
    stats.add_input("in0").counters = {"reconnects": 0}  # an endpoint with counters of its own
    stats.add_output("out0")
    stats.latency("relay")
    stats.recorder = Recorder("unused.sbr", [EndpointInfo("in0", "udp://127.0.0.1:1", "in",
                                                          "native", 4)])  # never started
    stats.realtime_refused = {"priority": 1}
    reg = CollectorRegistry()
    register(stats, reg, build={"version": "0"})
    text = generate_latest(reg).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_panels_have_unique_ids_a_datasource_and_queries() -> None:
    dash = load()
    assert dash["uid"] == "spikebridge" and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_tile_the_grid_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_queries_name_only_exported_metrics_and_defined_variables() -> None:
    dash = load()
    names = exported_names()
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for metric in re.findall(r"\bspikebridge_[a-z_]+", expr):
                assert metric in names, f"{panel['title']}: {metric} is not exported"
            for var in re.findall(r"\$(\w+)", expr):
                assert var in variables or var.startswith("__"), f"{panel['title']}: ${var}"
            if "rate(" in expr or "increase(" in expr:
                assert "[$__rate_interval]" in expr, f"{panel['title']}: fixed rate window"


def test_the_required_views_are_there() -> None:
    panels = [p for p in load()["panels"] if p["type"] != "row"]

    def exprs(kind: str | None = None) -> str:
        return "\n".join(t["expr"] for p in panels if kind in (None, p["type"])
                         for t in p["targets"])

    heatmaps = exprs("heatmap")
    assert "spikebridge_step_lateness_seconds_bucket" in heatmaps
    assert "spikebridge_frame_latency_seconds_bucket" in heatmaps
    for p in panels:
        if p["type"] == "heatmap":
            assert p["targets"][0]["format"] == "heatmap" and "by (le)" in p["targets"][0]["expr"]
    series = exprs("timeseries")
    assert re.search(r"histogram_quantile\(0\.99, [^\n]*step_lateness", series)
    assert re.search(r"histogram_quantile\(0\.99, [^\n]*frame_latency", series)
    assert re.search(r"histogram_quantile\(0\.99, [^\n]*one_way_latency", series)
    assert re.search(r"by \(instance, endpoint\) \(rate\(spikebridge_frames_received_total", series)
    assert re.search(r"by \(instance, endpoint\) \(rate\(spikebridge_frames_sent_total", series)
    assert re.search(r"by \(instance, endpoint, reason\) \(rate\(spikebridge_frames_drop", series)
    assert "spikebridge_realtime_factor" in series
    for metric in ("endpoint_up", "serial_reconnects_total", "serial_crc_errors_total",
                   "watchdog_pings_total", "deadline_misses_total"):
        assert f"spikebridge_{metric}" in series, metric
    # The recorder's counters, every one of them, and the refused real-time settings.
    recorder = {n for n in exported_names() if n.startswith("spikebridge_record_")}
    assert len(recorder) == 6, recorder
    for metric in recorder:
        assert metric in series, metric
    assert "by (instance, reason) (rate(spikebridge_record_dropped_frames_total" in series
    assert "max by (instance, setting) (spikebridge_realtime_refused" in exprs("stat")


def test_every_exported_family_is_on_the_dashboard() -> None:
    """Nothing the daemon exports is left off (the standard process_/python_ ones aside)."""
    queried = set()
    for panel in load()["panels"]:
        for target in panel.get("targets", []):
            queried.update(re.findall(r"\bspikebridge_[a-z_]+", target["expr"]))
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported_names()}
    queried = {re.sub(r"_(bucket|count|sum)$", "", n) for n in queried}
    missing = families - queried - {"spikebridge_frames_accepted_total",
                                    "spikebridge_watchdog_timeout_seconds"}
    assert not missing, missing
