"""Event patterns and recordings for the eDVS emulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.emulate.patterns import BarPattern, BlinkPattern, load_events, make_pattern


def test_recording_from_csv_loops_in_order(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("x,y,p,t_us\n1,2,1,0\n3,4,0,10\n5,6,1,20\n")
    pattern = make_pattern(f"file:{path}")
    x, y, p = pattern.events(5)
    assert x.tolist() == [1, 3, 5, 1, 3] and y.tolist() == [2, 4, 6, 2, 4]
    assert p.tolist() == [1, 0, 1, 1, 0]
    assert pattern.events(1)[0].tolist() == [5]


def test_recording_from_npz(tmp_path: Path) -> None:
    path = tmp_path / "rec.npz"
    np.savez(path, x=[7, 8], y=[9, 10], p=[0, 1])
    assert [c.tolist() for c in load_events(path)] == [[7, 8], [9, 10], [0, 1]]


def test_bad_recordings_and_names(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("200,1,1\n")
    with pytest.raises(ValueError, match=r"0\.\.127"):
        load_events(path)
    with pytest.raises(ValueError, match="unknown pattern"):
        make_pattern("spiral")


def test_bar_sweeps_and_blink_repeats() -> None:
    bar = BarPattern(per_column=4, rng=np.random.default_rng(0))
    x, _, p = bar.events(12)
    assert x[p == 1].tolist() == [0, 0, 1, 1, 2, 2]  # ON at the leading edge, moving right
    assert x[p == 0].tolist() == [126, 126, 127, 127, 0, 0]  # OFF two columns behind
    blink = BlinkPattern(pixels=[(3, 4), (5, 6)])
    x, y, p = blink.events(3)
    assert x.tolist() == [3, 5, 3] and y.tolist() == [4, 6, 4] and p.tolist() == [1, 1, 1]
