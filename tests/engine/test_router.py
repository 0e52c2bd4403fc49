"""Routing arithmetic: spans, pass-through decisions, shifting and slicing ids."""

from __future__ import annotations

import numpy as np

from bridge.engine.router import DECODE, NONE, PASS, Span, merged_size, relay_route, shift, take


def test_relay_route() -> None:
    assert relay_route(Span(0, 10), Span(0, 10), True) == PASS
    assert relay_route(Span(0, 10), Span(0, 10), False) == DECODE
    assert relay_route(Span(0, 10), Span(5, 15), True) == DECODE
    assert relay_route(Span(0, 10), Span(10, 20), True) == NONE


def test_merged_size_and_shift_take() -> None:
    assert merged_size([Span(0, 10), Span(10, 30)]) == 30
    ids = np.array([0, 5, 9], dtype=np.uint32)
    merged = shift(ids, 10)
    assert merged.dtype == np.uint32 and merged.tolist() == [10, 15, 19]
    assert take(merged, Span(12, 20), False).tolist() == [3, 7]
    assert take(merged, Span(0, 30), True) is merged
