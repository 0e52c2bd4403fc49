"""Event sources for the eDVS emulator: synthetic patterns and recorded event files.

A pattern hands out the next ``n`` events as (x, y, p) arrays; the emulator decides when
(its rate). Never reads a clock and never touches a device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

Events = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]
PATTERNS = ("bar", "random", "blink")


class Pattern:
    """A source of (x, y, polarity) events on a width x height sensor."""

    def __init__(self, width: int = 128, height: int = 128,
                 rng: np.random.Generator | None = None) -> None:
        self.width, self.height = width, height
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def events(self, n: int) -> Events:
        """The next ``n`` events."""
        raise NotImplementedError


class RandomPattern(Pattern):
    """Uniformly random pixels and polarities (sensor noise, worst case for a decoder)."""

    def events(self, n: int) -> Events:
        """``n`` independent random events."""
        rng = self.rng
        return (rng.integers(0, self.width, n), rng.integers(0, self.height, n),
                rng.integers(0, 2, n))


class BarPattern(Pattern):
    """A vertical bar sweeping left to right: ON events at its leading edge, OFF trailing."""

    def __init__(self, width: int = 128, height: int = 128,
                 rng: np.random.Generator | None = None, per_column: int = 256) -> None:
        super().__init__(width, height, rng)
        self.per_column = per_column  # events before the bar moves one column
        self._count = 0

    def events(self, n: int) -> Events:
        """The next ``n`` events of the sweep."""
        k = self._count + np.arange(n, dtype=np.int64)
        self._count += n
        column = (k // self.per_column) % self.width
        p = k % 2
        x = np.where(p == 1, column, (column - 2) % self.width)
        y = self.rng.integers(0, self.height, n)
        return x, y, p


class BlinkPattern(Pattern):
    """A fixed set of pixels firing ON in turn: predictable ids for end-to-end checks."""

    def __init__(self, width: int = 128, height: int = 128,
                 rng: np.random.Generator | None = None,
                 pixels: list[tuple[int, int]] | None = None) -> None:
        super().__init__(width, height, rng)
        pts = pixels or [(i * 8 % width, i * 8 // width) for i in range(16)]
        self.xs = np.array([p[0] for p in pts], dtype=np.int64)
        self.ys = np.array([p[1] for p in pts], dtype=np.int64)
        self._count = 0

    def events(self, n: int) -> Events:
        """The next ``n`` events, cycling through the pixels."""
        k = (self._count + np.arange(n, dtype=np.int64)) % len(self.xs)
        self._count += n
        return self.xs[k], self.ys[k], np.ones(n, dtype=np.int64)


class RecordingPattern(Pattern):
    """Events from a file, in order, looping: CSV (x,y,p[,t]) or .npy/.npz columns x, y, p."""

    def __init__(self, path: str | Path, width: int = 128, height: int = 128) -> None:
        super().__init__(width, height)
        self.x, self.y, self.p = load_events(path)
        if not len(self.x):
            raise ValueError(f"{path}: no events")
        self._pos = 0

    def events(self, n: int) -> Events:
        """The next ``n`` recorded events (wrapping at the end)."""
        k = (self._pos + np.arange(n, dtype=np.int64)) % len(self.x)
        self._pos = (self._pos + n) % len(self.x)
        return self.x[k], self.y[k], self.p[k]


def load_events(path: str | Path) -> Events:
    """Read x, y, p columns from CSV (header optional) or NumPy (.npy structured, .npz)."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            cols = [np.asarray(z[k], dtype=np.int64) for k in ("x", "y", "p")]
    elif path.suffix == ".npy":
        arr = np.load(path)
        cols = [np.asarray(arr[k], dtype=np.int64) for k in ("x", "y", "p")]
    else:
        with path.open() as fh:
            first = fh.readline()
        skip = 0 if first[:1].isdigit() else 1
        data = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.int64, ndmin=2)
        cols = [data[:, 0], data[:, 1], data[:, 2]]
    x, y, p = cols
    if (x.min(initial=0) < 0 or y.min(initial=0) < 0 or x.max(initial=0) > 127
            or y.max(initial=0) > 127 or not np.isin(p, (0, 1)).all()):
        raise ValueError(f"{path}: x and y must be 0..127 and p 0 or 1")
    return x, y, p


def make_pattern(spec: str, width: int = 128, height: int = 128,
                 rng: np.random.Generator | None = None) -> Pattern:
    """``bar``, ``random``, ``blink`` or ``file:PATH``; ValueError otherwise."""
    if spec.startswith("file:"):
        return RecordingPattern(spec[5:], width, height)
    classes: dict[str, type[Pattern]] = {
        "bar": BarPattern, "random": RandomPattern, "blink": BlinkPattern,
    }
    cls = classes.get(spec)
    if cls is None:
        raise ValueError(f"unknown pattern {spec!r}: use {', '.join(PATTERNS)} or file:PATH")
    return cls(width, height, rng)
