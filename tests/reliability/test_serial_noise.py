"""Line noise at a set bit-error rate on a serial board link: every lost frame is counted.

The test is the board: it writes board frames (COBS + CRC-16) into a pty, with bit flips
from the emulators' fault injection at a per-bit error rate, to a ``spikebridge run`` daemon
reading the other end. Flips keep the stream's length, so the test knows exactly which
frames the noise touched. The daemon must show:

- frames lost (sequence gaps) = frames the noise touched; accepted = the rest;
- errors counted = frames lost + the extra pieces a flip that makes a 0x00 inside a frame cuts
  it into (each piece is one counted bad frame), and each reason exactly as a fresh decoder
  finds it in the same bytes;
- received = accepted + dropped.
"""

from __future__ import annotations

import select
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.bench.overload import kernel_drops
from bridge.codecs.board import BoardCodec
from bridge.emulate.faults import Faults, LineNoise
from bridge.emulate.port import PtyPort
from bridge.errors import DecodeError
from bridge.testing import UdpPeer, wait_for

pytestmark = pytest.mark.integration

NEURONS = 256
SPIKES = 16  # per frame: 8 + 16 x 4 + 2 bytes before stuffing


def board_frames(count: int) -> list[bytes]:
    codec = BoardCodec(NEURONS)
    rng = np.random.default_rng(5)
    return [codec.encode_spikes(rng.integers(0, NEURONS, SPIKES), t0_us=i * 1000)
            for i in range(count)]


def expected(clean: list[bytes], noisy: bytes) -> dict[str, Any]:
    """What the noise did, frame by frame, and what a fresh decoder makes of it."""
    touched = extra = 0
    pos = 0
    for frame in clean:
        got = noisy[pos:pos + len(frame)]
        pos += len(frame)
        if got != frame:
            touched += 1
            extra += max(0, len([s for s in got.split(b"\x00") if s]) - 1)
    codec = BoardCodec(NEURONS)
    codec.feed(noisy)
    reasons: Counter[str] = Counter()
    frames = 0
    while True:
        try:
            f = codec.next_frame()
        except DecodeError as exc:
            reasons[exc.reason] += 1
            continue
        if f is None:
            break
        frames += 1
    return {"touched": touched, "extra": extra, "reasons": reasons, "frames": frames,
            "lost": codec.lost}


def write_all(port: PtyPort, data: bytes) -> None:
    """Write ``data`` to the pty as fast as the daemon reads it (and drain its greeting)."""
    view = memoryview(data)
    while view:
        n = port.write(view[:4096])
        view = view[n:]
        port.read()
        if not n:
            select.select([], [port.master], [], 0.05)


def run_noise(service: Any, tmp_path: Path, peer: UdpPeer, ber: float, count: int,
              seed: int) -> dict[str, Any]:
    port = PtyPort(tmp_path / "board")
    port.plug()
    try:
        daemon = service("--in", f"serial:{tmp_path / 'board'}?format=board&neurons={NEURONS}"
                         "&name=in0",
                         "--out", f"udp://127.0.0.1:{peer.port}?format=native&neurons={NEURONS}")
        daemon.wait_ready()
        clean = board_frames(count)
        tail = 20  # clean frames at the end: a gap is only seen when a later frame arrives
        noise = LineNoise(Faults(flip=8 * ber, seed=seed))  # one flipped bit per hit byte
        noisy = noise.apply(b"".join(clean[:-tail])) + b"".join(clean[-tail:])
        assert len(noisy) == sum(map(len, clean))
        want = expected(clean, noisy)
        write_all(port, noisy)

        def settled() -> bool:
            b = daemon.scrape().books("in0")
            return b.accepted + sum(b.dropped.values()) >= want["frames"] + sum(
                want["reasons"].values())

        assert wait_for(settled, 10, 0.1), daemon.output()
        m = daemon.scrape()
        books = m.books("in0")
        assert books.balanced, books
        return {"want": want, "books": books, "flipped": noise.flipped,
                "lost": int(m.get("spikebridge_frames_lost_total", endpoint="in0")),
                "crc": int(m.get("spikebridge_serial_crc_errors_total")), "count": count,
                "sent": int(m.get("spikebridge_frames_sent_total", endpoint="out0")),
                "forwarded": len(peer.recv_all(limit=60)) + kernel_drops(peer.sock)}
    finally:
        port.close()


def check(r: dict[str, Any]) -> None:
    want, books = r["want"], r["books"]
    errors = sum(books.dropped.values())
    print(f"{r['count']} frames, {r['flipped']} bits flipped, {r['lost']} frames lost, "
          f"{errors} errors counted ({dict(want['reasons'])}; {want['extra']} extra pieces)")
    assert want["touched"] > 0 and r["flipped"] >= want["touched"]
    assert r["lost"] == want["touched"] == want["lost"]          # every hit frame is a gap
    assert books.accepted == r["count"] - r["lost"] == want["frames"]
    assert errors == r["lost"] + want["extra"]                   # lost = errors counted
    assert Counter({k: v for k, v in books.dropped.items() if v}) == want["reasons"]
    assert r["crc"] == books.dropped.get("bad_crc", 0)
    assert r["sent"] == r["forwarded"] == books.accepted  # (this end's kernel drops included)


@pytest.mark.parametrize("ber", [1e-5, 1e-4])
def test_line_noise_at_a_bit_error_rate_loses_only_counted_frames(
        service: Any, tmp_path: Path, peer: UdpPeer, ber: float) -> None:
    check(run_noise(service, tmp_path, peer, ber, count=3000 if ber < 1e-4 else 1500, seed=3))


@pytest.mark.slow
def test_line_noise_long(service: Any, tmp_path: Path, peer: UdpPeer, budget: float) -> None:
    check(run_noise(service, tmp_path, peer, 1e-4, count=max(2000, int(200_000 * budget)),
                    seed=9))
