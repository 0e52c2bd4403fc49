from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from bridge.engine.stats import BridgeStats
from bridge.errors import EndpointError
from bridge.service.exporter import MetricsServer
from bridge.service.metrics import register

pytestmark = pytest.mark.integration


@pytest.fixture
def server():
    stats = BridgeStats()
    stats.add_input("in0").frames = 42
    reg = CollectorRegistry()
    register(stats, reg, build={"version": "0"})
    srv = MetricsServer("127.0.0.1", 0, reg, poll_s=0.02)
    srv.start()
    yield srv, stats
    srv.close()


def get(url: str, accept: str = "") -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_serves_the_exposition_on_loopback(server) -> None:
    srv, stats = server
    host, port = srv.address
    assert host == "127.0.0.1" and port > 0
    code, ctype, body = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert 'spikebridge_frames_received_total{endpoint="in0"} 42.0' in body
    stats.inputs[0].frames = 43
    assert 'endpoint="in0"} 43.0' in get(f"http://127.0.0.1:{port}/metrics")[2]
    assert srv.scrapes == 2


def test_openmetrics_when_asked(server) -> None:
    port = server[0].address[1]
    code, ctype, body = get(f"http://127.0.0.1:{port}/metrics",
                            accept="application/openmetrics-text; version=1.0.0")
    assert code == 200 and ctype.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


def test_other_paths(server) -> None:
    port = server[0].address[1]
    assert get(f"http://127.0.0.1:{port}/")[0] == 200
    assert get(f"http://127.0.0.1:{port}/nope")[0] == 404


def test_a_taken_port_is_an_endpoint_error(server) -> None:
    port = server[0].address[1]
    other = MetricsServer("127.0.0.1", port, CollectorRegistry(), poll_s=0.02)
    with pytest.raises(EndpointError, match=f"127.0.0.1:{port}"):
        other.start()


def test_close_releases_the_port() -> None:
    srv = MetricsServer("127.0.0.1", 0, CollectorRegistry(), poll_s=0.02)
    port = srv.start()[1]
    srv.close()
    srv.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this build")
    srv = MetricsServer("::1", 0, CollectorRegistry(), poll_s=0.02)
    try:
        port = srv.start()[1]
    except EndpointError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert get(f"http://[::1]:{port}/metrics")[0] == 200
    finally:
        srv.close()
