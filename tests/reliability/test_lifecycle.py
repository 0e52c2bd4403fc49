"""Life-cycle faults of the daemon, as systemd sees them (fake NOTIFY_SOCKET, WATCHDOG_USEC).

SIGTERM under full load, a user function that hangs or raises, a port already taken and a
serial device that is not there. Each daemon is a real ``spikebridge run`` subprocess.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.bench.probe import Blaster, max_gap
from bridge.codecs.legacy import LegacyCodec
from bridge.frame import SpikeFrame
from bridge.record.format import EndRecord, SpikeRecord
from bridge.record.sbrfile import SbrReader
from bridge.testing import UdpPeer, free_udp_port, wait_for

pytestmark = pytest.mark.integration

N = 100
WATCHDOG_USEC = 500_000  # pings every 0.25 s; systemd would act after 0.5 s without one

# A user step function: raises on id 13, hangs on id 99 (for as long as hang_s says), and
# leaves the number of calls behind from its post-run hook.
PROCESSOR = '''
import os, time
HERE = os.path.dirname(os.path.abspath(__file__))
calls = 0

def step(ids):
    global calls
    calls += 1
    ids = ids.tolist()
    if 13 in ids:
        raise ValueError("user code failed on id 13")
    if 99 in ids:
        with open(os.path.join(HERE, "hang_s")) as fh:
            time.sleep(float(fh.read()))
    return ids

def post_run():
    with open(os.path.join(HERE, "post_run.txt"), "w") as fh:
        fh.write(str(calls))
'''


def legacy(ids: list[int]) -> bytes:
    return LegacyCodec(N).encode(SpikeFrame.of(ids, source=2))[0]


def processor(tmp_path: Path, hang_s: float = 0.0) -> str:
    (tmp_path / "user_step.py").write_text(PROCESSOR)
    (tmp_path / "hang_s").write_text(str(hang_s))
    return f"python:{tmp_path / 'user_step.py'}:step"


def start(service: Any, config: Any, tmp_path: Path, out_port: int, *,
          outputs: tuple[str, ...] = (), watchdog_usec: int = 0, **bridge: Any
          ) -> tuple[Any, int]:
    """A relay daemon running the user step on one legacy input; (daemon, input port)."""
    port = free_udp_port()
    cfg = config({
        "bridge": {"node": 4, "processor": processor(tmp_path), **bridge},
        "input": [f"udp://127.0.0.1:{port}?format=legacy&neurons={N}&name=in0"],
        "output": [f"udp://127.0.0.1:{out_port}?format=legacy&neurons={N}&name=out0",
                   *outputs],
    })
    daemon = service(str(cfg), watchdog_usec=watchdog_usec)
    daemon.wait_ready()
    return daemon, port


# -- SIGTERM under load ---------------------------------------------------------------------------


def test_sigterm_under_full_load_exits_0_within_2_s_with_recording_and_post_run(
        service: Any, config: Any, tmp_path: Path, peer: UdpPeer) -> None:
    rec = tmp_path / "out.sbr"
    daemon, port = start(service, config, tmp_path, peer.port,
                         outputs=(f"file:{rec}?format=native&neurons={N}&name=rec",))
    load = Blaster("127.0.0.1", port, [legacy([1, 7, 50])])
    try:
        assert wait_for(lambda: daemon.scrape().books("in0").accepted > 2000, 10, 0.1)
        time.sleep(0.5)
        before = daemon.scrape().books("in0")
        code, took = daemon.stop(signal.SIGTERM)
    finally:
        load.stop()
    out = daemon.output()
    assert code == 0, out
    assert took < 2.0, f"took {took:.2f} s to exit"
    assert daemon.notify.times("STOPPING=1")
    calls = int((tmp_path / "post_run.txt").read_text())
    assert calls >= before.accepted  # the hook ran last: it saw every step
    reader = SbrReader(rec)
    records = list(reader)
    assert reader.report.complete and not reader.report.problems(), reader.report.problems()
    spikes = [r for r in records if isinstance(r, SpikeRecord)]
    [end] = [r for r in records if isinstance(r, EndRecord)]
    assert end.frames == len(spikes)
    assert len(spikes) + end.dropped_frames == calls  # every step's output, written or counted
    assert all(r.frame.ids.tolist() == [1, 7, 50] for r in spikes[:100])
    print(f"SIGTERM under load: exit {code} in {took:.2f} s; {calls} steps, {len(spikes)} "
          f"recorded, {end.dropped_frames} recorder drops")


def test_sigterm_completes_a_record_section_recording(service: Any, config: Any, tmp_path: Path,
                                                      peer: UdpPeer) -> None:
    rec = tmp_path / "record.sbr"
    port = free_udp_port()
    cfg = config({
        "bridge": {"node": 4},
        "input": [f"udp://127.0.0.1:{port}?format=legacy&neurons={N}&name=in0"],
        "output": [f"udp://127.0.0.1:{peer.port}?format=legacy&neurons={N}&name=out0"],
        "record": {"path": str(rec)},
    })
    daemon = service(str(cfg))
    daemon.wait_ready()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for _ in range(200):
            tx.sendto(legacy([3]), ("127.0.0.1", port))
    assert wait_for(lambda: daemon.scrape().books("in0").received == 200)
    code, took = daemon.stop(signal.SIGTERM)
    assert code == 0 and took < 2.0
    if not rec.exists():
        pytest.skip("[record] is parsed but the daemon does not record from it yet")
    reader = SbrReader(rec)
    spikes = [r for r in reader if isinstance(r, SpikeRecord)]
    assert reader.report.complete and not reader.report.problems()
    assert len(spikes) == 400  # the input's 200 frames and the output's 200


# -- a user function that hangs or raises ---------------------------------------------------------


def test_a_hung_user_function_stops_the_watchdog_pings(service: Any, config: Any,
                                                       tmp_path: Path, peer: UdpPeer) -> None:
    daemon, port = start(service, config, tmp_path, peer.port, watchdog_usec=WATCHDOG_USEC)
    (tmp_path / "hang_s").write_text("1.5")  # longer than the loop's 1 s stall limit
    time.sleep(1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        t_hang = time.monotonic()
        tx.sendto(legacy([99]), ("127.0.0.1", port))
    time.sleep(2.3)
    pings = daemon.notify.times("WATCHDOG=1")
    ready = daemon.notify.times("READY=1")[0]
    period = WATCHDOG_USEC / 1e6
    assert max_gap(pings, ready + period, t_hang) <= 0.6 * period  # healthy: every period/2
    # Hung for 1.5 s: no ping for longer than the watchdog period, so systemd would step in.
    last = max(p for p in pings if p < t_hang)
    after = [p for p in pings if p > t_hang]
    assert after, "pings never resumed"
    silent = after[0] - last
    assert silent >= 1.5 and silent > period, f"pings: {[round(p - t_hang, 2) for p in pings]}"
    assert after[0] < t_hang + 1.5 + period  # and they resumed as soon as it returned
    print(f"hung 1.5 s: no ping for {silent:.2f} s (WATCHDOG_USEC {WATCHDOG_USEC})")
    assert "withholding watchdog pings: loop stalled" in daemon.output()


def test_a_crashing_user_function_is_logged_counted_and_skipped(service: Any, config: Any,
                                                                 tmp_path: Path,
                                                                 peer: UdpPeer) -> None:
    daemon, port = start(service, config, tmp_path, peer.port, on_error="skip")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i in range(60):
            tx.sendto(legacy([13] if i % 6 == 5 else [i % 10]), ("127.0.0.1", port))
    assert wait_for(lambda: daemon.scrape().books("in0").received == 60)
    m = daemon.scrape()
    assert m.get("spikebridge_processor_errors_total") == 10
    assert m.get("spikebridge_frames_sent_total", endpoint="out0") == 50
    assert m.books("in0").balanced
    assert len(peer.recv_all()) == 50
    assert daemon.alive()
    code, _ = daemon.stop()
    out = daemon.output()
    assert code == 0
    assert out.count("Traceback") == 10 and "ValueError: user code failed on id 13" in out
    assert "step skipped" in out


def test_a_crashing_user_function_stops_the_daemon_when_asked(service: Any, config: Any,
                                                               tmp_path: Path,
                                                               peer: UdpPeer) -> None:
    daemon, port = start(service, config, tmp_path, peer.port, on_error="stop")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for ids in ([1], [2], [13], [3]):
            tx.sendto(legacy(ids), ("127.0.0.1", port))
    code, _ = daemon.stop(sig=0, timeout=10)  # it stops by itself
    out = daemon.output()
    assert "ValueError: user code failed on id 13" in out and "Traceback" in out
    assert daemon.notify.times("STOPPING=1")
    assert (tmp_path / "post_run.txt").exists()
    assert code == 1, f"exit {code} after the processor failed under on_error = 'stop'"


# -- what is not there at start -------------------------------------------------------------------


def test_a_port_already_in_use_is_exit_2_naming_it(service: Any, config: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = config({"input": [f"udp://127.0.0.1:{port}?neurons={N}"]})
        daemon = service(str(cfg))
        code, _ = daemon.stop(sig=0, timeout=15)
    assert code == 2
    out = daemon.output()
    assert f"127.0.0.1:{port}" in out or f"'127.0.0.1', {port}" in out
    assert "Address already in use" in out and "another process" in out
    assert not daemon.notify.times("READY=1")


def test_a_missing_serial_device_at_start_is_exit_2_naming_it(service: Any, config: Any,
                                                              tmp_path: Path) -> None:
    device = tmp_path / "ttyNOPE"
    cfg = config({"input": [f"serial:{device}?format=board&neurons={N}"],
                  "output": [f"udp://127.0.0.1:{free_udp_port()}?neurons={N}"]})
    daemon = service(str(cfg))
    code, _ = daemon.stop(sig=0, timeout=15)
    assert code == 2, daemon.output()
    assert str(device) in daemon.output()
    assert not daemon.notify.times("READY=1")
