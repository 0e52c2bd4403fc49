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


def raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` as is and read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def test_head_has_the_get_headers_and_no_body(server) -> None:
    port = server[0].address[1]
    get_reply = raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head_reply = raw(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = get_reply.partition(b"\r\n\r\n")
    assert head_reply == head + b"\r\n\r\n" and body
    assert f"Content-Length: {len(body)}".encode() in head


def test_other_methods_bad_requests_and_huge_heads_are_refused(server) -> None:
    port = server[0].address[1]
    post = raw(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in post
    assert raw(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000
    assert raw(port, big).startswith(b"HTTP/1.1 431")
    assert server[0].scrapes == 0


def test_a_client_that_never_finishes_its_request_is_closed_at_its_deadline() -> None:
    srv = MetricsServer("127.0.0.1", 0, CollectorRegistry(), request_timeout_s=0.2)
    port = srv.start()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metr")
            assert s.recv(100) == b""  # closed by the server, without a reply
        assert srv.timed_out == 1 and srv.connections == 0
    finally:
        srv.close()


def test_beyond_the_cap_the_oldest_unfinished_connection_makes_room() -> None:
    srv = MetricsServer("127.0.0.1", 0, CollectorRegistry(), max_connections=4)
    port = srv.start()[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
    try:
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        assert srv.evicted >= 7 and srv.connections <= 4
        assert idle[0].recv(100) == b""  # the oldest was closed
    finally:
        for s in idle:
            s.close()
        srv.close()
