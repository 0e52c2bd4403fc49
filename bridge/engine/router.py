"""Routing arithmetic: input offsets into the merged population, output slices out of it.

Pure: no I/O, no clock. The loop asks it once at start-up which input reaches which output
and how, then applies the precomputed plan per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.frame import IdArray

NONE = 0      # the input's neurons never reach this output
PASS = 1      # same neurons, same wire format: forward the datagram re-headed
DECODE = 2    # decode ids, shift and slice, encode again


@dataclass(frozen=True)
class Span:
    """A half-open neuron range [lo, hi) of a population."""

    lo: int
    hi: int

    def overlaps(self, other: Span) -> bool:
        """True when the two ranges share a neuron."""
        return self.lo < other.hi and other.lo < self.hi


def merged_size(spans: list[Span]) -> int:
    """Size of the merged input population: the end of the highest input range."""
    return max((s.hi for s in spans), default=0)


def relay_route(inp: Span, out: Span, same_wire: bool) -> int:
    """How a relay (identity processor) carries input span ``inp`` to output span ``out``."""
    if not inp.overlaps(out):
        return NONE
    if inp == out and same_wire:
        return PASS
    return DECODE


def uncovered(span: Span, covers: list[Span]) -> list[Span]:
    """The parts of ``span`` that no range in ``covers`` overlaps, in order."""
    gaps: list[Span] = []
    lo = span.lo
    for c in sorted(covers, key=lambda c: c.lo):
        if c.hi <= lo or not c.overlaps(span):
            continue
        if c.lo > lo:
            gaps.append(Span(lo, min(c.lo, span.hi)))
        lo = max(lo, c.hi)
        if lo >= span.hi:
            break
    if lo < span.hi:
        gaps.append(Span(lo, span.hi))
    return gaps


def routed_mask(span: Span, gaps: list[Span]) -> np.ndarray:
    """A bool per local id of ``span``: True where the id is outside every gap (it is routed)."""
    mask = np.ones(span.hi - span.lo, dtype=bool)
    for g in gaps:
        mask[g.lo - span.lo:g.hi - span.lo] = False
    return mask


def count_unrouted(ids: IdArray, mask: np.ndarray) -> int:
    """How many of ``ids`` (local ids, possibly out of the mask's range) are not routed."""
    if not ids.size:
        return 0
    if int(ids.max()) >= mask.size:
        inside = ids[ids < mask.size]
        return int(ids.size - np.count_nonzero(mask[inside]))
    return int(ids.size - np.count_nonzero(mask[ids]))


def shift(ids: IdArray, offset: int) -> IdArray:
    """Ids moved up by ``offset`` (into the merged population)."""
    return ids + np.uint32(offset) if offset else ids


def take(ids: IdArray, span: Span, whole: bool) -> IdArray:
    """The ids inside ``span``, renumbered from 0; ``whole`` skips the filter (span is all)."""
    if whole:
        return ids
    if not ids.size:
        return ids
    sel = ids[(ids >= span.lo) & (ids < span.hi)]
    return sel - np.uint32(span.lo) if span.lo else sel
