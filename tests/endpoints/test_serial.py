"""The serial endpoint on real ptys: open, greeting, exclusive, no-block writes, unplug/reopen."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from bridge.endpoints.serial import SerialEndpoint
from bridge.endpoints.url import parse_url
from bridge.errors import ConfigError, EndpointError

pytestmark = pytest.mark.integration

MS = 1_000_000
SCHEME_KEYS = set(SerialEndpoint.KEYS)


class Pty:
    """A pty pair standing in for a device; ``link`` points at its slave path."""

    def __init__(self, link: Path | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        if link is not None:
            tmp = link.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.path)
            tmp.replace(link)

    def read(self, n: int, timeout: float = 2.0) -> bytes:
        out = b""
        while len(out) < n:
            if not select.select([self.master], [], [], timeout)[0]:
                break
            out += os.read(self.master, n - len(out))
        return out

    def read_until(self, marker: bytes, timeout: float = 2.0) -> bytes:
        out = b""
        while not out.endswith(marker):
            if not select.select([self.master], [], [], timeout)[0]:
                break
            out += os.read(self.master, 4096)
        return out

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def endpoint(text: str, role: str = "in") -> SerialEndpoint:
    url = parse_url(text)
    options = {k: v for k, v in url.params.items() if k in SCHEME_KEYS}
    return SerialEndpoint(url, role, options)


def wait_readable(fd: int, timeout: float = 2.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_reads_what_the_device_sends(pty: Pty) -> None:
    ep = endpoint(f"serial:{pty.path}?baud=4000000&rtscts=1")
    ep.open()
    try:
        assert ep.recv() is None  # nothing pending: returns at once
        os.write(pty.master, b"\x80\x01\x81\x02")
        assert wait_readable(ep.fileno())
        got = ep.recv()
        assert got is not None and bytes(got[0]) == b"\x80\x01\x81\x02" and got[1] is None
        assert "4000000 baud, polled fd" in ep.describe()
    finally:
        ep.close()


def test_greeting_is_written_when_the_loop_first_polls(pty: Pty) -> None:
    ep = endpoint(f"serial:{pty.path}?format=edvs&evsize=4&biases=0:5")
    ep.open()
    try:
        assert pty.read(1, timeout=0.05) == b""  # not at open: the processor may be slow
        ep.fileno()
        want = b"!U0\n!E2\n!B0=5\n!BF\nE+\n"
        assert pty.read(len(want)) == want
        ep.fileno()
        assert pty.read(1, timeout=0.05) == b""  # once per open
    finally:
        ep.close()


def test_low_latency_refused_by_pty_is_only_a_debug_note(
    pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spikebridge.serial")
    ep = endpoint(f"serial:{pty.path}")
    ep.open()
    ep.close()
    notes = [r for r in caplog.records if "low_latency" in r.getMessage()]
    assert notes and all(r.levelno == logging.DEBUG for r in notes)


def test_exclusive_open_refuses_a_second_program(pty: Pty, tmp_path: Path) -> None:
    ep = endpoint(f"serial:{pty.path}")
    ep.open()
    try:
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(pty.path, exclusive=True)
        # Another name for the same device is another program's view: refused too.
        other = tmp_path / "alias"
        other.symlink_to(pty.path)
        second = endpoint(f"serial:{other}")
        with pytest.raises(EndpointError, match="in use"):
            second.open()
    finally:
        ep.close()
    # Released on close, including TIOCEXCL while the device side stays open.
    again = serial.Serial(pty.path, exclusive=True)
    again.close()


def test_input_and_output_share_one_port(pty: Pty) -> None:
    rx = endpoint(f"serial:{pty.path}?format=board", "in")
    tx = endpoint(f"serial:{pty.path}?format=board", "out")
    rx.open()
    tx.open()
    try:
        rx.fileno()
        start = pty.read(14)
        assert start[:3] == b"\x00\x02\x11"  # the input's start command
        assert tx.send(b"\x00abc\x00")
        assert pty.read(5) == b"\x00abc\x00"
        os.write(pty.master, b"xyz")
        assert wait_readable(rx.fileno())
        got = rx.recv()
        assert got is not None and bytes(got[0]) == b"xyz"
    finally:
        tx.close()
        rx.close()


def test_writes_never_block_and_refusals_are_reported(pty: Pty) -> None:
    ep = endpoint(f"serial:{pty.path}?wbuf=4096", "out")
    ep.open()
    try:
        accepted = refused = 0
        for _ in range(2000):  # nobody reads the device: the kernel buffer fills, then ours
            if ep.send(b"x" * 256):
                accepted += 1
            else:
                refused += 1
        assert refused > 0 and accepted > 0
        assert 0 < ep.pending() <= 4096
        # The device drains; what was accepted arrives whole and in order.
        got = b""
        while len(got) < accepted * 256:
            ep.flush()
            if not wait_readable(pty.master, 0.5):
                break
            got += os.read(pty.master, 65536)
        assert got == b"x" * (accepted * 256) and ep.pending() == 0
    finally:
        ep.close()


def test_unplug_and_reopen_with_backoff(tmp_path: Path) -> None:
    link = tmp_path / "edvs"
    dev = Pty(link)
    ep = endpoint(f"serial:{link}?format=edvs&backoff=50&backoff_max=200")
    ep.open()
    ep.fileno()  # the loop registers it: the greeting goes out
    assert dev.read_until(b"E+\n").endswith(b"E+\n")
    first_path = dev.path
    dev.close()  # unplugged: the pty and its name vanish
    link.unlink()
    assert wait_readable(ep.fileno())
    with pytest.raises(EndpointError, match=r"no data|read failed"):
        ep.recv()
    with pytest.raises(EndpointError):
        ep.send(b"E+\n")
    # Backoff: first try immediate, then 50, 100, 200, 200 ms apart (monotonic now, injected).
    attempts = []
    now = 0
    port = ep._port
    assert port is not None
    for now in range(0, 700 * MS, 5 * MS):
        before = port.retry_at
        assert ep.reopen(now) is False
        if port.retry_at != before:
            attempts.append(now // MS)
    assert attempts == [0, 50, 150, 350, 550]
    keep = Pty()  # hold a pty so the replacement gets a new name
    new = Pty(link)
    try:
        assert new.path != first_path
        t = now + 200 * MS
        assert ep.reopen(t) is True
        assert ep.reconnects == 1
        ep.fileno()
        assert new.read_until(b"E+\n").endswith(b"E+\n")  # greeted again
        os.write(new.master, b"\x81\x01")
        assert wait_readable(ep.fileno())
        got = ep.recv()
        assert got is not None and bytes(got[0]) == b"\x81\x01"
    finally:
        ep.close()
        new.close()
        keep.close()


def test_shared_port_unplug_counts_one_reconnect(tmp_path: Path) -> None:
    link = tmp_path / "board"
    dev = Pty(link)
    rx = endpoint(f"serial:{link}?format=board", "in")
    tx = endpoint(f"serial:{link}?format=board", "out")
    rx.open()
    tx.open()
    dev.close()
    link.unlink()
    with pytest.raises(EndpointError):
        rx.recv()
    with pytest.raises(EndpointError):
        tx.send(b"\x00x\x00")
    new = Pty(link)
    try:
        assert rx.reopen(10 * MS) is True
        assert tx.reopen(10 * MS) is True  # already open: joins it
        assert rx.reconnects + tx.reconnects == 1
        assert tx.send(b"\x00y\x00")
        assert new.read_until(b"\x00y\x00").endswith(b"\x00y\x00")
    finally:
        tx.close()
        rx.close()
        new.close()


def test_output_only_device_input_is_drained(pty: Pty) -> None:
    tx = endpoint(f"serial:{pty.path}", "out")
    tx.open()
    try:
        os.write(pty.master, b"ack" * 100)
        assert wait_readable(tx.fileno())
        assert tx.send(b"cmd\n")
        assert tx.discarded == 300
    finally:
        tx.close()


def test_pyserial_loop_url_uses_a_reader_thread() -> None:
    rx = endpoint("serial:loop://?format=board", "in")
    tx = endpoint("serial:loop://?format=board", "out")
    rx.open()
    tx.open()
    try:
        assert "reader thread" in rx.describe()
        payload = b"\x00hello\x00"
        assert tx.send(payload)
        got = b""
        while len(got) < 14 + len(payload) and wait_readable(rx.fileno()):
            chunk = rx.recv()
            if chunk is not None:
                got += bytes(chunk[0])
        assert got.endswith(payload) and got.startswith(b"\x00\x02\x11")  # start cmd, looped
    finally:
        tx.close()
        rx.close()


def test_reader_fd_refused_without_a_descriptor() -> None:
    ep = endpoint("serial:loop://?reader=fd")
    with pytest.raises(EndpointError, match="reader=thread"):
        ep.open()


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    ep = endpoint(f"serial:{tmp_path}/nothing")
    with pytest.raises(EndpointError, match="no such device"):
        ep.open()


@pytest.mark.parametrize(
    "query",
    ["baud=fast", "baud=10", "parity=X", "stopbits=3", "rtscts=maybe", "reader=poll",
     "backoff=0", "wbuf=1"],
)
def test_bad_keys_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError):
        endpoint(f"serial:/dev/null?{query}")


def test_fileno_stays_answerable_while_down(pty: Pty) -> None:
    ep = endpoint(f"serial:{pty.path}")
    ep.open()
    fd = ep.fileno()
    os.close(pty.master)
    pty.master = os.open("/dev/null", os.O_RDONLY)  # so that the fixture's close stays valid
    assert wait_readable(fd)
    with pytest.raises(EndpointError):
        ep.recv()
    assert ep.fileno() == fd  # the loop unregisters what it registered
    ep.close()


def test_edvs_output_without_a_command_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="commands="):
        endpoint("serial:/dev/null?format=edvs", "out")
    endpoint("serial:/dev/null?format=edvs&commands=0:E-", "out")  # fine: nothing opened


def test_bridge_relays_a_board_and_keeps_other_inputs_going_through_an_unplug(
    run_bridge: Any, peer: Any, tmp_path: Path
) -> None:
    from bridge.codecs.native import NativeCodec
    from bridge.emulate import BoardEmulator
    from bridge.frame import SpikeFrame
    from bridge.testing import wait_for

    link = tmp_path / "board"
    board = BoardEmulator(link=link, rate=500, heartbeat_ms=0, neurons=64)
    board.start()
    try:
        rb = run_bridge({
            "input": [f"serial:{link}?format=board&neurons=64",
                      "udp://127.0.0.1:0?format=native&neurons=64&offset=64"],
            "output": [f"udp://127.0.0.1:{peer.port}?format=native&neurons=128"],
        })
        codec = NativeCodec(128)

        def relayed() -> list[list[int]]:
            return [codec.decode(d).ids.tolist() for d in peer.recv_all(quiet=0.15, limit=0.4)]

        assert any(ids and max(ids) < 64 for ids in relayed())  # the board's own spikes
        board.request_unplug()
        stats = rb.bridge.stats
        assert wait_for(lambda: stats.inputs[0].up == 0)
        relayed()
        for seq in range(3):  # the UDP input is not disturbed while the board is away
            peer.send(rb.in_port(1), NativeCodec(64).encode(SpikeFrame.of([5], seq=seq))[0])
        assert relayed() == [[69], [69], [69]]
        board.request_replug()
        assert wait_for(lambda: stats.serial_reconnects == 1 and stats.inputs[0].up == 1)
        assert any(ids and max(ids) < 64 for ids in relayed())
        assert stats.inputs[0].balanced() and stats.inputs[1].balanced()
    finally:
        board.stop()
