"""The error types, and the fixed set of drop reasons that label counted drops.

A peer's fault is a DecodeError (count it, drop the input, go on). Our own misuse of an API
is a ValueError or TypeError. Configuration and endpoint problems are reported to the user.
"""

from __future__ import annotations

# Drop reasons are metric label values: a small, fixed set. Index order is stable because the
# hot path counts drops in a list indexed by these positions.
DROP_REASONS: tuple[str, ...] = (
    "truncated",        # datagram or frame shorter than its header or declared length
    "oversized",        # longer than the format allows
    "bad_magic",        # not this format at all
    "bad_version",      # a version this build does not speak
    "malformed",        # structurally wrong (bad field values, bad encoding)
    "id_out_of_range",  # a neuron id outside the input's population
    "bad_auth",         # auth tag missing, wrong, or not expected
    "bad_crc",          # serial frame checksum mismatch
    "bad_cobs",         # serial frame stuffing broken
    "not_allowed",      # sender address outside the input's allow-list
    "unknown_source",   # source node not the one the input expects
    "duplicate",        # a sequence number already accepted
    "replay",           # a sequence number older than the replay window
    "stale",            # older than the input's max_age
    "queue_full",       # a bounded queue overflowed; the oldest entry was dropped
    "send_failed",      # the kernel refused the datagram (buffer full, peer gone)
    "rcvbuf_overflow",  # the kernel dropped datagrams before we could read them
    "unrouted",         # accepted by an input, but no id of it falls in any output's slice
    "peer_unreachable", # the peer refused the datagram (ICMP port unreachable: nobody listens)
    "not_running",      # the peer's simulation is not running (before START, after STOP)
)
REASON_INDEX: dict[str, int] = {name: i for i, name in enumerate(DROP_REASONS)}


class DecodeError(Exception):
    """Bytes from a peer that do not form a valid frame; ``reason`` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASON_INDEX:
            raise ValueError(f"unknown drop reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(Exception):
    """A bad configuration key, CLI argument or URL; the message names the key and the value."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class EndpointError(Exception):
    """An endpoint that cannot be opened or has failed (port in use, device missing)."""
