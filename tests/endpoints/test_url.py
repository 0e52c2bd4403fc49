"""The endpoint URL grammar: parse, print back, refuse what does not fit."""

from __future__ import annotations

import pytest

from bridge.endpoints.url import EndpointURL, parse_url
from bridge.errors import ConfigError


@pytest.mark.parametrize("text", [
    "udp://127.0.0.1:5000?format=legacy&neurons=100",
    "mcast://239.1.2.3:5000?iface=eth0&ttl=4",
    "serial:/dev/serial/by-id/usb-FTDI-if00?baud=4000000&format=edvs",
    "serial:loop://?format=board",
    "file:run.sbr",
    "loop://a",
])
def test_round_trip(text: str) -> None:
    url = parse_url(text)
    assert str(url) == text
    assert parse_url(str(url)) == url


def test_parts() -> None:
    url = parse_url("udp://[::1]:9000?neurons=3")
    assert url.scheme == "udp" and url.params["neurons"] == "3"
    assert url.host_port() == ("::1", 9000)
    assert parse_url("serial:/dev/ttyACM0").target == "/dev/ttyACM0"


@pytest.mark.parametrize(("text", "words"), [
    ("tcp://x:1", "scheme must be one of"),
    ("udp:x:1", "start udp://"),
    ("udp://", "names no address"),
    ("udp://h:1?a=1&a=2", "given twice"),
])
def test_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(text)
    assert words in str(err.value)


def test_bad_port() -> None:
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        EndpointURL("udp", "h:70000").host_port()


def test_plus_stays_a_plus() -> None:
    url = parse_url("serial:loop://?format=edvs&commands=0:E+,1:!M+")
    assert url.params["commands"] == "0:E+,1:!M+"
    assert parse_url(str(url)) == url
