"""The eDVS emulator on a real pty, driven with injected time (no sleeping)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.codecs.edvs import EdvsCodec
from bridge.emulate.edvs import EdvsEmulator
from bridge.emulate.faults import Faults
from bridge.errors import DecodeError
from tests.emulate.conftest import Host

pytestmark = pytest.mark.integration
MS = 1_000_000


@pytest.fixture
def emu() -> Iterator[EdvsEmulator]:
    e = EdvsEmulator(rate=100_000, pattern="random")
    yield e
    e.stop()


def attach(e: EdvsEmulator, now: int = 0) -> Host:
    e.plug(now)
    host = Host(e.path)
    e.fifo.clear()  # the power-on banner went out before the host opened the port
    return host


def decode(codec: EdvsCodec, data: bytes, now: int | None = None) -> tuple[int, list[str]]:
    codec.feed(data, now)
    n, errors = 0, []
    while True:
        try:
            frame = codec.next_frame()
        except DecodeError as exc:
            errors.append(exc.reason)
            continue
        if frame is None:
            return n, errors
        n += len(frame.ids)


def test_commands_banner_help_and_echo(emu: EdvsEmulator) -> None:
    host = attach(emu)
    try:
        emu.on_host(b"R\n??\n", 0)
        emu.on_host(b"!U0\n!E2\nbogus\n", 0)
        emu._pump(0)
        text = host.read(want=10_000, timeout=0.2).decode()
        lines = text.splitlines()
        assert lines[0] == "R" and lines[1].startswith("EDVS-4337 emulator")
        assert "??" in lines and any(line.startswith("E+/E-") for line in lines)
        assert "!U0" in lines  # echoed while echo was still on ...
        assert "!E2" not in lines and "?bogus" in lines  # ... and not after it
        assert emu.evsize == 4 and not emu.echo
    finally:
        host.close()


def test_firmware_variant_numbering() -> None:
    e = EdvsEmulator(variant="compact", sync=0)
    try:
        e.plug(0)
        e.on_host(b"!E1\n", 0)
        assert e.evsize == 4
        e.on_host(b"!E4\n", 0)  # no such format in this numbering: refused, unchanged
        assert e.evsize == 4 and e.fifo.endswith(b"?!E4\n")
    finally:
        e.stop()


def test_stream_at_rate_decodes_with_timestamps(emu: EdvsEmulator) -> None:
    host = attach(emu)
    try:
        emu.on_host(b"!U0\n!E2\nE+\n", 0)
        for t in range(1, 11):
            emu.on_tick(t * MS)
        assert emu.events_sent == 1000  # 100k ev/s for 10 ms
        emu._pump(10 * MS)
        codec = EdvsCodec(evsize=4, lock=4)
        n, errors = decode(codec, host.read(want=4000))
        assert n == 1000 and errors == []
        assert codec.timestamps_us[-1] <= 10_000 and codec.timestamps_us[0] >= 0
    finally:
        host.close()


def test_idle_gaps_wrap_the_timestamp_unseen() -> None:
    e = EdvsEmulator(rate=10_000, pattern="blink", burst_ms=5, idle_ms=150)
    host = attach(e)
    try:
        e.on_host(b"!U0\n!E2\nE+\n", 0)
        with_now, blind = EdvsCodec(evsize=4, lock=2), EdvsCodec(evsize=4, lock=2)
        sent = 0
        for t in range(1, 161):  # bursts at 0-5 ms and 155-160 ms
            e.on_tick(t * MS)
            e._pump(t * MS)
            if e.bytes_out > sent:
                data = host.read(want=e.bytes_out - sent)
                sent = e.bytes_out
                decode(with_now, data, t * MS)
                decode(blind, data)
        # 150 ms of silence: the 16-bit µs clock wrapped twice where no event showed it.
        assert 155_000 <= with_now.timestamps_us[-1] <= 160_000
        assert blind.timestamps_us[-1] < with_now.timestamps_us[-1] - 65_536
    finally:
        host.close()


def test_fifo_overflow_is_counted() -> None:
    e = EdvsEmulator(rate=1_000_000, fifo_bytes=1000)
    try:
        e.plug(0)
        e.on_host(b"!U0\nE+\n", 0)
        e.fifo.clear()
        e.on_tick(10 * MS)  # 10000 events due, room for 500
        assert e.events_sent == 500 and e.events_dropped == 9500
    finally:
        e.stop()


def test_pacing_at_baud_rate() -> None:
    e = EdvsEmulator(rate=0, faults=Faults(baud=115_200))
    host = attach(e)
    try:
        e.emit(b"x" * 5000)
        for t in range(0, 101):
            e._pump(t * MS)
        # 11520 bytes/s for 100 ms, plus the 64-byte burst
        assert e.bytes_out == pytest.approx(1152 + 64, abs=2)
        assert len(host.read(want=e.bytes_out)) == e.bytes_out
    finally:
        host.close()


def test_garbage_noise_and_split_writes_are_survivable() -> None:
    faults = Faults(garbage=40, flip=0.002, insert=0.001, delete=0.001, split=7, seed=3)
    e = EdvsEmulator(rate=100_000, pattern="random", faults=faults)
    host = attach(e)
    try:
        e.host_bytes(b"!U0\n", 0)  # first contact: the garbage goes out first
        assert e.garbage_sent == 40 and len(e.fifo) == 40 + len(b"!U0\n")
        e.host_bytes(b"!E2\nE+\n", 0)
        assert e.garbage_sent == 40  # once per plug-in
        for t in range(1, 21):
            e.on_tick(t * MS)
            e._pump(t * MS)
        codec = EdvsCodec(evsize=4)
        n, errors = decode(codec, host.read(timeout=0.1))
        noise = e.noise.flipped + e.noise.inserted + e.noise.deleted
        assert noise > 0 and errors  # damage happened and was counted
        assert n > 0.9 * e.events_sent  # and most events still got through
    finally:
        host.close()


def test_threaded_unplug_and_replug_behind_link(tmp_path: Path) -> None:
    link = tmp_path / "edvs"
    e = EdvsEmulator(link=link, rate=20_000, pattern="blink")
    try:
        assert e.start() == str(link)
        first = e.path
        host = Host(str(link))
        host.write(b"!U0\nE+\n")
        codec = EdvsCodec(lock=4)
        n, _ = decode(codec, host.read(timeout=0.2, want=400))
        assert n > 0
        e.request_unplug(down_ms=50)
        host.read(timeout=1.0)  # drain what was sent before the plug was pulled
        with pytest.raises(OSError):  # then the host side is hung up
            if os.read(host.fd, 1) == b"":
                raise OSError("EOF")
        host.close()
        deadline = time.monotonic() + 2
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.exists() and e.path != first and e.unplugs == 1
    finally:
        e.stop()
