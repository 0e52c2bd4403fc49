"""Test helper: a database in the toolchain's own schema (its db.sql), filled row by row.

The tables and views are spinn_front_end_common's, read from the installed package; the rows
are what a mapping would have written. The test against a real sPyNNaker run is
tests/endpoints/test_spinnaker_toolchain.py; this keeps the failure cases fast.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def ddl() -> str:
    """The toolchain's DDL (tables and views of input_output_database.sqlite3)."""
    fec = pytest.importorskip("spinn_front_end_common.utilities.database",
                              reason="the spinnaker extra (sPyNNaker) is needed")
    return (Path(fec.__file__).parent / "db.sql").read_text()


@dataclass
class Pop:
    """A population: its keys (atom i has keys[i]), and where it lives."""

    keys: list[int]
    place: tuple[int, int, int] = (0, 0, 4)
    lpg: tuple[str, int, int] | None = None  # (ip, port, tag) of its live output
    strip: bool = True


@dataclass
class Db:
    pops: dict[str, Pop] = field(default_factory=dict)
    board: str = "127.0.0.1"

    def write(self, path: Path) -> str:
        con = sqlite3.connect(path)
        con.executescript(ddl())
        con.executemany("INSERT INTO configuration_parameters VALUES (?, ?)",
                        [("machine_time_step", 1000.0), ("runtime", 100.0)])
        con.execute("INSERT INTO Machine_layout (x_dimension, y_dimension) VALUES (8, 8)")
        con.execute("INSERT INTO Machine_chip VALUES (18, 0, 0, 1, ?, 0, 0)", (self.board,))
        con.execute("INSERT INTO Machine_chip VALUES (18, 1, 0, 1, NULL, 0, 0)")
        lpg_ids: dict[tuple[str, int, int], int] = {}
        for label, pop in self.pops.items():
            app = con.execute("INSERT INTO Application_vertices (vertex_label) VALUES (?)",
                              (label,)).lastrowid
            mv = con.execute("INSERT INTO Machine_vertices (label) VALUES (?)",
                             (f"{label}:0",)).lastrowid
            con.execute("INSERT INTO graph_mapper_vertex VALUES (?, ?)", (app, mv))
            x, y, p = pop.place
            con.execute("INSERT INTO Placements VALUES (?, 1, ?, ?, ?)", (mv, x, y, p))
            con.executemany("INSERT INTO event_to_atom_mapping VALUES (?, ?, ?)",
                            [(mv, atom, key) for atom, key in enumerate(pop.keys)])
            if pop.lpg is not None:
                lpg = lpg_ids.get(pop.lpg)
                if lpg is None:
                    lpg = con.execute("INSERT INTO Machine_vertices (label) VALUES (?)",
                                      ("LiveSpikeReceiver:0",)).lastrowid
                    assert lpg is not None
                    lpg_ids[pop.lpg] = lpg
                    con.execute("INSERT INTO Placements VALUES (?, 1, 0, 0, 1)", (lpg,))
                    ip, port, tag = pop.lpg
                    con.execute("INSERT INTO IP_tags VALUES (?, ?, ?, ?, ?, ?)",
                                (lpg, tag, self.board, ip, port, pop.strip))
                con.execute("INSERT INTO m_vertex_to_lpg_vertex VALUES (?, 'SPIKE', ?)",
                            (mv, lpg))
        con.commit()
        con.close()
        return str(path)
