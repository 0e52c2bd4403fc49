"""Per-source sequence tracking: loss, reordering, duplicates, wrap-around, restarts, replays."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.engine.sequence import ACCEPT, DUPLICATE, REPLAY, WINDOW, SeqTracker


def test_in_order_stream_has_no_loss() -> None:
    t = SeqTracker()
    assert all(t.check(s, 100 + s) == ACCEPT for s in range(1000))
    assert (t.lost, t.reordered) == (0, 0)


def test_gap_then_late_arrival() -> None:
    t = SeqTracker()
    for s in (0, 1, 4):
        assert t.check(s, 1) == ACCEPT
    assert t.lost == 2
    assert t.check(2, 1) == ACCEPT
    assert (t.lost, t.reordered) == (1, 1)
    assert t.check(2, 1) == DUPLICATE
    assert t.check(4, 1) == DUPLICATE


def test_wraps_at_the_field_width() -> None:
    t = SeqTracker(bits=16)
    assert t.check(65534, 1) == ACCEPT
    assert t.check(65535, 2) == ACCEPT
    assert t.check(0, 3) == ACCEPT
    assert t.check(2, 4) == ACCEPT
    assert t.lost == 1


def test_far_jump_back_is_a_restart_only_with_a_newer_send_time() -> None:
    t = SeqTracker()
    for s in range(500):
        t.check(s, 1_000 + s)
    assert t.check(3, 900, strict=True) == REPLAY  # an old frame played back
    assert t.check(0, 5_000, strict=True) == ACCEPT  # the peer restarted
    assert t.restarts == 1


def test_untimed_far_jump_back_restarts_unless_strict() -> None:
    t = SeqTracker()
    for s in range(500):
        t.check(s, 0)
    assert t.check(0, 0, strict=True) == REPLAY
    assert t.check(0, 0) == ACCEPT


@given(st.permutations(list(range(WINDOW))))
def test_any_reordering_within_the_window_loses_nothing(order: list[int]) -> None:
    t = SeqTracker()
    assert t.check(0, 1) == ACCEPT
    for s in order:
        verdict = t.check(s + 1, 1)
        assert verdict == ACCEPT
    assert t.lost == 0
