"""A real Prometheus scrapes a running spikebridge; every dashboard query must return series."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.endpoints import endpoint_spec, make_codec
from bridge.frame import SpikeFrame

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "spikebridge.json"
PROMETHEUS = shutil.which("prometheus")
SCRAPE_S = 1
RATE_WINDOW = "5s"  # what $__rate_interval becomes: several scrapes at 1 s


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Traffic(threading.Thread):
    """Native frames with sequence numbers and send times, plus some garbage, to the daemon."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.addr = ("127.0.0.1", port)
        self.codec = make_codec(endpoint_spec(f"udp://127.0.0.1:{port}?neurons=64", "out"))
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            seq = 0
            while not self.stop.wait(0.004):
                seq += 1
                frame = SpikeFrame.of([seq % 64, (seq * 7) % 64], source=1, seq=seq,
                                      t_sent_ns=time.time_ns())
                for datagram in self.codec.encode(frame):
                    s.sendto(datagram, self.addr)
                if seq % 10 == 0:
                    s.sendto(b"not a spike frame", self.addr)  # a counted drop
                self.sent += 1


def drain(sock: socket.socket) -> None:
    """Read the daemon's notifications as a service manager would, until the socket closes."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, object]]:
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian package prometheus)")
    tmp: Path = tmp_path_factory.mktemp("prom")
    in_port, out_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    metrics_port, prom_port, dv_port = free_port(), free_port(), free_port()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", out_port))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    threading.Thread(target=drain, args=(notify,), daemon=True).start()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    env.pop("JOURNAL_STREAM", None)
    # A config rather than --in/--out: the recorder's panels need [record], and the refused
    # real-time settings panel a [realtime] setting that the system refuses (a CPU that is
    # not there; the daemon warns and runs on).
    config = tmp / "bridge.toml"
    config.write_text(
        "[bridge]\nnode = 1\ndt_ms = 1.0\n"
        f"[[input]]\nurl = \"udp://127.0.0.1:{in_port}\"\nname = \"sim\"\nneurons = 64\n"
        f"[[output]]\nurl = \"udp://127.0.0.1:{out_port}\"\nname = \"monitor\"\nneurons = 64\n"
        # a DV server output: an endpoint with counters of its own (endpoint_events_total)
        f"[[output]]\nurl = \"dv+tcp://127.0.0.1:{dv_port}?width=8&height=4\"\n"
        "name = \"camera\"\nneurons = 64\n"
        f"[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
        f"[realtime]\ncpus = [{(os.cpu_count() or 1) + 1000}]\n"
        f"[record]\npath = \"{tmp / 'run-{start}.sbr'}\"\n")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    shutil.copy(DEPLOY / "prometheus" / "spikebridge-rules.yml", tmp / "spikebridge-rules.yml")
    (tmp / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n"
        "rule_files:\n  - spikebridge-rules.yml\n"
        "scrape_configs:\n  - job_name: spikebridge\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    traffic = Traffic(in_port)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        wait_until(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).status == 200, 20, "spikebridge")
        traffic.start()
        wait_until(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{prom_port}/-/ready", timeout=1).status == 200, 20, "prometheus")
        # Enough scrapes with traffic for every rate window to hold several samples.
        wait_until(lambda: len(query(api, f"count_over_time(up[{RATE_WINDOW}])")) == 1 and float(
            query(api, f"count_over_time(up[{RATE_WINDOW}])")[0]["value"][1]) >= 5, 30, "scrapes")
        yield {"api": api, "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    finally:
        traffic.stop.set()
        for proc in (prom, daemon):
            if proc.poll() is None:
                proc.terminate()
        prom.wait(timeout=20)
        assert daemon.wait(timeout=20) == 0, daemon.stderr.read() if daemon.stderr else ""
        for proc in (prom, daemon):
            if proc.stderr is not None:
                proc.stderr.close()
        sink.close()
        notify.close()


def query(api: str, promql: str) -> list[dict]:
    reply = http_json(f"{api}/query?" + urllib.parse.urlencode({"query": promql}))
    assert reply["status"] == "success", reply
    return list(reply["data"]["result"])


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_WINDOW).replace("$instance", ".*")


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=lambda v: v)
def test_every_dashboard_query_returns_series(stack, panel: str, expr: str) -> None:
    result = query(str(stack["api"]), grafana_to_promql(expr))
    assert result, f"{panel}: no series for {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(v == v for v in values), f"{panel}: only NaN for {expr}"  # data, not empty buckets


def test_the_instance_variable_finds_the_daemon(stack) -> None:
    dash = json.loads(DASHBOARD.read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "instance")
    metric = var["definition"].split("(", 1)[1].split(",", 1)[0]
    assert [r["metric"]["instance"] for r in query(str(stack["api"]), metric)]


def test_traffic_shows_in_the_series(stack) -> None:
    api = str(stack["api"])
    rate_in = query(
        api, f'rate(spikebridge_frames_received_total{{endpoint="sim"}}[{RATE_WINDOW}])'
    )
    assert float(rate_in[0]["value"][1]) > 0  # the sender's pace depends on the machine's load
    bad = query(api, 'sum(spikebridge_frames_dropped_total{endpoint="sim"})')
    assert float(bad[0]["value"][1]) > 0
    lateness = query(api, "spikebridge_step_lateness_seconds_count")
    assert float(lateness[0]["value"][1]) > 1000
    one_way = query(api, 'spikebridge_one_way_latency_seconds_count{endpoint="sim"}')
    assert float(one_way[0]["value"][1]) > 0
    pings = query(api, "spikebridge_watchdog_pings_total")
    assert float(pings[0]["value"][1]) >= 2
    recorded = query(api, f"rate(spikebridge_record_frames_total[{RATE_WINDOW}])")
    assert float(recorded[0]["value"][1]) > 0
    refused = query(api, "spikebridge_realtime_refused")
    assert {r["metric"]["setting"]: float(r["value"][1]) for r in refused} == {"cpus": 1.0}


def test_the_alert_rules_load_and_evaluate(stack) -> None:
    reply = http_json(f"{stack['api']}/rules")
    rules = [r for g in reply["data"]["groups"] for r in g["rules"]]
    assert len(rules) >= 5
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
    names = {r["name"] for r in rules}
    assert {"SpikebridgeDown", "SpikebridgeWatchdogPingsStopped", "SpikebridgeDeadlineMisses",
            "SpikebridgeDropRate", "SpikebridgeSerialDisconnected"} <= names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_live_exposition_passes_promtool(stack) -> None:
    with urllib.request.urlopen(str(stack["metrics"]), timeout=5) as resp:
        text = resp.read().decode()
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                          capture_output=True, timeout=30)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and not report.strip(), report
