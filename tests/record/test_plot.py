"""spikebridge plot: a PNG of the requested size that is not blank; bad arguments are exit 2."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from bridge.record.plot import main
from bridge.record.sbrfile import load_table

pytest.importorskip("matplotlib")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return np.asarray(matplotlib.image.imread(str(path)))[..., :3]


def ink(path: Path) -> np.ndarray:
    """Pixels that are not white."""
    return (pixels(path) < 0.9).any(axis=-1)


def colour(path: Path) -> np.ndarray:
    """Saturated pixels: raster markers and rate lines (axes and text are grey or black)."""
    rgb = pixels(path)
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3


def test_plot_has_the_requested_size_and_is_not_blank(sample_sbr: Path, tmp_path: Path) -> None:
    out = tmp_path / "raster.png"
    assert main([str(sample_sbr), "-o", str(out), "--width", "8", "--height", "5",
                 "--dpi", "50"]) == 0
    assert png_size(out) == (400, 250)
    # The same figure over a window without spikes: axes and text only.
    empty = tmp_path / "empty.png"
    assert main([str(sample_sbr), "-o", str(empty), "--width", "8", "--height", "5",
                 "--dpi", "50", "--start", "5", "--end", "6"]) == 0
    assert png_size(empty) == (400, 250)
    assert colour(empty).mean() < 0.01
    assert colour(out).mean() > 0.1
    assert ink(out).mean() > 3 * ink(empty).mean()


def test_more_spikes_more_ink(sample_sbr: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full.png", tmp_path / "part.png"
    assert main([str(sample_sbr), "-o", str(full)]) == 0
    assert main([str(sample_sbr), "-o", str(part), "--endpoint", "in1", "--start", "1.5"]) == 0
    assert colour(full).sum() > 1.5 * colour(part).sum() > 0


def test_table_of_the_sample(sample_sbr: Path) -> None:
    table = load_table([sample_sbr])
    assert len(table.gaps) == 1 and table.gaps[0].frames == 40
    assert table.frames == 6000


@pytest.mark.parametrize(
    "extra",
    [["--bin-ms", "0"], ["--start", "2", "--end", "1"], ["--endpoint", "nope"]],
)
def test_bad_arguments_exit_2(sample_sbr: Path, tmp_path: Path, extra: list[str]) -> None:
    assert main([str(sample_sbr), "-o", str(tmp_path / "x.png"), *extra]) == 2
    assert not (tmp_path / "x.png").exists()


def test_not_a_recording_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sbr"
    bad.write_text("hello")
    assert main([str(bad), "-o", str(tmp_path / "x.png")]) == 2
