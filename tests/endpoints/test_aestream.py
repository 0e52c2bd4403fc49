"""SPIF against aestream's own code: its Python ``UDPInput`` as receiver, its CLI as sender.

aestream 0.6.4's command line has no UDP input (``aestream input`` offers inivation,
prophesee and file), so aestream receives here through its Python ``UDPInput`` only. It
binds 0.0.0.0 (aestream gives no choice); every datagram goes to 127.0.0.1.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aestream
import faery
import numpy as np
import pytest

from bridge.codecs.native import NativeCodec
from bridge.codecs.spif import DEFAULT_MTU, SpifCodec
from bridge.frame import SpikeFrame
from bridge.testing import free_udp_port, spikebridge_cmd, wait_for

pytestmark = pytest.mark.integration

W, H = 346, 260
AESTREAM = shutil.which("aestream") or str(Path(sys.executable).parent / "aestream")


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def aestream_receives(send: Any, want: int, shape: tuple[int, int] = (W, H),
                      quiet: float = 0.5) -> np.ndarray:
    """Events per pixel that aestream's UDPInput counted while ``send(port)`` ran."""
    port = free_udp_port()
    total = np.zeros(shape, dtype=np.float64)
    with aestream.UDPInput(shape, device="cpu", port=port) as stream:
        assert wait_for(lambda: _bound(port), 5), "aestream's UDPInput did not bind"
        send(port)
        end = time.monotonic() + 5
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            frame = np.asarray(stream.read())
            if frame.sum():
                total += frame
                last = time.monotonic()
                if total.sum() >= want:
                    break
            time.sleep(0.02)
    return total


def pixel_counts(x: np.ndarray, y: np.ndarray, shape: tuple[int, int] = (W, H)) -> np.ndarray:
    want = np.zeros(shape, dtype=np.float64)
    np.add.at(want, (x, y), 1)
    return want


def test_spikebridge_send_reaches_aestream_udpinput_whole() -> None:
    # 300 events in one frame: 1200 bytes of words. At 512 bytes a datagram (the default)
    # aestream's 512-byte receive buffer takes all of them.
    ids = np.arange(0, 300 * 7, 7)
    x, y = ids % W, ids // W % H  # layout pyx, polarity 0
    url = f"udp://127.0.0.1:{{port}}?format=spif&width={W}&height={H}"

    def send(port: int) -> None:
        subprocess.run(spikebridge_cmd("send", url.format(port=port), "--ids",
                                       ",".join(map(str, ids.tolist())), "--count", "1"),
                       check=True, capture_output=True, timeout=60)

    got = aestream_receives(send, 300)
    assert got.sum() == 300
    assert np.array_equal(got, pixel_counts(x, y))


def test_aestream_cuts_datagrams_longer_than_512_bytes() -> None:
    # Why the default is 512: with mtu=1024, the first 1024-byte datagram loses its second half.
    assert DEFAULT_MTU == 512
    codec = SpifCodec(0, width=W, height=H, mtu=1024)
    datagrams = codec.encode(SpikeFrame.of(np.arange(300)))
    assert [len(d) for d in datagrams] == [1024, 176]

    def send(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", port))

    assert aestream_receives(send, 300).sum() == 128 + 44


def test_spif_datagrams_never_exceed_512_bytes_by_default() -> None:
    for timestamp in (False, True):
        codec = SpifCodec(0, width=640, height=480, timestamp=timestamp)
        out = codec.encode(SpikeFrame.of(np.arange(0, 2 * 640 * 480, 13), t_sent_ns=5_000))
        assert max(len(d) for d in out) == 512


def write_aedat4(path: Path, n: int, seed: int) -> np.ndarray:
    """An AEDAT4 recording written by Faery (its Rust aedat writer), ``n`` events."""
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=faery.EVENTS_DTYPE)
    ev["t"] = np.cumsum(rng.integers(1, 200, n)).astype(np.uint64)
    ev["x"] = rng.integers(0, W, n)
    ev["y"] = rng.integers(0, H, n)
    ev["on"] = rng.integers(0, 2, n).astype(bool)
    faery.events_stream_from_array(ev, (W, H)).to_file(str(path))
    return ev


@pytest.mark.parametrize("timestamps", [False, True])
def test_aestream_cli_into_spikebridge_is_exact(tmp_path: Path, run_bridge: Any, peer: Any,
                                                timestamps: bool) -> None:
    ev = write_aedat4(tmp_path / "rec.aedat4", 2000, seed=4)
    neurons = 2 * W * H
    rb = run_bridge({"input": [f"udp://127.0.0.1:0?format=spif&width={W}&height={H}"
                               f"&neurons={neurons}"],
                     "output": [f"udp://127.0.0.1:{peer.port}?format=native&neurons={neurons}"]})
    args = [AESTREAM, "input", "file", str(tmp_path / "rec.aedat4"), "output", "udp",
            "127.0.0.1", str(rb.in_port())]
    if timestamps:
        args += ["--include-timestamp", "true"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    st = rb.bridge.stats.inputs[0]
    got = [NativeCodec(neurons).decode(d).ids for d in peer.recv_all()]
    ids = np.concatenate(got).tolist() if got else []
    want = ((ev["on"].astype(np.int64) * H + ev["y"]) * W + ev["x"]).tolist()
    assert st.frames == st.accepted + sum(st.drops)
    if not timestamps:
        assert (st.accepted, sum(st.drops), st.spikes) == (st.frames, 0, 2000)
        assert ids == want
    else:
        # aestream 0.6.4 with timestamps packs 32 events (256 bytes) a datagram and sends its
        # last one with twice the bytes it filled (it counts words, then multiplies by the
        # event size): the second half repeats 16 events of the datagram before. Valid SPIF,
        # so spikebridge decodes them; every one of the 2000 arrives exact and in order.
        assert (st.frames, st.accepted, sum(st.drops), st.spikes) == (63, 63, 0, 2016)
        assert ids == want + want[1968:1984]


def test_aestream_timestamps_reach_faery_through_spikebridge(tmp_path: Path, run_bridge: Any
                                                            ) -> None:
    # aestream's CLI stamps each SPIF event with the recording's time; a spif input relayed
    # to Faery's t64 layout of the same geometry keeps each event's own time, and Faery's own
    # receiver reads them.
    from tests.codecs.test_faery_udp import FaeryReceiver

    ev = write_aedat4(tmp_path / "rec.aedat4", 2000, seed=5)
    rx = FaeryReceiver("t64_x16_y16_on8", 2016, dims=(W, H))
    geo = f"width={W}&height={H}&neurons={2 * W * H}"
    rb = run_bridge({"input": [f"udp://127.0.0.1:0?format=spif&{geo}"],
                     "output": [f"udp://127.0.0.1:{rx.port}?format=t64_x16_y16_on8&{geo}"]})
    assert rb.bridge.inputs[0].passthrough
    done = subprocess.run([AESTREAM, "input", "file", str(tmp_path / "rec.aedat4"), "output",
                           "udp", "127.0.0.1", str(rb.in_port()), "--include-timestamp",
                           "true"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = rx.events()
    assert len(got) == 2016  # with aestream's 16 repeated stale events at the end (see above)
    for field in ("t", "x", "y", "on"):
        assert np.array_equal(got[field][:2000], ev[field]), field
