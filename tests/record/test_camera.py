"""Event-camera files: each vendor's library writes the file, spikebridge reads, replays, converts.

AEDAT4 files are written by iniVation's dv-processing (MonoCameraWriter) and read back by it;
ES, EVT2/EVT3, DAT and CSV files are written by Faery (the ES format's own authors; Prophesee's
SDK is not on PyPI, so Faery's EVT/DAT writers stand in for it and this is said in the docs).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

faery = pytest.importorskip("faery", reason="needs spikebridge[events]")
dv = pytest.importorskip("dv_processing", reason="needs spikebridge[events]")

from bridge.codecs.geometry import Geometry  # noqa: E402
from bridge.codecs.spif import SpifCodec  # noqa: E402
from bridge.frame import SpikeFrame  # noqa: E402
from bridge.record import camera, convert  # noqa: E402
from bridge.record.camera import CameraError, CameraFile, CameraOptions  # noqa: E402
from bridge.testing import free_udp_port, spikebridge_cmd, wait_for  # noqa: E402

W, H = 64, 48
T0 = 5_000_000  # µs: files start at 5 s, so a lost t0 shows


def make_events(bursts: list[tuple[int, int]], seed: int = 3) -> np.ndarray:
    """Events in bursts (start µs after T0, count), a few µs apart, random pixels."""
    rng = np.random.default_rng(seed)
    parts = []
    for start, n in bursts:
        t = T0 + start + np.sort(rng.integers(0, 300, n))
        ev = np.zeros(n, dtype=faery.EVENTS_DTYPE)
        ev["t"], ev["x"], ev["y"] = t, rng.integers(0, W, n), rng.integers(0, H, n)
        ev["on"] = rng.integers(0, 2, n).astype(bool)
        parts.append(ev)
    return np.concatenate(parts)


def write_dv_aedat4(path: Path, ev: np.ndarray) -> None:
    """AEDAT4 written by dv-processing itself."""
    cfg = dv.io.MonoCameraWriter.EventOnlyConfig("DVXplorer_test", (W, H))
    writer = dv.io.MonoCameraWriter(str(path), cfg)
    for a in range(0, len(ev), 500):
        store = dv.EventStore()
        for t, x, y, p in zip(ev["t"][a:a + 500].tolist(), ev["x"][a:a + 500].tolist(),
                              ev["y"][a:a + 500].tolist(), ev["on"][a:a + 500].tolist(),
                              strict=True):
            store.push_back(t, x, y, p)
        writer.writeEvents(store)
    del writer  # closes the file (writes its table)


def write_faery(path: Path, ev: np.ndarray, version: str | None = None) -> None:
    """ES / EVT / DAT / CSV written by Faery, absolute timestamps kept."""
    stream = faery.events_stream_from_array(ev.copy(), dimensions=(W, H))
    kw: dict[str, Any] = {"zero_t0": False} if path.suffix != ".csv" else {}
    if version:
        kw["version"] = version
    stream.to_file(str(path), **kw)


def vendor_file(tmp_path: Path, suffix: str, ev: np.ndarray, name: str = "rec") -> Path:
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".aedat4":
        write_dv_aedat4(path, ev)
    elif suffix == ".evt2.raw":
        path = tmp_path / f"{name}.raw"
        write_faery(path, ev, "evt2")
    else:
        write_faery(path, ev, "evt3" if suffix == ".raw" else None)
    return path


def read_dv_aedat4(path: Path) -> np.ndarray:
    """Events of an AEDAT4 file as dv-processing reads them."""
    rec = dv.io.MonoCameraRecording(str(path))
    parts = []
    while rec.isRunning():
        batch = rec.getNextEventBatch()
        if batch is not None:
            parts.append(batch.numpy())
    return np.concatenate(parts)


def same_events(a: np.ndarray, b: np.ndarray) -> bool:
    return (len(a) == len(b) and bool(np.array_equal(a["t"].astype(np.int64),
                                                     b["t"].astype(np.int64)))
            and bool(np.array_equal(a["x"], b["x"])) and bool(np.array_equal(a["y"], b["y"]))
            and bool(np.array_equal(a["on"].astype(bool), b["on"].astype(bool))))


SUFFIXES = [".aedat4", ".raw", ".evt2.raw", ".dat", ".es", ".csv"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_reads_vendor_files_event_for_event(tmp_path: Path, suffix: str) -> None:
    ev = make_events([(0, 700), (2000, 300)])
    path = vendor_file(tmp_path, suffix, ev)
    cf = CameraFile(path)
    assert (cf.width, cf.height) == (W, H)  # from the header (Faery's CSV header has it too)
    got = np.concatenate(list(cf.events()))
    assert same_events(got, ev)
    assert cf.report.events == len(ev) and not cf.report.truncated_bytes


def test_frames_group_events_by_window_and_map_pixels_like_spif(tmp_path: Path) -> None:
    ev = make_events([(0, 50), (1500, 50), (4000, 50)])
    path = vendor_file(tmp_path, ".es", ev)
    cf = CameraFile(path, CameraOptions(window_us=1000, layout="pyx"))
    frames = list(cf.frames())
    geo = Geometry("spif", 0, W, H, "pyx", 1)
    rel = ev["t"].astype(np.int64) - int(ev["t"][0])
    windows = rel // 1000
    assert len(frames) == len(np.unique(windows))
    for (t_ns, frame), k in zip(frames, np.unique(windows), strict=True):
        sel = windows == k
        assert t_ns == int(rel[sel].max()) * 1000  # stamped with its last event
        assert frame.ids.tolist() == geo.ids(ev["x"][sel], ev["y"][sel], ev["on"][sel]).tolist()
    # The same ids the spif codec gives these pixels.
    spif = SpifCodec(0, width=W, height=H)
    assert spif.decode(b"".join(spif.encode(frames[0][1]))).ids.tolist() == \
        frames[0][1].ids.tolist()
    exact = list(CameraFile(path, CameraOptions(window_us=0)).frames())
    assert len(exact) == len(np.unique(ev["t"]))


@pytest.mark.parametrize("suffix", [".aedat4", ".raw", ".dat", ".es"])
@pytest.mark.parametrize("via", [".sbr", ".aedat4", ".es", ".raw"])
def test_convert_there_and_back_event_for_event(tmp_path: Path, suffix: str, via: str) -> None:
    ev = make_events([(0, 400), (900, 400)])
    src = vendor_file(tmp_path, suffix, ev)
    mid = tmp_path / f"mid{via}"
    back = tmp_path / f"back{suffix}"
    for a, b in ((src, mid), (mid, back)):
        assert convert.main([str(a), str(b)]) == 0
    assert same_events(np.concatenate(list(CameraFile(back).events())), ev)
    if suffix == ".aedat4":  # and iniVation's own reader agrees with what we wrote
        got = read_dv_aedat4(back)
        assert np.array_equal(got["timestamp"], ev["t"].astype(np.int64))
        assert np.array_equal(got["x"], ev["x"]) and np.array_equal(got["y"], ev["y"])
        assert np.array_equal(got["polarity"].astype(bool), ev["on"])


def test_convert_to_camera_csv_and_to_spike_csv(tmp_path: Path) -> None:
    ev = make_events([(0, 100)])
    src = vendor_file(tmp_path, ".aedat4", ev)
    cam_csv, spikes_csv = tmp_path / "ev.csv", tmp_path / "spikes.csv"
    assert convert.main([str(src), str(cam_csv), "--camera-csv"]) == 0
    assert convert.main([str(src), str(spikes_csv)]) == 0
    assert cam_csv.read_text().splitlines()[0] == f"t,x@{W},y@{H},on"
    assert spikes_csv.read_text().splitlines()[0] == "time_s,endpoint,source,seq,neuron"
    assert same_events(np.concatenate(list(CameraFile(cam_csv).events())), ev)


def _receive(sock: socket.socket, until_quiet: float = 1.5) -> list[tuple[int, bytes]]:
    out = []
    sock.settimeout(until_quiet)
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return out
        out.append((time.monotonic_ns(), data))


@pytest.mark.integration
@pytest.mark.parametrize("suffix", [".aedat4", ".raw", ".es"])
def test_replay_to_udp_follows_the_recording(tmp_path: Path, suffix: str) -> None:
    # Bursts of 20 events (one spif datagram each) at uneven times over 0.9 s.
    starts = [0, 30_000, 40_000, 200_000, 210_000, 500_000, 505_000, 520_000, 880_000, 900_000]
    ev = make_events([(s, 20) for s in starts])
    path = vendor_file(tmp_path, suffix, ev)
    port = free_udp_port()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", port))
    try:
        url = f"udp://127.0.0.1:{port}?format=spif&width={W}&height={H}"
        proc = subprocess.Popen([*spikebridge_cmd("replay", str(path), url, "-q",
                                                  "--window-us", "1000")],
                                stderr=subprocess.PIPE, text=True)
        got = _receive(rx, 3.0)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        rx.close()
    codec = SpifCodec(0, width=W, height=H)
    geo = Geometry("spif", 0, W, H, "pyx", 1)
    frames = list(CameraFile(path, CameraOptions(window_us=1000)).frames())
    assert len(got) == len(frames)  # one datagram per frame: nothing lost, nothing merged
    for (_, data), (_, frame) in zip(got, frames, strict=True):
        assert codec.decode(data).ids.tolist() == frame.ids.tolist()  # in order, exact
    assert sum(len(codec.decode(d).ids) for _, d in got) == len(ev)
    assert geo.size == W * H * 2
    arrive = np.array([t for t, _ in got], dtype=np.int64) - got[0][0]
    due = np.array([t for t, _ in frames], dtype=np.int64) - frames[0][0]
    err = np.abs(arrive - due)
    # Loose enough for a loaded 2-core machine (ms of scheduling delay), tight enough that
    # sending all at once (errors up to 0.9 s) or at an even pace (~0.1 s) fails.
    assert np.median(err) < 20e6, err
    assert err.max() < 100e6, err
    assert np.all(np.diff(arrive) >= 0)


def _corrupt(path: Path, at: int) -> Path:
    data = bytearray(path.read_bytes())
    for i in range(at, min(at + 64, len(data))):
        data[i] ^= 0x5A
    bad = path.with_name("bad" + path.suffix)
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.integration
def test_corrupt_aedat4_exits_2_naming_file_offset_and_reason(tmp_path: Path) -> None:
    ev = make_events([(i * 1000, 200) for i in range(20)])
    good = vendor_file(tmp_path, ".aedat4", ev)
    offsets, _ = camera._aedat_packets(good)
    bad = _corrupt(good, offsets[len(offsets) // 2] + 40)
    port = free_udp_port()
    done = subprocess.run(
        spikebridge_cmd("replay", str(bad), f"udp://127.0.0.1:{port}?format=spif&width={W}"
                        f"&height={H}", "-q", "--ignore-timing"),
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert str(bad) in done.stderr and "at byte" in done.stderr, done.stderr
    offset = int(done.stderr.split("at byte ")[1].split(":")[0])
    assert offset in offsets  # the start of the packet that failed
    assert "cannot decode" in done.stderr


@pytest.mark.parametrize("suffix", [".aedat4", ".dat", ".raw"])
def test_truncated_file_reads_what_is_complete_and_says_what_was_cut(
        tmp_path: Path, suffix: str) -> None:
    ev = make_events([(i * 1000, 100) for i in range(30)])
    good = vendor_file(tmp_path, suffix, ev)
    data = good.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    # Cut inside a word: formats without an end marker (EVT, DAT) show only such a cut.
    head = camera._header_size(good) + (2 if suffix == ".dat" else 0)
    unit = {".dat": 8, ".raw": 2}.get(suffix, 1)
    keep = head + (len(data) - head) * 2 // 3 // unit * unit + (unit // 2 or 1)
    cut.write_bytes(data[:keep])
    cf = CameraFile(cut)
    got = np.concatenate(list(cf.events()))
    assert 0 < len(got) < len(ev)
    assert same_events(got, ev[: len(got)])  # a prefix, event for event
    assert cf.report.truncated_bytes > 0
    if unit > 1:
        assert cf.report.truncated_bytes == unit // 2
    assert "cut off" in cf.report.problems()


def test_header_geometry_wins_and_missing_geometry_is_named(tmp_path: Path) -> None:
    ev = make_events([(0, 10)])
    path = vendor_file(tmp_path, ".es", ev)
    with pytest.raises(CameraError, match="disagree with the file's header"):
        CameraFile(path, CameraOptions(width=W + 1, height=H))
    bare = tmp_path / "bare.csv"
    bare.write_text("t,x,y,on\n1,2,3,1\n")
    with pytest.raises(CameraError, match="no sensor size"):
        CameraFile(bare)
    assert CameraFile(bare, CameraOptions(width=8, height=8)).width == 8


def test_unsupported_file_exits_2(tmp_path: Path) -> None:
    bogus = tmp_path / "x.aedat4"
    bogus.write_bytes(b"not an aedat file at all" * 4)
    done = subprocess.run(spikebridge_cmd("convert", str(bogus), str(tmp_path / "o.sbr")),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert str(bogus) in done.stderr and "bad magic" in done.stderr


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faery", None)  # import faery now raises ImportError
    with pytest.raises(CameraError, match=r"pip install 'spikebridge\[events\]'"):
        camera.faery_module()


@pytest.mark.integration
def test_file_input_replays_a_camera_into_the_daemon(tmp_path: Path, daemon: Any) -> None:
    ev = make_events([(0, 50), (100_000, 50), (300_000, 50)])
    path = vendor_file(tmp_path, ".aedat4", ev)
    port = free_udp_port()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    n = W * H * 2
    try:
        d = daemon("--in", f"file:{path}?neurons={n}",
                   "--out", f"udp://127.0.0.1:{port}?format=spif&width={W}&height={H}"
                            f"&neurons={n}")
        got = _receive(rx, 8.0)
        d.stop()
    finally:
        rx.close()
    codec = SpifCodec(0, width=W, height=H)
    ids = [i for _, data in got for i in codec.decode(data).ids.tolist()]
    geo = Geometry("spif", 0, W, H, "pyx", 1)
    assert ids == geo.ids(ev["x"], ev["y"], ev["on"]).tolist()
    span = (got[-1][0] - got[0][0]) / 1e9
    assert 0.2 < span < 1.0  # paced by the file's timestamps (0.3 s), not sent at once


@pytest.mark.integration
@pytest.mark.parametrize("suffix", [".aedat4", ".es"])
def test_record_writes_the_camera_format(tmp_path: Path, suffix: str) -> None:
    port = free_udp_port()
    out = tmp_path / f"rec{suffix}"
    url = f"udp://127.0.0.1:{port}?format=spif&width={W}&height={H}"
    proc = subprocess.Popen(spikebridge_cmd("record", url, str(out), "--count", "20", "-q",
                                            "--duration", "30"),
                            stderr=subprocess.PIPE, text=True)
    codec = SpifCodec(0, width=W, height=H)
    geo = Geometry("spif", 0, W, H, "pyx", 1)
    sent: list[list[int]] = []
    rng = np.random.default_rng(9)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        # Until the command has bound its port, datagrams are lost: send until it has 20.
        while proc.poll() is None and len(sent) < 3000:
            ids = rng.integers(0, W * H * 2, 10).astype(np.uint32)
            for d in codec.encode(SpikeFrame.of(ids)):
                tx.sendto(d, ("127.0.0.1", port))
            sent.append(ids.tolist())
            time.sleep(0.01)
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    got = np.concatenate(list(CameraFile(out).events()))
    # --count is checked between batches of datagrams, so a few more frames may be kept.
    assert len(got) >= 200 and len(got) % 10 == 0  # whole frames of 10 events
    recorded = geo.ids(got["x"], got["y"], got["on"]).tolist()
    blocks = [recorded[i:i + 10] for i in range(0, len(recorded), 10)]
    start = sent.index(blocks[0])
    assert sent[start:start + len(blocks)] == blocks  # consecutive frames, in order, exact
    assert np.all(np.diff(got["t"].astype(np.int64)) >= 0)
    if suffix == ".aedat4":  # iniVation's reader takes what spikebridge recorded
        assert len(read_dv_aedat4(out)) == len(got)


def test_replay_schedule_speed_and_loop_on_a_fake_clock(tmp_path: Path) -> None:
    from bridge.engine.clock import FakeClock
    from bridge.record.schedule import Player

    ev = make_events([(0, 5), (10_000, 5), (50_000, 5)])
    path = vendor_file(tmp_path, ".aedat4", ev)
    recorded = list(CameraFile(path, CameraOptions(window_us=1000)).frames())
    k = len(recorded)
    clock = FakeClock(start_ns=1_000)
    rec = camera.open_recording([path], CameraOptions(window_us=1000))
    player = Player(rec, speed=2.0, loop=True, clock=clock)
    sent: list[tuple[int, int]] = []

    def send(_ep: int, frame: SpikeFrame) -> bool:
        sent.append((clock.monotonic_ns(), len(frame.ids)))
        if len(sent) == 2 * k:
            player.stop()
        return True

    player.run(send)
    times = [t - sent[0][0] for t, _ in sent]
    rel = [t - recorded[0][0] for t, _ in recorded]
    span = recorded[-1][0] - recorded[0][0] + 1000 * 1000  # the last frame, then one window
    # Absolute schedule at twice the speed; the second lap starts one recording span later.
    assert times[:k] == [r // 2 for r in rel]
    assert times[k:] == [(span + r) // 2 for r in rel]
    assert [n for _, n in sent] == [len(f.ids) for _, f in recorded] * 2
    assert sum(n for _, n in sent) == 2 * len(ev)


@pytest.mark.integration
def test_daemon_file_output_writes_aedat4_that_dv_processing_reads(tmp_path: Path,
                                                                   daemon: Any) -> None:
    ev = make_events([(0, 40), (50_000, 40)])
    src = vendor_file(tmp_path, ".es", ev)
    out = tmp_path / "out.aedat4"
    n = W * H * 2
    d = daemon("--in", f"file:{src}?neurons={n}",
               "--out", f"file:{out}?width={W}&height={H}&neurons={n}")
    partial = tmp_path / "out.aedat4.write"  # Faery writes here, renames when complete
    assert wait_for(lambda: partial.exists() or d.proc.poll() is not None, 30), d.output
    time.sleep(1.0)  # the loop runs; the file's 50 ms replay ends
    d.stop()  # SIGTERM completes the recording
    assert out.exists(), d.output
    got = read_dv_aedat4(out)
    geo = Geometry("spif", 0, W, H, "pyx", 1)
    assert geo.ids(got["x"], got["y"], got["polarity"]).tolist() == \
        geo.ids(ev["x"], ev["y"], ev["on"]).tolist()
