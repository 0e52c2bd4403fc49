"""Sensor geometry: how an event's pixel (x, y, polarity) becomes a neuron id, and back.

One option table (``GEOMETRY_OPTIONS``: ``width``, ``height``, ``layout``, ``polarity``) shared
by every format that carries camera events (spif, Faery's UDP layouts, recordings), so that the
same URL keys mean the same mapping everywhere. Pure arithmetic: it must never import I/O or
read a clock, and it must never silently wrap an out-of-range event into another pixel.
The formulas are in docs/wire-formats.md (section "spif", "Neuron ids").
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.codecs.base import Option
from bridge.errors import DecodeError

LAYOUTS: tuple[str, ...] = tuple(
    ["".join(p) for p in permutations("xyp")] + ["".join(p) for p in permutations("xy")]
)
"""Id layouts: the axes of a mixed-radix number, most significant first (x: width, y: height,
p: 2). ``pyx`` is id = (p*height + y)*width + x; a layout without ``p`` ignores polarity."""

MAX_SIDE = 1 << 16
"""The widest side any format here can address (u16 coordinates); formats narrow it."""


def parse_side(text: str) -> int:
    """Parse a sensor side (``width=``/``height=``): 1..65536; a format may narrow it further."""
    value = int(text, 0)
    if not 1 <= value <= MAX_SIDE:
        raise ValueError(f"must be 1..{MAX_SIDE}")
    return value


def parse_layout(text: str) -> str:
    """Parse ``layout=``: one of LAYOUTS."""
    if text not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    return text


def parse_polarity(text: str) -> int:
    """Parse ``polarity=``: 0 or 1."""
    value = int(text)
    if value not in (0, 1):
        raise ValueError("polarity must be 0 or 1")
    return value


GEOMETRY_OPTIONS: dict[str, Option] = {
    "width": Option(parse_side, None, "sensor width: x runs 0..width-1 (required)"),
    "height": Option(parse_side, None, "sensor height: y runs 0..height-1 (required)"),
    "layout": Option(parse_layout, "pyx", "id layout, most significant axis first"),
    "polarity": Option(parse_polarity, 1, "polarity sent by layouts without p"),
}
"""The geometry keys, shared (not copied) by every event format's OPTIONS."""


class Geometry:
    """A sensor of ``width`` x ``height`` pixels and an id layout; ids below ``limit``."""

    __slots__ = ("height", "layout", "limit", "mp", "mx", "my", "polarity", "size", "width")

    def __init__(self, fmt: str, neurons: int, width: int | None, height: int | None,
                 layout: str = "pyx", polarity: int = 1, *, max_width: int = MAX_SIDE,
                 max_height: int = MAX_SIDE) -> None:
        if width is None or height is None:
            raise ValueError(f"the {fmt} format needs width= and height= (the sensor size)")
        if not (1 <= width <= max_width and 1 <= height <= max_height):
            raise ValueError(f"the {fmt} format takes width 1..{max_width} and height "
                             f"1..{max_height}, got {width}x{height}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if polarity not in (0, 1):
            raise ValueError(f"polarity must be 0 or 1, got {polarity}")
        self.width, self.height, self.layout, self.polarity = width, height, layout, polarity
        radix = {"x": width, "y": height, "p": 2}
        stride = {"x": 0, "y": 0, "p": 0}
        step = 1
        for axis in reversed(layout):
            stride[axis] = step
            step *= radix[axis]
        self.size = step  # ids the sensor can produce
        self.mx, self.my, self.mp = stride["x"], stride["y"], stride["p"]
        self.limit = min(neurons, step) if neurons else step

    def key(self) -> tuple[object, ...]:
        """What two geometries must share for their ids to mean the same pixels."""
        return (self.width, self.height, self.layout, self.polarity, self.limit)

    def ids(self, x: npt.NDArray[Any], y: npt.NDArray[Any],
            p: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Ids (uint32, int64 past 2**32) of events; DecodeError if one is outside."""
        if x.size == 0:
            return np.empty(0, dtype=np.uint32)
        xm, ym = int(x.max()), int(y.max())
        if xm >= self.width or ym >= self.height:
            raise DecodeError("id_out_of_range", f"event at x={xm} or y={ym} outside "
                              f"{self.width}x{self.height}")
        wide: Any = np.int64 if self.size > 1 << 32 else np.uint32
        ids: npt.NDArray[Any] = x.astype(wide) * self.mx
        ids += y.astype(wide) * self.my
        if self.mp:
            ids += p.astype(wide) * self.mp
        # x and y inside already put every id below size; only a smaller population can fail.
        if self.limit < self.size and int(ids.max()) >= self.limit:
            raise DecodeError("id_out_of_range", f"id {int(ids.max())} not below {self.limit}")
        return ids

    def pixels(self, ids: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                                     npt.NDArray[np.int64]]:
        """(x, y, p) of ids below ``limit`` (ValueError otherwise: the caller's misuse)."""
        if ids.size and int(ids.max()) >= self.limit:
            raise ValueError(f"id {int(ids.max())} out of range for {self.limit} neurons")
        i64 = ids.astype(np.int64)
        x = i64 // self.mx % self.width
        y = i64 // self.my % self.height
        p = (i64 // self.mp & 1) if self.mp else np.full(i64.shape, self.polarity, np.int64)
        return x, y, p
