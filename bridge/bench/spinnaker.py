"""``spikebridge bench spinnaker``: the cost of sPyNNaker's per-atom key tables, and the handshake.

Two measurements, each against a floor taken in the same run:

- decode and encode per message through a database key table (``SpinnakerCodec``), against
  the plain ``eieio`` codec's ``key = base + i`` on the same messages;
- notification to acknowledgement over loopback for a population of N atoms (the database
  read in the helper thread), against the toolchain's 10 s ``wait_on_confirmation_timeout``.

A benchmark, not a test: it prints, never asserts. The database uses the toolchain's own
schema when spinn_front_end_common is installed (the ``spinnaker`` extra), else it says so.
"""

from __future__ import annotations

import functools
import socket
import sqlite3
import statistics
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bridge.codecs.eieio import EieioCodec
from bridge.codecs.spinnaker import DATABASE_ACK, KeyTable, SpinnakerCodec
from bridge.frame import SpikeFrame
from bridge.tools import ArgumentParser, add_duration


def _lpg(keys: np.ndarray) -> bytes:
    return struct.pack(f"<BBI{keys.size}I", keys.size, 0x38, 0, *keys.tolist())


def _per_call_ns(fn: Callable[[], object], seconds: float) -> float:
    """Median over 5 rounds of the mean time of one call."""
    rounds = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter_ns()
        end = t0 + int(seconds * 1e9 / 5)
        while True:
            for _ in range(100):
                fn()
            n += 100
            now = time.perf_counter_ns()
            if now >= end:
                break
        rounds.append((now - t0) / n)
    return statistics.median(rounds)


def codec_costs(atoms: int, seconds: float) -> list[tuple[str, float, float]]:
    """(case, table ns, floor ns) per message for decode and encode."""
    rng = np.random.default_rng(1)
    # sPyNNaker-like keys: 256 atoms per core, each core its own base, colour bits below.
    keys = np.array([(1 + a // 256) << 16 | (a % 256) << 4 for a in range(atoms)], dtype=np.int64)
    table = KeyTable(np.arange(atoms), keys)
    codec = SpinnakerCodec(atoms)
    codec.bind(table)
    codec.running = True
    floor = EieioCodec(0)
    out = SpinnakerCodec(min(atoms, 0xFFFF))
    out.bind(table, sdp=(0, 0, 5))
    out.running = True
    out_floor = EieioCodec(min(atoms, 0xFFFF), keybits=16, sdp=(0, 0, 5))
    rows = []
    for n in (1, 16, 63):
        ids = np.sort(rng.choice(atoms, size=n, replace=False)).astype(np.uint32)
        msg = _lpg(keys[ids])
        base_msg = _lpg(ids.astype(np.int64))
        frame = SpikeFrame(0, 0, 0, ids % min(atoms, 0xFFFF))  # 16-bit atom ids
        rows.append((f"decode {n:>2} keys",
                     _per_call_ns(functools.partial(codec.decode, msg), seconds),
                     _per_call_ns(functools.partial(floor.decode, base_msg), seconds)))
        rows.append((f"encode {n:>2} ids ",
                     _per_call_ns(functools.partial(out.encode, frame), seconds),
                     _per_call_ns(functools.partial(out_floor.encode, frame), seconds)))
    return rows


def _database(path: Path, atoms: int) -> bool:
    """A database of one ``atoms``-atom population with a live output; False without the DDL."""
    try:
        from spinn_front_end_common.utilities import database as fec_db
    except ImportError:
        return False
    con = sqlite3.connect(path)
    con.executescript((Path(fec_db.__file__).parent / "db.sql").read_text())
    con.execute("INSERT INTO configuration_parameters VALUES ('runtime', 1000.0)")
    con.execute("INSERT INTO Machine_layout (x_dimension, y_dimension) VALUES (8, 8)")
    con.execute("INSERT INTO Machine_chip VALUES (18, 0, 0, 1, '127.0.0.1', 0, 0)")
    app = con.execute("INSERT INTO Application_vertices (vertex_label) VALUES ('pop')").lastrowid
    lpg = con.execute("INSERT INTO Machine_vertices (label) VALUES ('LiveSpikeReceiver')"
                      ).lastrowid
    con.execute("INSERT INTO Placements VALUES (?, 1, 0, 0, 1)", (lpg,))
    con.execute("INSERT INTO IP_tags VALUES (?, 1, '127.0.0.1', '127.0.0.1', 0, 1)", (lpg,))
    rows = []
    for core in range(0, atoms, 256):
        mv = con.execute("INSERT INTO Machine_vertices (label) VALUES (?)",
                         (f"pop:{core}",)).lastrowid
        con.execute("INSERT INTO graph_mapper_vertex VALUES (?, ?)", (app, mv))
        con.execute("INSERT INTO m_vertex_to_lpg_vertex VALUES (?, 'SPIKE', ?)", (mv, lpg))
        rows += [(mv, a, (1 + a // 256) << 16 | (a % 256) << 4)
                 for a in range(core, min(core + 256, atoms))]
    con.executemany("INSERT INTO event_to_atom_mapping VALUES (?, ?, ?)", rows)
    con.commit()
    con.close()
    return True


def handshake_ms(atoms: int, repeats: int) -> list[float] | None:
    """Notification-to-ack times (ms) through a spinnaker:// input; None without the DDL."""
    from bridge.endpoints import endpoint_spec, open_endpoint

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "input_output_database.sqlite3"
        if not _database(db, atoms):
            return None
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        notify = probe.getsockname()[1]
        probe.close()
        ep = open_endpoint(endpoint_spec(
            f"spinnaker://pop?notify=127.0.0.1:{notify}&neurons={atoms}", "in"))
        tc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tc.bind(("127.0.0.1", 0))
        tc.connect(("127.0.0.1", notify))
        tc.setblocking(False)
        times = []
        try:
            for _ in range(repeats):
                t0 = time.perf_counter_ns()
                tc.send(b"\x01\x40" + str(db).encode())
                while True:
                    ep.service(time.monotonic_ns())
                    try:
                        if tc.recv(16) == DATABASE_ACK:
                            break
                    except BlockingIOError:
                        time.sleep(0.0002)
                times.append((time.perf_counter_ns() - t0) / 1e6)
        finally:
            tc.close()
            ep.close()
        return times


def main(argv: Sequence[str]) -> int:
    """Print per-message costs and handshake times, each with its ratio to the floor."""
    parser = ArgumentParser(prog="spikebridge bench spinnaker", description=__doc__,
                            epilog="example: spikebridge bench spinnaker --atoms 10000")
    parser.add_argument("--atoms", type=int, default=100_000, help="population size")
    add_duration(parser, "time per codec case", dest="seconds", default=1.0)
    parser.add_argument("--repeats", type=int, default=5, help="handshakes to time")
    args = parser.parse_args(argv)
    if args.atoms < 64 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--atoms >= 64, --duration > 0 and --repeats >= 1")
    print(f"key table of {args.atoms} atoms (256 per core, colour bits), per message:")
    print(f"  {'case':<16} {'table':>10} {'base+i floor':>13} {'ratio':>7}")
    for case, ns, floor in codec_costs(args.atoms, args.seconds):
        print(f"  {case:<16} {ns / 1000:>8.2f}us {floor / 1000:>11.2f}us {ns / floor:>6.2f}x")
    times = handshake_ms(args.atoms, args.repeats)
    if times is None:
        print("handshake: skipped (needs spinn_front_end_common's schema: the spinnaker extra)")
        return 0
    med = statistics.median(times)
    print(f"notification -> ack, {args.atoms} atoms, {args.repeats} runs: median {med:.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}); "
          f"{med / 10_000:.4f}x the toolchain's 10 s timeout")
    return 0
