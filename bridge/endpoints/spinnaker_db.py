"""Reading sPyNNaker's input/output database, and the helper thread that does it.

The toolchain writes ``input_output_database.sqlite3`` after mapping and names it in its
notification. What a live endpoint needs from it is read here with the same queries as
spinn_front_end_common's ``DatabaseReader`` (7.4.1): ``label_event_atom_view`` (atom and
routing key of every atom of a label), ``app_output_tag_view`` (the Live Packet Gatherer's IP
tag), ``application_vertex_placements`` and ``chip_eth_info`` (where a SpikeInjector's core
is and which board address reaches it), ``configuration_parameters`` (run time, time step).

``DatabaseReader`` runs in a thread that the endpoint starts at open, before the loop raises
its priority. The loop hands it paths through a bounded queue (newest wins) and reads results
from a deque, woken through one end of a socket pair: the loop never opens the file, never
waits for SQLite and never blocks on this thread.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from bridge.codecs.spinnaker import LPG_LABEL, KeyTable


@dataclass(frozen=True)
class OutputTag:
    """A label's live-output IP tag, as ``app_output_tag_view`` gives it."""

    ip: str
    port: int
    strip_sdp: bool
    board: str
    tag: int
    x: int
    y: int


@dataclass(frozen=True)
class LabelInfo:
    """What the database says about one population label."""

    table: KeyTable
    tag: OutputTag | None = None                 # live output (inputs)
    placements: tuple[tuple[int, int, int], ...] = ()
    board: str | None = None                     # Ethernet address of placements[0]'s board


@dataclass(frozen=True)
class Snapshot:
    """One database, read: per-label info, and the labels it does not have."""

    path: str
    generation: int
    labels: dict[str, LabelInfo] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    known: tuple[str, ...] = ()  # every label the database maps (for error messages)
    runtime_ms: float | None = None
    timestep_us: float | None = None
    error: str | None = None  # the file could not be read at all


def read_database(path: str, labels: Iterable[str], generation: int = 0,
                  timeout_s: float = 5.0) -> Snapshot:
    """Read what ``labels`` need from the database at ``path`` (read-only, never writes)."""
    wanted = list(dict.fromkeys(labels))
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s)
    except sqlite3.Error as exc:
        return Snapshot(path, generation, error=f"cannot open {path}: {exc}")
    try:
        return _read(con, path, wanted, generation)
    except sqlite3.Error as exc:
        return Snapshot(path, generation, error=f"cannot read {path}: {exc}")
    finally:
        con.close()


def _read(con: sqlite3.Connection, path: str, wanted: list[str], generation: int) -> Snapshot:
    params = dict(con.execute("SELECT parameter_id, value FROM configuration_parameters"))
    infos: dict[str, LabelInfo] = {}
    missing: list[str] = []
    for label in wanted:
        rows = con.execute("SELECT atom, event FROM label_event_atom_view WHERE label = ?",
                           (label,)).fetchall()
        if not rows:
            missing.append(label)
            continue
        arr = np.array(rows, dtype=np.int64)
        table = KeyTable(arr[:, 0], arr[:, 1])
        tag_row = con.execute(
            "SELECT ip_address, port, strip_sdp, board_address, tag, chip_x, chip_y "
            "FROM app_output_tag_view WHERE pre_vertex_label = ? AND post_vertex_label LIKE ? "
            "LIMIT 1", (label, LPG_LABEL + "%")).fetchone()
        tag = None
        if tag_row is not None:
            ip, port, strip, board, tag_id, x, y = tag_row
            tag = OutputTag(str(ip), int(port), bool(strip), str(board), int(tag_id),
                            int(x), int(y))
        places = tuple(
            (int(x), int(y), int(p)) for x, y, p in con.execute(
                "SELECT x, y, p FROM application_vertex_placements WHERE vertex_label = ?",
                (label,)))
        board = None
        if places:
            x, y, _ = places[0]
            row = con.execute(
                "SELECT eth_ip_address FROM chip_eth_info WHERE x = ? AND y = ? OR x = 0 AND "
                "y = 0 ORDER BY x DESC LIMIT 1", (x, y)).fetchone()
            board = None if row is None else str(row[0])
        infos[label] = LabelInfo(table, tag, places, board)

    def num(key: str) -> float | None:
        try:
            return float(params[key])
        except (KeyError, TypeError, ValueError):
            return None

    known = tuple(str(r[0]) for r in con.execute(
        "SELECT DISTINCT label FROM label_event_atom_view ORDER BY label"))
    return Snapshot(path, generation, infos, tuple(missing), known, num("runtime"),
                    num("machine_time_step"))


class DatabaseReader:
    """A helper thread that reads databases for the loop: ``submit`` a path, ``results``."""

    def __init__(self, name: str) -> None:
        self._requests: queue.Queue[tuple[str, tuple[str, ...], int] | None] = queue.Queue(1)
        self.results: deque[Snapshot] = deque(maxlen=4)
        self.wake_r, self._wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, path: str, labels: tuple[str, ...], generation: int) -> None:
        """Ask for ``path`` to be read; a request not yet started is replaced (never blocks)."""
        with contextlib.suppress(queue.Empty):
            self._requests.get_nowait()
        with contextlib.suppress(queue.Full):
            self._requests.put_nowait((path, labels, generation))

    def drain_wake(self) -> None:
        """Empty the wake socket (loop side)."""
        with contextlib.suppress(OSError):
            while self.wake_r.recv(64):
                pass

    def _run(self) -> None:
        while True:
            req = self._requests.get()
            if req is None:
                return
            path, labels, generation = req
            try:
                snap = read_database(path, labels, generation)
            except Exception as exc:  # a database this build cannot make sense of
                snap = Snapshot(path, generation, error=f"cannot read {path}: {exc!r}")
            self.results.append(snap)
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def close(self) -> None:
        """Stop the thread and close the wake sockets; idempotent."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._requests.get_nowait()
            self._requests.put(None)
            self._thread.join(5.0)
        self.wake_r.close()
        self._wake_w.close()
