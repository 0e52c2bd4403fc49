"""dv+tcp / dv+unix endpoints against dv-processing's own NetworkWriter and NetworkReader."""

from __future__ import annotations

import select
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

dv = pytest.importorskip("dv_processing", reason="needs spikebridge[events]")

from bridge.codecs import dvstream  # noqa: E402
from bridge.codecs.geometry import Geometry  # noqa: E402
from bridge.endpoints import endpoint_spec, make_codec, open_endpoint  # noqa: E402
from bridge.endpoints.dv import Backoff, DvEndpoint  # noqa: E402
from bridge.errors import ConfigError, EndpointError  # noqa: E402
from bridge.frame import SpikeFrame  # noqa: E402
from bridge.record.resend import Resender  # noqa: E402
from bridge.testing import wait_for  # noqa: E402

W, H = 64, 48
N = W * H * 2
GEO = Geometry("dv", 0, W, H, "pyx", 1)

pytestmark = pytest.mark.integration


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def store(ts: list[int], xs: list[int], ys: list[int], ps: list[bool]) -> Any:
    s = dv.EventStore()
    for t, x, y, p in zip(ts, xs, ys, ps, strict=True):
        s.push_back(t, x, y, p)
    return s


def drain(ep: Any, codec: Any, want: int, timeout: float = 10.0) -> list[int]:
    """Ids of the frames the input hands the loop, polled like the loop does, until ``want``."""
    ids: list[int] = []
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while len(ids) < want and time.monotonic() < end:
        if sel.select(0.1):
            while (got := ep.recv()) is not None:
                ids += codec.decode(got[0]).ids.tolist()
    sel.close()
    return ids


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def batches(rng: np.random.Generator, n: int, size: int) -> Iterator[tuple[list[int], ...]]:
    t = 1_000_000
    for _ in range(n):
        xs = rng.integers(0, W, size).tolist()
        ys = rng.integers(0, H, size).tolist()
        ps = rng.integers(0, 2, size).astype(bool).tolist()
        yield list(range(t, t + size)), xs, ys, ps
        t += size


# dv-processing's NetworkWriter runs in a child process: its destructor can wait forever for
# a Unix-socket client to go away, and its I/O thread spins a core while it lives.
WRITER = """
import os, sys, time, numpy as np, dv_processing as dv
target, events = sys.argv[1], np.load(sys.argv[2])
stream = dv.io.Stream.EventStream(0, "events", "DVXplorer_test", (W, H))
if target.startswith("/"):
    w = dv.io.NetworkWriter(dv.Path(target), stream)
else:
    w = dv.io.NetworkWriter("127.0.0.1", int(target), stream)
print("listening", flush=True)
end = time.monotonic() + 20
while w.getClientCount() == 0 and time.monotonic() < end:
    time.sleep(0.01)
for a in range(0, len(events), 50):
    s = dv.EventStore()
    for t, x, y, p in events[a:a + 50].tolist():
        s.push_back(t, x, y, bool(p))
    w.writeEvents(s)
    time.sleep(0.005)
print("sent", flush=True)
sys.stdin.readline()
os._exit(0)
""".replace("(W, H)", f"({W}, {H})")


@pytest.mark.parametrize("unix", [False, True])
def test_dv_network_writer_into_spikebridge(tmp_path: Path, rng: np.random.Generator,
                                            unix: bool) -> None:
    n = 1000
    events = np.stack([1_000_000 + np.arange(n), rng.integers(0, W, n), rng.integers(0, H, n),
                       rng.integers(0, 2, n)], axis=1)
    np.save(tmp_path / "ev.npy", events)
    if unix:
        target = str(tmp_path / "dv.sock")
        url = f"dv+unix://{target}?neurons={N}"
    else:
        target = str(free_tcp_port())
        url = f"dv+tcp://127.0.0.1:{target}?neurons={N}"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, target, str(tmp_path / "ev.npy")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ep = None
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        spec = endpoint_spec(url, "in")
        ep = open_endpoint(spec)
        codec = make_codec(spec)
        sent = GEO.ids(events[:, 1], events[:, 2], events[:, 3]).tolist()
        got = drain(ep, codec, len(sent))
        assert got == sent  # event for event, in order
        assert isinstance(ep, DvEndpoint) and ep.geometry is not None
        assert (ep.geometry.width, ep.geometry.height) == (W, H)  # from the stream
        assert ep.queue_dropped == 0
    finally:
        if ep is not None:
            ep.close()
        proc.kill()
        proc.wait(10)


# dv-processing's NetworkReader, likewise in a child: it holds the GIL while it connects.
READER = """
import os, sys, time, numpy as np, dv_processing as dv
target, want, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = dv.io.NetworkReader(dv.Path(target)) if target.startswith("/") else \\
    dv.io.NetworkReader("127.0.0.1", int(target))
print("connected", *r.getEventResolution(), flush=True)
parts, n, end = [], 0, time.monotonic() + 30
while n < want and time.monotonic() < end:
    b = r.getNextEventBatch()
    if b is None:
        time.sleep(0.001)
        continue
    a = b.numpy()
    parts.append(a)
    n += len(a)
np.save(out, np.concatenate(parts) if parts else np.zeros(0))
print("done", n, flush=True)
os._exit(0)
"""


def dv_reader(target: str, want: int, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", READER, target, str(want), str(out)],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("unix", [False, True])
def test_spikebridge_server_into_dv_network_readers(tmp_path: Path, rng: np.random.Generator,
                                                    unix: bool) -> None:
    if unix:
        target = str(tmp_path / "sb.sock")
        url = f"dv+unix://{target}?neurons={N}&width={W}&height={H}"
    else:
        target = str(free_tcp_port())
        url = f"dv+tcp://127.0.0.1:{target}?neurons={N}&width={W}&height={H}"
    spec = endpoint_spec(url, "out")
    ep = open_endpoint(spec)
    assert isinstance(ep, DvEndpoint)
    codec = make_codec(spec)
    frames, per = 30, 40
    readers = [dv_reader(target, frames * per, tmp_path / f"r{i}.npy") for i in range(2)]
    try:
        for r in readers:  # several clients at once
            assert r.stdout is not None
            assert r.stdout.readline().split() == ["connected", str(W), str(H)]
        assert wait_for(lambda: ep.clients == 2, 10)
        sent_ids: list[np.ndarray] = []
        t_sent = 1_700_000_000_000_000_000
        for k in range(frames):
            ids = rng.integers(0, N, per).astype(np.uint32)
            for d in codec.encode(SpikeFrame(0, k, t_sent + k * 1_000_000, ids)):
                assert ep.send(d)
            sent_ids.append(ids)
        want = np.concatenate(sent_ids)
        stamps = np.repeat([(t_sent + k * 1_000_000) // 1000 for k in range(frames)], per)
        for i, r in enumerate(readers):
            end = time.monotonic() + 20
            while r.poll() is None and time.monotonic() < end:
                ep.flush()
                time.sleep(0.01)
            assert r.wait(5) == 0
            ev = np.load(tmp_path / f"r{i}.npy")
            assert GEO.ids(ev["x"], ev["y"], ev["polarity"]).tolist() == want.tolist()
            assert ev["timestamp"].tolist() == stamps.tolist()  # the frame's send time, µs
        assert ep.clients_accepted == 2 and ep.slow_clients == 0
    finally:
        for r in readers:
            r.kill()
            r.wait(5)
        ep.close()
    if unix:
        assert not Path(target).exists()  # the server removes its socket


def test_slow_client_is_dropped_and_counted_while_others_keep_up(tmp_path: Path) -> None:
    port = free_tcp_port()
    url = f"dv+tcp://127.0.0.1:{port}?neurons={N}&width={W}&height={H}&client_buffer_kb=256"
    spec = endpoint_spec(url, "out")
    ep = open_endpoint(spec)
    assert isinstance(ep, DvEndpoint)
    codec = make_codec(spec)
    total = 200 * 2000
    reader = dv_reader(str(port), total, tmp_path / "r.npy")
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        assert reader.stdout is not None and reader.stdout.readline().startswith("connected")
        slow.connect(("127.0.0.1", port))  # connects, never reads
        assert wait_for(lambda: ep.clients == 2, 5)
        ids = np.arange(0, 2000, dtype=np.uint32)
        worst = 0.0
        for k in range(200):  # 200 packets of 2000 events: 6.4 MB for each client
            t0 = time.perf_counter()
            for d in codec.encode(SpikeFrame(0, k, 0, ids)):
                ep.send(d)
            worst = max(worst, time.perf_counter() - t0)
            time.sleep(0.002)
        end = time.monotonic() + 20
        while reader.poll() is None and time.monotonic() < end:
            ep.flush()
            time.sleep(0.005)
        assert reader.wait(5) == 0
        assert ep.slow_clients == 1 and ep.clients == 1
        assert len(np.load(tmp_path / "r.npy")) == total  # the reading client lost nothing
        assert worst < 0.5  # a send never waited for a client (it takes ~1 ms)
    finally:
        slow.close()
        reader.kill()
        reader.wait(5)
        ep.close()


def pump(ep: Any, codec: Any, want: int, timeout: float = 10.0) -> list[int]:
    """Like the loop: poll, read until drained, and on EndpointError reopen with backoff."""
    ids: list[int] = []
    end = time.monotonic() + timeout
    down = False
    while len(ids) < want and time.monotonic() < end:
        if down:
            down = not ep.reopen(time.monotonic_ns())
            time.sleep(0.005)
            continue
        r, _, _ = select.select([ep.fileno()], [], [], 0.05)
        if not r:
            continue
        try:
            while (got := ep.recv()) is not None:
                ids += codec.decode(got[0]).ids.tolist()
        except EndpointError:
            down = True
    return ids


def test_input_reconnects_with_backoff_and_counts() -> None:
    port = free_tcp_port()
    out_url = f"dv+tcp://127.0.0.1:{port}?neurons={N}&width={W}&height={H}"
    in_url = f"dv+tcp://127.0.0.1:{port}?neurons={N}&backoff=20&backoff_max=80"
    with pytest.raises(EndpointError, match="cannot connect"):
        open_endpoint(endpoint_spec(in_url, "in"))  # nothing listens at start: a clear error
    server = open_endpoint(endpoint_spec(out_url, "out"))
    in_spec = endpoint_spec(in_url, "in")
    client = open_endpoint(in_spec)
    assert isinstance(client, DvEndpoint) and isinstance(server, DvEndpoint)
    codec = make_codec(in_spec)
    out_codec = make_codec(endpoint_spec(out_url, "out"))
    try:
        for round_ in range(2):
            assert wait_for(lambda s=server: s.clients == 1, 10)  # type: ignore[misc]
            ids = np.array([round_, 7, 3071], dtype=np.uint32)
            for d in out_codec.encode(SpikeFrame(0, 0, 0, ids)):
                server.send(d)
            assert pump(client, codec, 3) == ids.tolist()
            server.close()  # the server goes away ...
            with pytest.raises(EndpointError):
                pump_until_lost(client)
            failures = client.connect_failures
            end = time.monotonic() + 0.3
            while time.monotonic() < end:  # reopen is called every tick, as the loop does
                assert not client.reopen(time.monotonic_ns())
                time.sleep(0.001)
            tries = client.connect_failures - failures
            assert 2 <= tries <= 8  # 20, 40, 80, 80 ms apart: ~6 tries, not 300
            server = open_endpoint(endpoint_spec(out_url, "out"))  # ... and comes back
            assert isinstance(server, DvEndpoint)
            assert wait_for(lambda: client.reopen(time.monotonic_ns()), 5)
        assert client.reconnects == 2
    finally:
        client.close()
        server.close()


def pump_until_lost(ep: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        select.select([ep.fileno()], [], [], 0.05)
        ep.recv()


def test_frames_beyond_one_datagram_queue_and_drop_the_oldest() -> None:
    spec = endpoint_spec(f"dv+tcp://127.0.0.1:1?neurons={N}&queue=3", "in")
    ep = DvEndpoint(spec.url, "in", spec.scheme_options)
    ep.codec = make_codec(spec)
    ep._resender = Resender(ep.codec, renumber=True)
    ep._dec.feed(dvstream.io_header(W, H))
    assert ep._dec.next_events() is None and ep._dec.info is not None
    for i in range(5):
        ev = dvstream.events_array([i], [i], [0], [1])
        ep._frame(ev)
    assert ep.overflow_drops() == 2
    got = [ep.codec.decode(ep._out.popleft()).ids.tolist() for _ in range(3)]
    assert got == [[GEO.ids(np.array([i]), np.array([0]), np.array([1]))[0]] for i in (2, 3, 4)]


def test_backoff_doubles_to_its_ceiling_and_resets() -> None:
    b = Backoff(100, 350)
    assert b.due(0)
    assert b.failed(0) == 100 and not b.due(99) and b.due(100)
    assert b.failed(100) == 300
    assert b.failed(300) == 650  # 350, the ceiling
    assert b.failed(650) == 1000
    b.succeeded()
    assert b.due(5000) and b.failed(5000) == 5100


def test_urls_are_validated_by_their_own_handler() -> None:
    assert str(endpoint_spec("dv+tcp://127.0.0.1:7777?neurons=10", "in").url) == \
        "dv+tcp://127.0.0.1:7777?neurons=10"
    assert endpoint_spec("dv+unix:///run/dv.sock", "in").url.target == "/run/dv.sock"
    with pytest.raises(ConfigError, match="clients"):
        endpoint_spec("dv+tcp://127.0.0.1:7777?clients=3", "in")
    with pytest.raises(ConfigError, match="backoff"):
        endpoint_spec("dv+tcp://127.0.0.1:7777?backoff=3&width=4&height=4", "out")
    with pytest.raises(ConfigError, match="unknown key"):
        endpoint_spec("dv+tcp://127.0.0.1:7777?bogus=1", "in")
    with pytest.raises(ConfigError, match="absolute"):
        endpoint_spec("dv+unix://relative.sock", "in")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        endpoint_spec("dv+tcp://nohost", "in")
    # A geometry key both the scheme and the format take goes to both.
    spec = endpoint_spec("dv+tcp://127.0.0.1:7777?format=spif&width=4&height=4", "out")
    assert spec.scheme_options["width"] == "4" and spec.codec_options["width"] == "4"
