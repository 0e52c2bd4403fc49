"""The stepped benchmark's arithmetic: percentiles, raw lateness samples, cyclictest output,
and the capacity search. The timed parts themselves are benchmarks, not tests."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.bench.stepped import (
    Quantiles,
    RecordingHistogram,
    input_pattern,
    largest_holding,
    parse_cyclictest,
)
from bridge.engine.stats import BUCKET_EDGES_NS


def test_quantiles_in_microseconds() -> None:
    q = Quantiles.of_ns(np.arange(1, 1001, dtype=np.int64) * 1000)
    assert q.n == 1000
    assert q.p50 == pytest.approx(500.5)
    assert q.p99 == pytest.approx(990.01)
    assert q.max == 1000.0
    assert Quantiles.of_ns(np.empty(0, dtype=np.int64)).n == 0


def test_recording_histogram_counts_and_keeps_samples() -> None:
    hist = RecordingHistogram(BUCKET_EDGES_NS, capacity=3)
    for ns in (5_000, 15_000, 2_000_000, 7):
        hist.observe(ns)
    assert hist.count == 4 and hist.counts[0] == 2  # counted like the engine's histogram
    assert hist.values().tolist() == [5_000, 15_000, 2_000_000]  # kept while there is room


def test_parse_cyclictest_verbose_lines() -> None:
    text = ("# /dev/cpu_dma_latency set to 0us\nThread 0 using cpu 1.\n"
            "       0:       0:   13343\n       0:       1:   12668\n"
            "T: 0 ( 1698) P:80 I:1000 C:   2000 Min:  11733 Act:   12668\n")
    assert parse_cyclictest(text).tolist() == [13343, 12668]


@pytest.mark.parametrize("capacity", [1, 7_000, 25_000, 50_000, 300_000])
def test_largest_holding_finds_the_edge(capacity: int) -> None:
    probes: list[int] = []

    def holds(n: int) -> bool:
        probes.append(n)
        return n <= capacity

    found = largest_holding(holds, 8_000)
    if capacity < 8_000:
        assert found == 0
    else:
        assert found <= capacity < found * 1.05
    assert len(probes) < 20


def test_largest_holding_in_a_bracket_checks_its_floor() -> None:
    found = largest_holding(lambda n: n <= 9_000, 0, lo=20_000, hi=40_000)
    assert found <= 9_000 < found * 1.05


def test_input_pattern_rate() -> None:
    pattern = input_pattern(20_000, 100, 20.0, 1e-4)
    assert len(pattern) == 20_000
    total = sum(p.size for p in pattern)
    assert total == pytest.approx(20_000 * 100 * 20.0 * 1e-4, rel=0.1)
    assert all(p.dtype == np.uint32 and (np.diff(p.astype(int)) > 0).all() for p in pattern)
