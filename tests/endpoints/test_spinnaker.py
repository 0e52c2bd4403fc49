"""spinnaker:// endpoints on loopback: the handshake, its failures, START/STOP, IP tags.

The toolchain is played by a socket connected to the notification port, exactly as
spinn_front_end_common's NotificationProtocol opens its EIEIOConnection; the databases use the
toolchain's own schema (tests/endpoints/spinnaker_db.py). The endpoints are driven by hand
(``service(now)`` with a made-up ``now``, ``recv``), so no test waits for a timer.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from spinnaker_db import Db, Pop

from bridge.codecs.spinnaker import (
    DATABASE_ACK,
    KeyTable,
    SpinnakerCodec,
    iptag_set_request,
    parse_command,
    scp_reply_ok,
)
from bridge.config import config_from_flags
from bridge.endpoints import endpoint_spec, open_endpoint
from bridge.endpoints.spif import SpifEndpoint, start_command, stop_command
from bridge.endpoints.spinnaker import _LISTENERS, SpinnakerEndpoint
from bridge.errors import REASON_INDEX, ConfigError, DecodeError
from bridge.frame import SpikeFrame
from bridge.testing import RunningBridge, UdpPeer, free_udp_port, wait_for

S = 1_000_000_000
START, STOP = b"\x0b\x40", b"\x0a\x40"
KEYS = [0x200 + 16 * i for i in range(8)]  # not base + i: sPyNNaker leaves colour bits


class Toolchain:
    """The notifying side: a socket connected to the notification port, as the toolchain's."""

    def __init__(self, notify: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.connect(("127.0.0.1", notify))
        self.sock.settimeout(0.01)

    def notify(self, path: str) -> None:
        self.sock.send(b"\x01\x40" + path.encode())

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def ack(self) -> bytes | None:
        try:
            return self.sock.recv(100)
        except (TimeoutError, BlockingIOError):
            return None

    def close(self) -> None:
        self.sock.close()


def lpg(keys: list[int], t: int = 0) -> bytes:
    """A Live Packet Gatherer message: payload-prefix timestamp, 32-bit keys (count, 0x38)."""
    return struct.pack(f"<BBI{len(keys)}I", len(keys), 0x38, t, *keys)


def drive(eps: list[Any], now: int = 0, until: Any = None, limit: float = 5.0) -> None:
    """Run housekeeping until ``until()`` holds (the database is read in a thread)."""
    end = time.monotonic() + limit
    while True:
        for ep in eps:
            ep.service(now)
        if until is None or until() or time.monotonic() > end:
            return
        time.sleep(0.005)


def recv_one(ep: Any, limit: float = 2.0) -> bytes:
    """The next datagram the endpoint hands the loop."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = ep.recv()
        if got is not None:
            return bytes(got[0])
        time.sleep(0.005)
    pytest.fail("nothing arrived")


def opened(url: str, role: str = "in") -> Any:
    return open_endpoint(endpoint_spec(url, role))


@pytest.fixture
def notify() -> Any:
    port = free_udp_port()
    yield port
    assert not _LISTENERS, "an endpoint left its listener open"


def test_handshake_maps_keys_and_acks_from_the_notification_port(tmp_path: Path,
                                                                 notify: int) -> None:
    lpg_port = free_udp_port()
    db = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", lpg_port, 1))}).write(tmp_path / "a.db")
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8")
    tc = Toolchain(notify)
    try:
        assert ep.state == "waiting"
        tc.notify(db)
        acks: list[bytes] = []
        drive([ep], until=lambda: bool(acks.append(tc.ack() or b"") or acks[-1]))
        assert acks[-1] == DATABASE_ACK  # a connected socket hears only the notify port
        assert ep.state == "ready"
        board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        board.sendto(lpg([KEYS[5]]), ("127.0.0.1", lpg_port))  # tag=db: where the DB points
        early = recv_one(ep)
        with pytest.raises(DecodeError, match="not started") as err:  # not running yet
            ep.codec.decode(early)
        assert err.value.reason == "not_running"
        tc.send(START)
        drive([ep], until=lambda: ep.state == "running")
        board.sendto(lpg([KEYS[5], KEYS[0], KEYS[7]], 3), ("127.0.0.1", lpg_port))
        assert ep.codec.decode(recv_one(ep)).ids.tolist() == [5, 0, 7]
        tc.send(STOP)
        drive([ep], until=lambda: ep.state == "stopped")
        assert ep.control == {"database": 1, "start": 1, "stop": 1}
        board.close()
    finally:
        tc.close()
        ep.close()


def test_a_second_run_rereads_and_keys_may_change(tmp_path: Path, notify: int) -> None:
    port = free_udp_port()
    one = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", port, 1))}).write(tmp_path / "1.db")
    two = Db({"pop": Pop([k + 0x10000 for k in KEYS], lpg=("127.0.0.1", port, 1))}
             ).write(tmp_path / "2.db")
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8")
    tc = Toolchain(notify)
    try:
        for path in (one, two):
            tc.notify(path)
            drive([ep], until=lambda: ep.state == "ready")
            tc.send(START)
            drive([ep], until=lambda: ep.state == "running")
        with pytest.raises(DecodeError, match="not in the label's table"):
            ep.codec.decode(lpg([KEYS[1]]))  # the first run's key means nothing now
        assert ep.codec.decode(lpg([KEYS[1] + 0x10000])).ids.tolist() == [1]
    finally:
        tc.close()
        ep.close()


@pytest.mark.parametrize(("url_extra", "pops", "message"), [
    ("neurons=8", {"other": Pop(KEYS)}, "label 'pop' is not in the database"),
    ("neurons=10", {"pop": Pop(KEYS, lpg=("127.0.0.1", 1, 1))},
     "has 8 atoms in the database but neurons=10"),
    ("neurons=8", {"pop": Pop(KEYS)}, "has no live output"),
    ("neurons=8", {"pop": Pop(KEYS, lpg=("127.0.0.1", 1, 1), strip=False)},
     "keeps SDP headers"),
])
def test_a_label_the_database_cannot_serve_marks_the_endpoint_down(
        tmp_path: Path, notify: int, caplog: pytest.LogCaptureFixture, url_extra: str,
        pops: dict[str, Pop], message: str) -> None:
    db = Db(pops).write(tmp_path / "x.db")
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&{url_extra}")
    tc = Toolchain(notify)
    try:
        with caplog.at_level(logging.ERROR, logger="spikebridge.spinnaker"):
            tc.notify(db)
            drive([ep], until=lambda: ep.state == "down")
        assert ep.state == "down" and message in ep.why
        assert any(message in r.getMessage() for r in caplog.records)
        drive([ep], until=lambda: tc.ack() is not None)  # the toolchain still runs
        tc.send(START)
        drive([ep], now=S)
        with pytest.raises(DecodeError, match=message) as err:  # its frames are counted drops
            ep.codec.decode(lpg([KEYS[0]]))
        assert err.value.reason == "not_running"
    finally:
        tc.close()
        ep.close()


def test_an_unreadable_database_is_not_acknowledged(tmp_path: Path, notify: int,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8")
    tc = Toolchain(notify)
    try:
        tc.notify(str(tmp_path / "no-such.db"))
        drive([ep], until=lambda: ep.state == "down")
        assert "cannot open" in ep.why and ep.control["db_unreadable"] == 1
        assert tc.ack() is None  # the toolchain times out, naming the missing confirmation
        assert "not acknowledging" in caplog.text
    finally:
        tc.close()
        ep.close()


def test_a_silent_database_is_logged_and_counted_then_read(tmp_path: Path, notify: int,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    path = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", free_udp_port(), 1))}).write(tmp_path / "s.db")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the reader waits on the lock: the database stays silent
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8")
    tc = Toolchain(notify)
    try:
        tc.notify(path)
        drive([ep], now=0, until=lambda: ep.state == "reading")
        drive([ep], now=6 * S)
        assert ep.control.get("db_timeout") == 1 and ep.state == "reading"
        assert "not read after 5 s" in caplog.text
        lock.execute("COMMIT")
        drive([ep], now=7 * S, until=lambda: ep.state == "ready")
        assert tc.ack() == DATABASE_ACK
    finally:
        lock.close()
        tc.close()
        ep.close()


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x01", "truncated"),
    (b"\xff\xff\xff\xff", "malformed"),     # a data message, not a command
    (b"\x05\x40", "malformed"),             # a command outside the notification protocol
    (b"\x0b\x40\x00", "oversized"),
    (b"\x01\x40\xff\xfe", "malformed"),     # a path that is not UTF-8
])
def test_garbage_commands_are_logged_and_counted(notify: int, caplog: pytest.LogCaptureFixture,
                                                 data: bytes, reason: str) -> None:
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8")
    tc = Toolchain(notify)
    try:
        tc.send(data)
        drive([ep], until=lambda: ep.control.get(reason) == 1)
        assert ep.control == {reason: 1} and ep.state == "waiting"
        assert f"dropped a control message ({reason})" in caplog.text
    finally:
        tc.close()
        ep.close()


def test_a_notification_from_an_unexpected_host_is_dropped(tmp_path: Path, notify: int,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    db = Db({"pop": Pop(KEYS)}).write(tmp_path / "h.db")
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8&toolchain=127.0.0.1/32")
    tc = Toolchain(notify, host="127.0.0.2")
    try:
        tc.notify(db)
        drive([ep], until=lambda: ep.control.get("not_allowed") == 1)
        assert ep.state == "waiting" and "127.0.0.2" in caplog.text
        assert "not an allowed toolchain host" in caplog.text
    finally:
        tc.close()
        ep.close()


def test_start_before_the_ack_waits_for_the_database(tmp_path: Path, notify: int) -> None:
    db = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", free_udp_port(), 1))}).write(tmp_path / "e.db")
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8")
    tc = Toolchain(notify)
    try:
        tc.notify(db)
        tc.send(START)  # [Database] wait_on_confirmation = False: the toolchain does not wait
        drive([ep], until=lambda: ep.state == "running")
        assert ep.state == "running"
    finally:
        tc.close()
        ep.close()


def test_tag_set_retries_iptagset_until_scamp_answers_ok(tmp_path: Path, notify: int) -> None:
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", 0))
    board.settimeout(1.0)
    db = Db({"pop": Pop(KEYS, lpg=("10.9.9.9", 1, 3))}).write(tmp_path / "t.db")  # never used
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8&tag=set"
                f"&bind=127.0.0.1:0&board_port={board.getsockname()[1]}")
    tc = Toolchain(notify)
    try:
        tc.notify(db)
        drive([ep], until=lambda: ep.state == "tagging")
        first, addr = board.recvfrom(100)
        assert first == iptag_set_request(0, 0, 3) and addr == ep._sock.getsockname()
        drive([ep], now=S)  # no answer yet, and not yet due again
        drive([ep], now=2 * S + 1)
        again, _ = board.recvfrom(100)
        assert again == first and tc.ack() is None  # no ack before the tag is set
        refused = bytes([0, 0, 7, 0xFF, 0xFF, 0, 0, 0, 0, 0]) + struct.pack("<HH4x", 0x83, 0)
        board.sendto(refused, addr)
        drive([ep], now=2 * S + 2)
        assert wait_for(lambda: ep.recv() is None) and ep.state == "tagging"
        ok = bytes([0, 0, 7, 0xFF, 0xFF, 0, 0, 0, 0, 0]) + struct.pack("<HH4x", 0x80, 0)
        board.sendto(ok, addr)
        assert wait_for(lambda: (ep.recv(), ep.state)[1] == "ready")
        drive([ep], now=3 * S, until=lambda: tc.ack() is not None)
        assert ep.state == "ready"
        tc.send(START)
        drive([ep], now=4 * S, until=lambda: ep.state == "running")
        drive([ep], now=12 * S)
        with pytest.raises(TimeoutError):
            board.recvfrom(100)
        drive([ep], now=13 * S)  # 10 s after SCAMP's OK, and every 10 s while running
        assert board.recvfrom(100)[0] == first
    finally:
        board.close()
        tc.close()
        ep.close()


def test_injector_output_is_gated_and_addressed_from_the_database(tmp_path: Path,
                                                                  notify: int) -> None:
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    board.bind(("127.0.0.1", 0))
    board.settimeout(1.0)
    db = Db({"inj": Pop([0x800 + i for i in range(6)], place=(1, 0, 9))}).write(tmp_path / "i.db")
    url = f"spinnaker://inj?notify=127.0.0.1:{notify}&neurons=6&board_port={board.getsockname()[1]}"
    ep = opened(url, "out")
    full = opened(url + "&full_keys=1&name=full", "out")
    tc = Toolchain(notify)
    try:
        frame = SpikeFrame(0, 0, 0, np.array([1, 4], dtype=np.uint32))
        assert not ep.send(ep.codec.encode(frame)[0])
        assert ep.refusal_reason == REASON_INDEX["not_running"]
        tc.notify(db)
        drive([ep, full], until=lambda: full.state == "ready")
        tc.send(START)
        drive([ep, full], until=lambda: full.state == "running")
        for e in (ep, full):
            assert e.send(e.codec.encode(frame)[0])
        half, _ = board.recvfrom(300)
        whole, _ = board.recvfrom(300)
        # pad, SDP to core 9 of chip (1, 0) on port 1, then EIEIO: 16-bit ids, 32-bit keys
        assert half == bytes([0, 0, 7, 0, 0x29, 0, 0, 1, 0, 0, 2, 0]) + struct.pack("<2H", 1, 4)
        assert whole[:10] == half[:10] and whole[10:] == b"\x02\x08" + struct.pack(
            "<2I", 0x801, 0x804)
        assert ep.codec.encode(SpikeFrame(0, 0, 0, np.empty(0, np.uint32))) == []
    finally:
        board.close()
        tc.close()
        ep.close()
        full.close()


def test_a_taken_port_is_an_error_at_open(notify: int) -> None:
    from bridge.errors import EndpointError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(EndpointError, match=r"cannot bind 127\.0\.0\.1"):
            opened(f"spinnaker://p?notify=127.0.0.1:{notify}&neurons=1&tag=set"
                   f"&bind=127.0.0.1:{port}")
        with pytest.raises(EndpointError, match="cannot listen for the toolchain"):
            opened(f"spinnaker://p?notify=127.0.0.1:{port}&neurons=1")


def test_endpoints_of_one_address_share_one_listener(notify: int) -> None:
    a = opened(f"spinnaker://a?notify=127.0.0.1:{notify}&neurons=1")
    b = opened(f"spinnaker://b?notify=127.0.0.1:{notify}&neurons=1", "out")
    try:
        assert a.listener is b.listener and len(_LISTENERS) == 1
    finally:
        a.close()
        assert len(_LISTENERS) == 1
        b.close()


@pytest.mark.parametrize(("url", "role", "message"), [
    ("spinnaker://p?neurons=1&format=native", "in", "speak EIEIO"),
    ("spinnaker://p?neurons=1&base=4", "in", "base do(es) not apply"),
    ("spinnaker://p?neurons=1&tag=set", "out", "tag= applies to inputs only"),
    ("spinnaker://p?neurons=1&full_keys=1", "in", "full_keys= applies to outputs only"),
    ("spinnaker://p?neurons=1&tag=maybe", "in", "tag must be db or set"),
    ("spinnaker://p?neurons=1&notify=19999", "in", "notify must be HOST:PORT"),
    ("spinnaker://p?neurons=1&board_port=0", "in", "board_port must be a port"),
    ("spinnaker://p?neurons=1&toolchain=nowhere", "in", "not a CIDR"),
    ("spinnaker://p?neurons=1&colour=red", "in", "unknown key(s) colour"),
    ("spif://127.0.0.1?neurons=4&width=2&height=2", "out", "spif:// is an input"),
    ("spinnaker://p?neurons=1&spif=10.0.0.1&tag=set", "in", "tag= does not apply with spif="),
    ("spinnaker://p?neurons=1&spif=10.0.0.1", "out", "spif= applies to inputs only"),
    ("spif://127.0.0.1?neurons=4&width=2&height=2&events=0", "in", "events must be a number"),
])
def test_bad_urls_name_the_key(url: str, role: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        endpoint_spec(url, role)
    assert message in str(err.value)


def test_keys_and_formats_of_a_valid_url() -> None:
    spec = endpoint_spec("spinnaker://my%20pop?neurons=3&tag=set&board_port=7", "in")
    assert spec.format == "eieio" and spec.scheme_options == {"tag": "set", "board_port": "7"}
    assert SpinnakerEndpoint(spec.url, "in", spec.scheme_options).label == "my pop"
    assert endpoint_spec("spif://10.0.0.9?neurons=4&width=2&height=2", "in").format == "spif"


def test_commands_and_scp_layouts() -> None:
    assert parse_command(b"\x01\x40/tmp/db").path == "/tmp/db"
    assert parse_command(b"\x01\x40").path == ""
    assert parse_command(START).code == 11 and parse_command(STOP).code == 10
    assert scp_reply_ok(b"\0" * 18) is None
    table = KeyTable(np.arange(4), np.array([40, 10, 30, 20]))
    assert table.atoms_of(np.array([10, 40])).tolist() == [1, 0]
    assert table.keys_of(np.array([3, 1])).tolist() == [20, 10]
    codec = SpinnakerCodec(4)
    assert not codec.same_wire(codec)


@pytest.mark.parametrize("dict_max", [1 << 17, 0])  # small tables keep a dict, huge ones not
def test_key_tables_decode_alike_with_and_without_the_dict(monkeypatch: pytest.MonkeyPatch,
                                                           dict_max: int) -> None:
    import bridge.codecs.spinnaker as sp

    monkeypatch.setattr(sp, "DICT_MAX", dict_max)
    rng = np.random.default_rng(3)
    keys = rng.choice(1 << 30, size=300, replace=False)
    codec = SpinnakerCodec(300)
    codec.bind(KeyTable(np.arange(300), keys))
    codec.running = True
    assert (codec.table.lookup is None) == (dict_max == 0)  # type: ignore[union-attr]
    for n in (1, 16, 17, 63):
        atoms = rng.choice(300, size=n)
        assert codec.decode(lpg(keys[atoms].tolist())).ids.tolist() == atoms.tolist()
        assert codec.decode(struct.pack("<BB", n, 0x08) + struct.pack(
            f"<{n}I", *keys[atoms].tolist())).ids.tolist() == atoms.tolist()
    for n in (1, 40):
        with pytest.raises(DecodeError, match="not in the label's table"):
            codec.decode(lpg([int(keys.max()) + 1] * n))


def test_spinnman_agrees_on_commands_and_iptagset() -> None:
    pytest.importorskip("spinnman", reason="the spinnaker extra (sPyNNaker) is needed")
    from spinnman.messages.eieio import read_eieio_command_message
    from spinnman.messages.eieio.command_messages import (
        NotificationProtocolDatabaseLocation,
        NotificationProtocolPauseStop,
        NotificationProtocolStartResume,
    )
    from spinnman.messages.scp.impl import IPTagSet

    loc = NotificationProtocolDatabaseLocation("/some/where.sqlite3").bytestring
    assert parse_command(loc).path == "/some/where.sqlite3"
    assert parse_command(NotificationProtocolStartResume().bytestring).code == 11
    assert parse_command(NotificationProtocolPauseStop().bytestring).code == 10
    assert NotificationProtocolDatabaseLocation().bytestring == DATABASE_ACK
    assert read_eieio_command_message(DATABASE_ACK, 0).eieio_header.command == 1  # it parses
    for x, y, tag in ((0, 0, 1), (7, 3, 7), (255, 255, 0)):
        req = IPTagSet(x, y, [0, 0, 0, 0], 0, tag, strip=True, use_sender=True)
        req.sdp_header.update_for_send(x, y)
        assert iptag_set_request(x, y, tag) == b"\0\0" + req.bytestring


# -- SPIF ------------------------------------------------------------------------------------


def test_spif_start_command_is_spynnakers() -> None:
    mod = pytest.importorskip("spynnaker.pyNN.connections.spif_live_spikes_connection",
                              reason="the spinnaker extra (sPyNNaker) is needed")
    want = struct.pack("<3I", mod._SPIF_OUTPUT_SET_LEN + 32 * 4,  # its defaults: 32 events,
                       mod._SPIF_OUTPUT_SET_TICK + 500, mod._SPIF_OUTPUT_START)  # 500 µs
    assert start_command(32 * 4, 500) == want
    assert stop_command() == struct.pack("<I", mod._SPIF_OUTPUT_STOP)
    assert mod._DEFAULT_SPIF_PORT == 3332


def test_spif_input_starts_the_stream_repeats_and_stops() -> None:
    board = UdpPeer()  # stands in for spiffer's output-command socket (UDP 3332 on a board)
    ep = opened(f"spif://127.0.0.1:{board.port}?neurons=16&width=4&height=4&bind=127.0.0.1:0&repeat_s=5")
    assert isinstance(ep, SpifEndpoint)
    try:
        got = board.sock.recvfrom(100)
        assert got[0] == start_command(128, 500) and got[1] == ep._sock.getsockname()
        ep.service(0)
        ep.service(4 * S)
        assert board.recv(0.1) is None
        ep.service(5 * S)
        assert board.recv() == start_command(128, 500)
        words = struct.pack("<2I", 0x80000000 | 3 << 16 | 1, 0x80000000 | 2 << 16 | 1 << 15 | 2)
        board.sock.sendto(words, got[1])  # spiffer streams to whoever sent the last command
        assert wait_for(lambda: (r := ep.recv()) is not None and bytes(r[0]) == words)
    finally:
        ep.close()
    assert board.recv() == stop_command()
    board.close()


def test_spif_key_streams_a_labels_keys_between_start_and_stop(tmp_path: Path,
                                                                notify: int) -> None:
    spif = UdpPeer()  # stands in for spiffer's output-command socket
    db = Db({"pop": Pop(KEYS)}).write(tmp_path / "spif.db")  # SPIF output needs no IP tag
    ep = opened(f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8&bind=127.0.0.1:0"
                f"&spif=127.0.0.1:{spif.port}")
    tc = Toolchain(notify)
    try:
        tc.notify(db)
        drive([ep], until=lambda: ep.state == "ready")
        assert spif.recv(0.1) is None  # nothing before the simulation starts
        tc.send(START)
        drive([ep], until=lambda: ep.state == "running")
        cmd, addr = spif.sock.recvfrom(100)
        assert cmd == start_command(128, 500) and addr == ep._sock.getsockname()
        spif.sock.sendto(struct.pack("<3I", KEYS[4], KEYS[0], KEYS[4]), addr)
        assert ep.codec.decode(recv_one(ep)).ids.tolist() == [4, 0, 4]
        with pytest.raises(DecodeError, match="whole 32-bit keys"):
            ep.codec.decode(b"\x01\x02\x03")
        tc.send(STOP)
        drive([ep], until=lambda: ep.state == "stopped")
        assert spif.recv() == stop_command()
    finally:
        tc.close()
        ep.close()
        spif.close()


# -- through the loop: metrics, STATUS= and the books ----------------------------------------


def test_through_the_loop_the_state_shows_in_metrics_and_status(tmp_path: Path,
                                                                notify: int) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from bridge.service.metrics import register
    from bridge.service.status import StatusLine

    lpg_port = free_udp_port()
    db = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", lpg_port, 1))}).write(tmp_path / "m.db")
    out = UdpPeer()
    rb = RunningBridge(config_from_flags(
        [f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8&name=pop"],
        [f"udp://127.0.0.1:{out.port}?format=native&neurons=8"]))
    reg = CollectorRegistry()
    register(rb.bridge.stats, reg, build={"version": "t"})
    tc = Toolchain(notify)
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert wait_for(lambda: rb.bridge.stats.inputs[0].state == "waiting")
        assert "pop waiting" in StatusLine()(0, rb.bridge.stats)
        tc.notify(db)
        assert wait_for(lambda: tc.ack() == DATABASE_ACK)
        board.sendto(lpg([KEYS[2]]), ("127.0.0.1", lpg_port))
        tc.send(START)
        assert wait_for(lambda: rb.bridge.stats.inputs[0].state == "running")
        board.sendto(lpg([KEYS[2], KEYS[6]]), ("127.0.0.1", lpg_port))
        assert out.recv() is not None
        st = rb.bridge.stats.inputs[0]
        assert wait_for(lambda: st.frames == 2)
        assert (st.accepted, st.drops_by_reason()) == (1, {"not_running": 1}) and st.balanced()
        text = generate_latest(reg).decode()
        assert 'spikebridge_endpoint_state{endpoint="pop",state="running"} 1.0' in text
        assert 'spikebridge_control_messages_total{endpoint="pop",result="start"} 1.0' in text
        assert ('spikebridge_frames_dropped_total{endpoint="pop",reason="not_running"} 1.0'
                in text)
        assert "pop" not in StatusLine()(0, rb.bridge.stats).split(";")[-1]
        assert 'spikebridge_endpoint_up{endpoint="pop"} 1.0' in text
        small = Db({"pop": Pop(KEYS[:7], lpg=("127.0.0.1", lpg_port, 1))}).write(tmp_path / "7.db")
        tc.notify(small)  # the next run() has a smaller population: the endpoint goes down
        assert wait_for(lambda: st.state == "down" and st.up == 0)
        assert "pop down" in StatusLine()(0, rb.bridge.stats)
    finally:
        board.close()
        tc.close()
        rb.stop()
        out.close()


def test_spikebridge_listen_prints_a_populations_atoms(tmp_path: Path, notify: int) -> None:
    import json
    import subprocess

    from bridge.testing import spikebridge_cmd

    lpg_port = free_udp_port()
    db = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", lpg_port, 1))}).write(tmp_path / "l.db")
    proc = subprocess.Popen(spikebridge_cmd(
        "listen", f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8", "--json",
        "--count", "1", "--duration", "60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    tc = Toolchain(notify)
    board = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def acked() -> bool:  # the notification is repeated until the command is listening
        try:
            tc.notify(db)
            return tc.ack() == DATABASE_ACK
        except ConnectionRefusedError:  # the port is not bound yet (ICMP unreachable)
            return False

    try:
        assert wait_for(acked, timeout=30, interval=0.5)
        tc.send(START)
        assert wait_for(lambda: (board.sendto(lpg([KEYS[6], KEYS[1]]), ("127.0.0.1", lpg_port)),
                                 proc.poll())[1] is not None, timeout=30, interval=0.2)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert json.loads(out.splitlines()[0])["ids"] == [6, 1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        board.close()
        tc.close()


def test_the_daemon_reports_the_handshake_in_systemd_status(tmp_path: Path, notify: int) -> None:
    """``spikebridge run`` under a fake service manager: STATUS= follows the handshake."""
    import os
    import signal
    import subprocess

    from bridge.testing import spikebridge_cmd

    lpg_port = free_udp_port()
    db = Db({"pop": Pop(KEYS, lpg=("127.0.0.1", lpg_port, 1))}).write(tmp_path / "d.db")
    sm = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sm.bind(str(tmp_path / "notify.sock"))
    sm.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen(spikebridge_cmd(
        "run", "--in", f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons=8&name=pop",
        "--out", f"udp://127.0.0.1:{free_udp_port()}?neurons=8"), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []

    def status_has(text: str, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and proc.poll() is None:
            try:
                seen.append(sm.recv(4096).decode())
            except TimeoutError:
                continue
            if text in seen[-1]:
                return True
        return False

    tc = Toolchain(notify)
    try:
        assert status_has("READY=1")
        assert status_has("; pop waiting"), seen
        tc.notify(db)
        assert wait_for(lambda: tc.ack() == DATABASE_ACK, timeout=10)
        assert status_has("; pop ready"), seen
        tc.send(START)
        assert status_has("STATUS=in "), seen
        assert "pop" not in seen[-1]  # running: no longer listed
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "acknowledged the database to 127.0.0.1" in out
        assert "the simulation started (START/RESUME)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        tc.close()
        sm.close()
