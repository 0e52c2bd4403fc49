"""udp:// and mcast:// endpoints on loopback: bind, send, receive, refuse, count."""

from __future__ import annotations

import socket
import time

import pytest

from bridge.endpoints import endpoint_spec, open_endpoint
from bridge.errors import ConfigError, EndpointError
from bridge.testing import free_udp_port


def test_send_and_receive() -> None:
    rx = open_endpoint(endpoint_spec("udp://127.0.0.1:0?neurons=1", "in"))
    port = rx.local_address()[1]  # type: ignore[attr-defined]
    tx = open_endpoint(endpoint_spec(f"udp://127.0.0.1:{port}?neurons=1", "out"))
    assert rx.recv() is None
    assert tx.send(b"hello")
    time.sleep(0.05)
    got = rx.recv()
    assert got is not None and bytes(got[0]) == b"hello" and got[1][0] == "127.0.0.1"
    assert "bound 127.0.0.1" in rx.describe()
    rx.close()
    tx.close()
    rx.close()  # idempotent


def test_recv_wait_times_out_without_data() -> None:
    rx = open_endpoint(endpoint_spec("udp://127.0.0.1:0?neurons=1", "in"))
    t0 = time.monotonic()
    assert rx.recv_wait(20_000_000) is None  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 1.0
    rx.close()


def test_send_to_a_closed_port_is_refused_not_raised() -> None:
    port = free_udp_port()
    tx = open_endpoint(endpoint_spec(f"udp://127.0.0.1:{port}?neurons=1", "out"))
    results = [tx.send(b"x") for _ in range(3)]
    time.sleep(0.05)
    results += [tx.send(b"x") for _ in range(3)]
    assert False in results  # the ICMP port-unreachable surfaces as a refused send
    tx.close()


def test_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(EndpointError, match="in use"):
            open_endpoint(endpoint_spec(f"udp://127.0.0.1:{port}?neurons=1", "in"))


def test_unresolvable_host() -> None:
    with pytest.raises(EndpointError, match="cannot resolve"):
        open_endpoint(endpoint_spec("udp://no-such-host.invalid:5?neurons=1", "out"))


def test_multicast_on_loopback() -> None:
    port = free_udp_port()
    url = f"mcast://239.7.7.7:{port}?iface=lo&neurons=1"
    rx = open_endpoint(endpoint_spec(url, "in"))
    tx = open_endpoint(endpoint_spec(url + "&ttl=0", "out"))
    assert tx.send(b"to-the-group")
    time.sleep(0.05)
    got = rx.recv()
    assert got is not None and bytes(got[0]) == b"to-the-group"
    rx.close()
    tx.close()


@pytest.mark.parametrize(("url", "words"), [
    ("mcast://10.0.0.1:5?neurons=1", "not a multicast group"),
    ("mcast://239.1.1.1:5?neurons=1&iface=nosuch0", "no network interface"),
    ("mcast://239.1.1.1:5?neurons=1&ttl=300", "ttl must be"),
    ("udp://127.0.0.1:5?neurons=1&rcvbuf=-1", "byte count"),
])
def test_bad_options(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        open_endpoint(endpoint_spec(url, "out" if "ttl" in url else "in"))
