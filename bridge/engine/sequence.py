"""Per-source sequence tracking: loss, reordering, duplicates and replays, counted.

Pure arithmetic over serial numbers (RFC 1982 style, any width); no clock is read: the
frame's own send time decides whether a far jump back is a restarted peer or a replay.
"""

from __future__ import annotations

WINDOW = 64  # how far back a late (reordered) frame is still accepted

ACCEPT = 0
DUPLICATE = 1
REPLAY = 2


class SeqTracker:
    """Tracks one source's sequence numbers modulo ``2**bits``."""

    __slots__ = ("bits", "half", "highest", "last_t_ns", "lost", "mask", "reordered", "restarts",
                 "seen")

    def __init__(self, bits: int = 32) -> None:
        if not 8 <= bits <= 64:
            raise ValueError(f"sequence width must be 8..64 bits, got {bits}")
        self.bits = bits
        self.mask = (1 << bits) - 1
        self.half = 1 << (bits - 1)
        self.highest = -1   # none seen yet
        self.seen = 0       # bit i set: highest - i was accepted
        self.last_t_ns = 0
        self.lost = 0       # gaps not (yet) filled by late frames
        self.reordered = 0
        self.restarts = 0

    def check(self, seq: int, t_sent_ns: int, strict: bool = False) -> int:
        """ACCEPT (and record), or DUPLICATE / REPLAY for a frame to drop.

        ``strict`` (authenticated inputs) refuses a far jump back unless the send time is
        newer than any seen; otherwise such a jump is taken as the peer having restarted.
        """
        if self.highest < 0:
            self._reset(seq, t_sent_ns)
            return ACCEPT
        ahead = (seq - self.highest) & self.mask
        if ahead == 0:
            return DUPLICATE
        if ahead < self.half:
            self.lost += ahead - 1
            self.seen = ((self.seen << ahead) | 1) & ((1 << WINDOW) - 1) if ahead < WINDOW else 1
            self.highest = seq
            if t_sent_ns > self.last_t_ns:
                self.last_t_ns = t_sent_ns
            return ACCEPT
        back = (self.highest - seq) & self.mask
        if back < WINDOW:
            bit = 1 << back
            if self.seen & bit:
                return DUPLICATE
            self.seen |= bit
            self.lost -= 1
            self.reordered += 1
            return ACCEPT
        if t_sent_ns > self.last_t_ns or (not strict and t_sent_ns == 0):
            self.restarts += 1
            self._reset(seq, t_sent_ns)
            return ACCEPT
        return REPLAY

    def _reset(self, seq: int, t_sent_ns: int) -> None:
        self.highest = seq & self.mask
        self.seen = 1
        self.last_t_ns = t_sent_ns
