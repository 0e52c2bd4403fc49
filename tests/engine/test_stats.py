"""In-place statistics: histogram buckets and quantiles, drop accounting."""

from __future__ import annotations

import pytest

from bridge.engine.stats import BUCKET_EDGES_NS, BridgeStats, EndpointStats, Histogram, bucket_edges


def test_histogram_counts_and_cumulative() -> None:
    h = Histogram()
    for ns in (5_000, 10_000, 10_001, 150_000, 10**9):
        h.observe(ns)
    cum = h.cumulative()
    assert cum[0] == 2  # <= 10 us, edge inclusive
    assert cum[1] == 3
    assert cum[-1] == h.count == 5
    assert h.quantile(0.5) == 20_000
    assert h.quantile(1.0) == float("inf")


def test_miss_threshold_is_a_bucket_edge() -> None:
    assert 750_000 in bucket_edges(750_000)
    assert bucket_edges(1_000_000) == BUCKET_EDGES_NS
    assert BridgeStats(miss_ns=750_000).step_lateness.edges_ns == bucket_edges(750_000)
    with pytest.raises(ValueError):
        bucket_edges(0)


def test_endpoint_books() -> None:
    st = EndpointStats("in0", "in")
    st.frames, st.accepted = 5, 3
    st.drop("bad_auth")
    assert not st.balanced()
    st.drop("truncated")
    assert st.balanced()
    assert st.drops_by_reason() == {"bad_auth": 1, "truncated": 1}
