"""spinnaker:// against the real toolchain: sPyNNaker 7.4.1 on a virtual board, on loopback.

The toolchain maps a PyNN script, writes its database and notifies spikebridge; its own
``wait_for_confirmation`` must succeed. The test then plays the board: it answers the
bridge's IPTagSet as SCAMP would (checked against spinnman's IPTagSet and CheckOKResponse),
sends Live Packet Gatherer messages (built with spinnman's EIEIODataMessage, keys from the
database through spinn_front_end_common's DatabaseReader) to the tag, and reads what the
bridge sends to the SpikeInjectors with spinnman's SDP and EIEIO parsers.

Everything stays on 127.0.0.0/8: the cfg points the notification and the live-output tags at
127.0.0.1, a virtual board's chips have 127.0.x.y as their Ethernet addresses, and the
virtual board opens no transceiver (no machine_name, spalloc or remote URL is set).
"""

from __future__ import annotations

import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

spinnman = pytest.importorskip("spinnman", reason="the spinnaker extra (sPyNNaker) is needed")
pytest.importorskip("spynnaker", reason="the spinnaker extra (sPyNNaker) is needed")

from spinn_front_end_common.utilities.database import DatabaseReader  # noqa: E402
from spinnman.messages.eieio import EIEIOType, read_eieio_data_message  # noqa: E402
from spinnman.messages.eieio.data_messages import EIEIODataMessage  # noqa: E402
from spinnman.messages.scp.impl import IPTagSet  # noqa: E402
from spinnman.messages.scp.impl.check_ok_response import CheckOKResponse  # noqa: E402
from spinnman.messages.sdp import SDPMessage  # noqa: E402

from bridge.config import config_from_flags  # noqa: E402
from bridge.testing import RunningBridge, UdpPeer, free_udp_port, wait_for  # noqa: E402

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("spinnaker_toolchain.py")
CFG = """\
[Machine]
virtual_board = True
version = 5
machine_name = None
spalloc_server = None
remote_spinnaker_url = None

[Database]
notify_hostname = 127.0.0.1

[Recording]
live_spike_host = 127.0.0.1

[Reports]
keep_input_output_database = True
"""


class Board:
    """Plays the board's Ethernet chip at 127.0.0.0: answers IPTagSet, collects SDP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.0", 0))
        self.port: int = self.sock.getsockname()[1]
        self.tags: dict[int, tuple[str, int]] = {}
        self.iptag_requests: list[bytes] = []
        self.sdp: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, addr = self.sock.recvfrom(65536)
            if len(data) >= 14 and data[2] == 0x87:  # SCP, reply expected: IPTagSet
                self.iptag_requests.append(data)
                tag = data[14]
                self.tags[tag] = addr  # use_sender: the tag now points at the sender
                self.sock.sendto(scp_ok(data), addr)
            else:
                self.sdp.append(data)

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def scp_ok(request: bytes) -> bytes:
    """SCAMP's 18-byte OK reply to ``request`` (pad, SDP header swapped, RC_OK, seq, 4 bytes)."""
    dest_y, dest_x = request[6], request[7]
    sdp = bytes([0x07, 0xFF, 0xFF, 0x00, 0, 0, dest_y, dest_x])
    return b"\0\0" + sdp + (0x80).to_bytes(2, "little") + request[12:14] + b"\0\0\0\0"


def lpg_message(keys: list[int], timestep: int) -> bytes:
    """What a Live Packet Gatherer sends by default: 32-bit keys with a timestamp prefix."""
    msg = EIEIODataMessage.create(EIEIOType.KEY_32_BIT, timestamp=timestep)
    for k in keys:
        msg.add_key(k)
    data: bytes = msg.bytestring
    return data


def injector_atoms(datagram: bytes) -> tuple[tuple[int, int, int], list[int]]:
    """(x, y, p) and keys of an SDP-wrapped EIEIO datagram, read by spinnman."""
    assert datagram[:2] == b"\0\0"
    sdp = SDPMessage.from_bytestring(datagram, 2)
    hdr = sdp.sdp_header
    assert sdp.data is not None
    msg = read_eieio_data_message(sdp.data, sdp.offset)
    keys = []
    while msg.is_next_element:
        keys.append(msg.next_element.key)
    return (hdr.destination_chip_x, hdr.destination_chip_y, hdr.destination_cpu), keys


class Toolchain:
    """The PyNN script in a subprocess, with a private HOME holding its cfg."""

    def __init__(self, tmp: Path, notify: int, port_set: int, port_db: int) -> None:
        home = tmp / "home"
        home.mkdir()
        (home / ".spynnaker.cfg").write_text(CFG)
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(notify), str(port_set), str(port_db)],
            cwd=tmp, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip())
        self._queue.put(None)

    def expect(self, word: str, timeout: float = 60.0) -> str:
        """Read output until a line starting with ``word``; fail with the output so far."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(word):
                return line
            if line.startswith(("FAILED", "Traceback")):
                break
        tail = "\n".join(self.lines[-40:])
        pytest.fail(f"the toolchain did not say {word!r}:\n{tail}")

    def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def counts(rb: RunningBridge, i: int, out: bool = False) -> dict[str, int]:
    st = (rb.bridge.outputs if out else rb.bridge.inputs)[i].stats
    return {"frames": st.frames, "accepted": st.accepted, **st.drops_by_reason()}


def test_a_real_spynnaker_run_connects_with_no_hand_entered_keys(tmp_path: Path) -> None:
    notify, port_set, port_db = free_udp_port(), free_udp_port(), free_udp_port()
    board = Board()
    watch = UdpPeer()  # sees every atom the bridge forwards from pop
    note = f"notify=127.0.0.1:{notify}&board_port={board.port}"
    cfg = config_from_flags(
        [f"spinnaker://pop?{note}&neurons=20&tag=set&bind=127.0.0.1:0&name=pop",
         f"spinnaker://pop2?{note}&neurons=12&offset=20&name=pop2"],
        [f"spinnaker://inj?{note}&neurons=10&name=inj",
         f"spinnaker://inj2?{note}&neurons=6&offset=20&full_keys=1&name=inj2",
         f"udp://127.0.0.1:{watch.port}?format=native&neurons=32&name=watch"])
    rb = RunningBridge(cfg)
    chain = Toolchain(tmp_path, notify, port_set, port_db)
    try:
        db_path = chain.expect("DB").split(" ", 1)[1]
        chain.expect("CONFIRMED 1")  # the toolchain's own wait_for_confirmation succeeded
        ins = rb.bridge.inputs
        assert [p.ep.state for p in ins] == ["ready", "ready"]

        # What the bridge did to the tag: spinnman's own IPTagSet, from the input's socket.
        with DatabaseReader(db_path) as db:
            keys = db.get_atom_id_to_key_mapping("pop")
            keys2 = db.get_atom_id_to_key_mapping("pop2")
            inj2_keys = db.get_atom_id_to_key_mapping("inj2")
            _, _, _, _, tag, tx, ty = db.get_live_output_details("pop", "LiveSpikeReceiver")
            inj_xyp = db.get_placements("inj")[0]
            inj2_xyp = db.get_placements("inj2")[0]
        want = IPTagSet(tx, ty, [0, 0, 0, 0], 0, tag, strip=True, use_sender=True)
        want.sdp_header.update_for_send(tx, ty)
        assert board.iptag_requests[0] == b"\0\0" + want.bytestring
        CheckOKResponse("Set IP Tag", "CMD_IPTAG").read_bytestring(
            scp_ok(board.iptag_requests[0]), 2)  # our stand-in for SCAMP answers as it must
        assert board.tags[tag] == ins[0].ep._sock.getsockname()  # type: ignore[attr-defined]
        assert sorted(keys.values()) != list(range(20))  # sPyNNaker's keys are not base + i

        to_set = board.tags[tag]
        to_db = ("127.0.0.1", port_db)
        board.sock.sendto(lpg_message([keys[1]], 0), to_set)  # before START: not forwarded
        assert wait_for(lambda: counts(rb, 0).get("not_running") == 1)

        chain.say("start")
        chain.expect("STARTED 1")
        assert wait_for(lambda: [p.ep.state for p in ins] == ["running", "running"])
        board.sock.sendto(lpg_message([keys[a] for a in (0, 3, 7, 15)], 5), to_set)
        board.sock.sendto(lpg_message([keys2[a] for a in (2, 11)], 6), to_db)
        assert wait_for(lambda: len(board.sdp) >= 2)
        got: dict[tuple[int, int, int], list[int]] = {}
        for d in board.sdp:
            xyp, k = injector_atoms(d)
            got.setdefault(xyp, []).extend(k)
        assert got[inj_xyp] == [0, 3, 7]  # 16-bit atom ids, as LiveEventConnection sends
        assert got[inj2_xyp] == [inj2_keys[2]]  # full keys for pop2's atom 2 (inj2 has 6)
        seen = sorted(a for d in watch.recv_all(quiet=0.3) for a in _native_ids(d))
        assert seen == [0, 3, 7, 15, 22, 31]

        chain.say("stop")
        chain.expect("STOPPED 1")
        assert wait_for(lambda: ins[0].ep.state == "stopped")
        board.sock.sendto(lpg_message([keys[2]], 9), to_set)
        assert wait_for(lambda: counts(rb, 0).get("not_running") == 2)

        # The next run() notifies again; the database is read again and acknowledged.
        chain.expect("CONFIRMED 2")
        chain.say("start")
        chain.expect("STARTED 2")
        chain.say("stop")
        chain.expect("END")
        c = counts(rb, 0)
        assert c == {"frames": 3, "accepted": 1, "not_running": 2}
        assert rb.bridge.inputs[0].stats.control == {"database": 2, "start": 2, "stop": 2}
        assert chain.proc.wait(30) == 0
    finally:
        chain.close()
        rb.stop()
        board.close()
        watch.close()


def _native_ids(datagram: bytes) -> Any:
    from bridge.codecs.native import NativeCodec

    return NativeCodec(32).decode(datagram).ids.tolist()


def test_numpy_and_brian2_still_import_beside_spynnaker() -> None:
    code = "import brian2, numpy, spynnaker; print(numpy.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    major, minor = (int(v) for v in out.split(".")[:2])
    assert (major, minor) < (2, 4)
    assert np.__version__ == out


@pytest.mark.slow
def test_an_ack_from_another_port_never_reaches_the_toolchain(tmp_path: Path) -> None:
    """What docs/spinnaker.md says of a listener that replies from the wrong port."""
    notify = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    notify.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    chain = Toolchain(tmp_path, notify.getsockname()[1], free_udp_port(), free_udp_port())
    try:
        chain.expect("DB")
        notify.settimeout(30)
        data, addr = notify.recvfrom(65536)
        assert data[:2] == b"\x01\x40"
        other.sendto(b"\x01\x40", addr)  # the right bytes, from the wrong port
        t0 = time.monotonic()
        line = chain.expect("FAILED", timeout=30)
        assert "SpinnmanTimeoutException" in line and "waiting for external sources" in line
        assert "timed out after 10 seconds" in line
        assert time.monotonic() - t0 < 20  # [Database] wait_on_confirmation_timeout = 10
    finally:
        chain.close()  # kills it: its notification thread still blocks in receive
        notify.close()
        other.close()
