"""Fault injection for the device emulators: line-rate pacing and line noise, counted.

Pure logic: the token bucket takes ``now`` from its caller, and the noise draws from a seeded
generator, so tests replay a fault pattern exactly. Never touches a file descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faults:
    """What an emulator does wrong, on purpose. Probabilities are per byte sent."""

    baud: int = 0              # pace output at baud/10 bytes/s (8N1); 0 = as fast as the pty takes
    flip: float = 0.0          # flip one random bit of a byte
    insert: float = 0.0        # insert a random byte before a byte
    delete: float = 0.0        # drop a byte
    split: int = 0             # write at most this many bytes per write() (1 = byte by byte)
    garbage: int = 0           # random bytes sent when the host first talks after a plug-in
    unplug_every_s: float = 0.0  # unplug periodically (0 = only when asked)
    down_ms: float = 200.0     # how long an unplug lasts
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("flip", "insert", "delete"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} probability must be in [0, 1), got {p}")
        if min(self.baud, self.split, self.garbage) < 0:
            raise ValueError("baud, split and garbage must be >= 0")
        if self.unplug_every_s < 0 or self.down_ms < 0:
            raise ValueError("unplug_every_s and down_ms must be >= 0")

    @property
    def noisy(self) -> bool:
        """True when any byte may be changed."""
        return bool(self.flip or self.insert or self.delete)


class TokenBucket:
    """Bytes allowed on a line of ``rate`` bytes/s, with a burst of ``burst`` bytes."""

    __slots__ = ("burst", "last_ns", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now_ns: int = 0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last_ns = now_ns

    @classmethod
    def for_baud(cls, baud: int, now_ns: int = 0) -> TokenBucket:
        """8N1 framing: 10 bits per byte; a 10 ms burst (at least 64 bytes).

        The burst only absorbs the emulator's own wake-up jitter: a smaller one would waste
        line capacity whenever its thread wakes late, which a real UART does not.
        """
        rate = baud / 10
        return cls(rate, max(64, int(rate * 0.01)), now_ns)

    def _refill(self, now_ns: int) -> None:
        if now_ns > self.last_ns:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) * self.rate / 1e9)
            self.last_ns = now_ns

    def take(self, want: int, now_ns: int) -> int:
        """Grant up to ``want`` bytes now (whole bytes only)."""
        self._refill(now_ns)
        got = min(want, int(self.tokens))
        self.tokens -= got
        return got

    def give_back(self, n: int) -> None:
        """Return tokens taken for bytes the line did not accept after all."""
        self.tokens = min(self.burst, self.tokens + n)

    def wait_ns(self, want: int, now_ns: int) -> int:
        """Time until ``min(want, burst)`` bytes are allowed (0 when they are now)."""
        self._refill(now_ns)
        need = min(want, self.burst) - self.tokens
        return 0 if need <= 0 else int(need * 1e9 / self.rate) + 1


class LineNoise:
    """Bit flips, inserted and deleted bytes, at per-byte probabilities, counted."""

    __slots__ = ("deleted", "faults", "flipped", "inserted", "rng")

    def __init__(self, faults: Faults, rng: np.random.Generator | None = None) -> None:
        self.faults = faults
        self.rng = rng if rng is not None else np.random.default_rng(faults.seed)
        self.flipped = 0
        self.inserted = 0
        self.deleted = 0

    def apply(self, data: bytes) -> bytes:
        """``data`` as the far end receives it."""
        f = self.faults
        if not f.noisy or not data:
            return data
        rng = self.rng
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        n = len(arr)
        if f.flip:
            where = np.flatnonzero(rng.random(n) < f.flip)
            if where.size:
                arr[where] ^= (1 << rng.integers(0, 8, where.size)).astype(np.uint8)
                self.flipped += int(where.size)
        keep = np.ones(n, dtype=bool)
        if f.delete:
            gone = rng.random(n) < f.delete
            keep &= ~gone
            self.deleted += int(gone.sum())
        if f.insert:
            before = np.flatnonzero(rng.random(n) < f.insert)
            if before.size:
                self.inserted += int(before.size)
                extra = rng.integers(0, 256, before.size).astype(np.uint8)
                arr = np.insert(arr, before, extra)
                keep = np.insert(keep, before, True)
        return arr[keep].tobytes()
