"""SpikeFrame: the one in-memory unit that every codec produces and consumes.

It holds no I/O and reads no clock; it must stay a plain, cheap value on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

NO_SEQ = -1
"""Sequence number of a frame whose wire format carries none (legacy, spif)."""

IdArray = npt.NDArray[np.uint32]


def as_ids(ids: Iterable[int] | npt.NDArray[Any]) -> IdArray:
    """Return ``ids`` as a 1-D uint32 array, raising ValueError on negative or >32-bit ids."""
    if isinstance(ids, np.ndarray):
        if ids.dtype == np.uint32 and ids.ndim == 1:
            return ids
        arr = ids
    else:
        arr = np.asarray(list(ids))
    if arr.size == 0:
        return np.empty(0, dtype=np.uint32)
    if arr.ndim != 1:
        raise ValueError(f"neuron ids must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"neuron ids must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 0xFFFFFFFF:
        raise ValueError("neuron ids must lie in 0..2**32-1")
    return arr.astype(np.uint32, copy=False)


class SpikeFrame:
    """One batch of spikes from ``source``: ids are neuron indices local to the sender."""

    __slots__ = ("ids", "seq", "source", "t_sent_ns")

    def __init__(self, source: int, seq: int, t_sent_ns: int, ids: IdArray) -> None:
        self.source = source
        self.seq = seq
        self.t_sent_ns = t_sent_ns
        self.ids = ids

    @classmethod
    def of(
        cls, ids: Iterable[int] | npt.NDArray[Any], *, source: int = 0, seq: int = NO_SEQ,
        t_sent_ns: int = 0,
    ) -> SpikeFrame:
        """Build a frame from any integer sequence (validated; not for the hot path)."""
        return cls(source, seq, t_sent_ns, as_ids(ids))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpikeFrame):
            return NotImplemented
        return (
            self.source == other.source
            and self.seq == other.seq
            and self.t_sent_ns == other.t_sent_ns
            and np.array_equal(self.ids, other.ids)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        ids = self.ids.tolist()
        shown = ids if len(ids) <= 8 else [*ids[:8], "..."]
        return (
            f"SpikeFrame(source={self.source}, seq={self.seq}, t_sent_ns={self.t_sent_ns}, "
            f"n={len(ids)}, ids={shown})"
        )
