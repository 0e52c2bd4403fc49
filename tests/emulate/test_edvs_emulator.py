"""The eDVS emulator on a real pty, driven with injected time (no sleeping)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.codecs.edvs import EdvsCodec
from bridge.emulate.edvs import EdvsEmulator
from bridge.emulate.faults import Faults
from bridge.errors import DecodeError

pytestmark = pytest.mark.integration
MS = 1_000_000


@pytest.fixture
def make() -> Iterator[Callable[..., EdvsEmulator]]:
    """Build emulators (not started: the tests drive them with injected time)."""
    made: list[EdvsEmulator] = []

    def make_(**kwargs: Any) -> EdvsEmulator:
        e = EdvsEmulator(**kwargs)
        made.append(e)
        return e

    yield make_
    for e in made:
        e.stop()


@pytest.fixture
def attach(open_host: Callable[[str], Any]) -> Callable[[EdvsEmulator], Any]:
    """Plug an emulator in at t=0 and open its host side."""

    def attach_(e: EdvsEmulator) -> Any:
        e.plug(0)
        host = open_host(e.path)
        e.fifo.clear()  # the power-on banner went out before the host opened the port
        return host

    return attach_


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


def test_commands_banner_help_and_echo(make: Any, attach: Any) -> None:
    emu = make()
    host = attach(emu)
    emu.on_host(b"R\n??\n", 0)
    emu.on_host(b"!U0\n!E2\nbogus\n", 0)
    emu._pump(0)
    lines = host.read(want=10_000, timeout=0.2).decode().splitlines()
    assert lines[0] == "R" and lines[1].startswith("EDVS-4337 emulator")
    assert "??" in lines and any(line.startswith("E+/E-") for line in lines)
    assert "!U0" in lines  # echoed while echo was still on ...
    assert "!E2" not in lines and "?bogus" in lines  # ... and not after it
    assert emu.evsize == 4 and not emu.echo


def test_firmware_variant_numbering(make: Any) -> None:
    e = make(variant="compact", sync=0)
    e.plug(0)
    e.on_host(b"!E1\n", 0)
    assert e.evsize == 4
    e.on_host(b"!E4\n", 0)  # no such format in this numbering: refused, unchanged
    assert e.evsize == 4 and e.fifo.endswith(b"?!E4\n")


def test_stream_at_rate_decodes_with_timestamps(make: Any, attach: Any) -> None:
    emu = make(rate=100_000, pattern="random")
    host = attach(emu)
    emu.on_host(b"!U0\n!E2\nE+\n", 0)
    for t in range(1, 11):
        emu.on_tick(t * MS)
    assert emu.events_sent == 1000  # 100k ev/s for 10 ms
    emu._pump(10 * MS)
    codec = EdvsCodec(evsize=4, lock=4)
    n, errors = decode(codec, host.read(want=4000))
    assert n == 1000 and errors == []
    assert codec.timestamps_us[0] >= 0 and codec.timestamps_us[-1] <= 10_000


def test_idle_gaps_wrap_the_timestamp_unseen(make: Any, attach: Any) -> None:
    e = make(rate=10_000, pattern="blink", burst_ms=5, idle_ms=150)
    host = attach(e)
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


def test_fifo_overflow_is_counted(make: Any) -> None:
    e = make(rate=1_000_000, fifo_bytes=1000)
    e.plug(0)
    e.on_host(b"!U0\nE+\n", 0)
    e.fifo.clear()
    e.on_tick(10 * MS)  # 10000 events due, room for 500
    assert e.events_sent == 500 and e.events_dropped == 9500


def test_pacing_at_baud_rate(make: Any, attach: Any) -> None:
    e = make(rate=0, faults=Faults(baud=115_200))
    host = attach(e)
    e.emit(b"x" * 5000)
    for t in range(0, 101):
        e._pump(t * MS)
    # 11520 bytes/s for 100 ms, plus the initial burst (10 ms worth)
    assert e.bucket is not None and e.bucket.burst == 115
    assert e.bytes_out == pytest.approx(1152 + 115, abs=2)
    assert len(host.read(want=e.bytes_out)) == e.bytes_out


def test_garbage_noise_and_split_writes_are_survivable(make: Any, attach: Any) -> None:
    faults = Faults(garbage=40, flip=0.002, insert=0.001, delete=0.001, split=7, seed=3)
    e = make(rate=100_000, pattern="random", faults=faults)
    host = attach(e)
    e.host_bytes(b"!U0\n", 0)  # first contact: the garbage goes out first
    assert e.garbage_sent == 40 and len(e.fifo) == 40 + len(b"!U0\n")
    e.host_bytes(b"!E2\nE+\n", 0)
    assert e.garbage_sent == 40  # once per plug-in
    for t in range(1, 21):
        e.on_tick(t * MS)
        e._pump(t * MS)
    codec = EdvsCodec(evsize=4)
    n, errors = decode(codec, host.read(timeout=0.1))
    assert e.noise.flipped + e.noise.inserted + e.noise.deleted > 0
    assert errors  # the damage was counted ...
    assert n > 0.9 * e.events_sent  # ... and most events still got through


def test_threaded_unplug_and_replug_behind_link(
    make: Any, tmp_path: Path, open_host: Callable[[str], Any]
) -> None:
    link = tmp_path / "edvs"
    e = make(link=link, rate=20_000, pattern="blink")
    assert e.start() == str(link)
    first = e.path
    host = open_host(str(link))
    host.write(b"!U0\nE+\n")
    n, _ = decode(EdvsCodec(lock=4), host.read(timeout=0.2, want=400))
    assert n > 0
    e.request_unplug(down_ms=50)
    host.read(timeout=1.0)  # drain what was sent before the plug was pulled
    with pytest.raises(OSError):  # then the host side is hung up
        if os.read(host.fd, 1) == b"":
            raise OSError("EOF")
    deadline = time.monotonic() + 2
    while not link.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.exists() and e.path != first and e.unplugs == 1


def test_a_late_tick_still_produces_the_whole_burst(make: Any) -> None:
    e = make(rate=10_000, pattern="blink", burst_ms=4, idle_ms=46)
    e.plug(0)
    e.on_host(b"!U0\nE+\n", 0)
    e.fifo.clear()
    e.on_tick(30 * MS)  # one tick, 26 ms late: it covers the 4 ms burst all the same
    assert e.events_sent == 40 and list(e.bursts) == [30 * MS]
    e.on_tick(49 * MS)  # silence
    assert e.events_sent == 40
    for t in range(50, 55):  # the next burst, on time
        e.on_tick(t * MS)
    assert e.events_sent == 80 and list(e.bursts) == [30 * MS, 51 * MS]
