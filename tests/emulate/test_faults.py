"""Fault injection logic: the token bucket (injected time) and seeded line noise."""

from __future__ import annotations

import pytest

from bridge.emulate.faults import Faults, LineNoise, TokenBucket

MS = 1_000_000


def test_token_bucket_paces_at_baud_over_ten() -> None:
    bucket = TokenBucket.for_baud(12_000_000, now_ns=0)  # 1.2 MB/s, 12000-byte burst
    assert bucket.burst == 12_000
    assert bucket.take(100_000, 0) == 12_000  # the burst, then nothing
    assert bucket.take(100_000, 0) == 0
    assert bucket.take(100_000, 1 * MS) == 1200  # 1 ms at 1.2 MB/s
    sent = sum(bucket.take(10_000, t * MS) for t in range(2, 1002))
    assert sent == pytest.approx(1_200_000, abs=2)


def test_token_bucket_wait_and_give_back() -> None:
    bucket = TokenBucket(1000.0, 100, now_ns=0)  # 1000 bytes/s
    bucket.take(100, 0)
    assert bucket.wait_ns(10, 0) == pytest.approx(10 * MS, abs=1)
    assert bucket.wait_ns(10, 10 * MS) == 0
    bucket.give_back(1000)
    assert bucket.tokens == 100  # never beyond the burst


def test_noise_is_counted_and_seeded() -> None:
    faults = Faults(flip=0.01, insert=0.01, delete=0.01, seed=7)
    data = bytes(range(256)) * 400
    a, b = LineNoise(faults), LineNoise(faults)
    out = a.apply(data)
    assert out == b.apply(data)  # same seed, same damage
    assert a.flipped > 0 and a.inserted > 0 and a.deleted > 0
    assert len(out) == len(data) + a.inserted - a.deleted
    assert 0.5 * 1024 < a.flipped < 1.5 * 1024  # about 1% of 102400 bytes


def test_no_noise_is_identity() -> None:
    noise = LineNoise(Faults())
    assert noise.apply(b"abc") == b"abc" and noise.flipped == 0


@pytest.mark.parametrize("kwargs", [{"flip": 1.0}, {"delete": -0.1}, {"split": -1},
                                    {"down_ms": -1}])
def test_bad_faults(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Faults(**kwargs)  # type: ignore[arg-type]
