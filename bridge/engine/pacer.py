"""Deadline arithmetic for stepped mode: pure, no clock read, no sleeping.

Deadline k is ``start + k * dt`` exactly (absolute schedule, so time never drifts). The loop
asks how long it may block, then which step is due and how late it is. A late step follows the
policy: ``catch-up`` runs every missed step, as fast as possible; ``skip`` runs only the
newest due step and counts the rest as skipped.
"""

from __future__ import annotations

from typing import NamedTuple

POLICIES = ("catch-up", "skip")


class Due(NamedTuple):
    """A step that is due now: its index, its deadline and how late it is (ns)."""

    step: int
    deadline_ns: int
    lateness_ns: int
    skipped: int


class Pacer:
    """Absolute-deadline schedule of ``dt_ns`` steps with a late-step ``policy``."""

    __slots__ = ("dt_ns", "index", "max_catchup", "policy", "spin_ns", "start_ns")

    def __init__(
        self, dt_ns: int, *, policy: str = "catch-up", spin_ns: int = 0, max_catchup: int = 1000
    ) -> None:
        if dt_ns <= 0:
            raise ValueError(f"dt must be > 0 ns, got {dt_ns}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if not 0 <= spin_ns < dt_ns:
            raise ValueError(f"spin must be in [0, dt), got {spin_ns} ns for dt {dt_ns} ns")
        if max_catchup < 1:
            raise ValueError("max_catchup must be >= 1")
        self.dt_ns = dt_ns
        self.policy = policy
        self.spin_ns = spin_ns
        self.max_catchup = max_catchup
        self.start_ns = 0
        self.index = 1  # the index of the next step to run

    def start(self, now_ns: int) -> None:
        """Anchor the schedule: step 1 is due at ``now_ns + dt``."""
        self.start_ns = now_ns
        self.index = 1

    @property
    def deadline_ns(self) -> int:
        """The deadline of the next step."""
        return self.start_ns + self.index * self.dt_ns

    def sleep_ns(self, now_ns: int) -> int:
        """How long the loop may block before it must spin for the next deadline (>= 0)."""
        return max(0, self.deadline_ns - self.spin_ns - now_ns)

    def due(self, now_ns: int) -> Due | None:
        """The step due at ``now_ns``, advancing the schedule; None when none is due yet."""
        deadline = self.deadline_ns
        if now_ns < deadline:
            return None
        behind = (now_ns - deadline) // self.dt_ns  # further deadlines already passed
        skipped = 0
        if behind and (self.policy == "skip" or behind >= self.max_catchup):
            skipped = behind
            self.index += behind
            deadline = self.deadline_ns
        step = Due(self.index, deadline, now_ns - deadline, skipped)
        self.index += 1
        return step

    def elapsed_steps(self) -> int:
        """Steps whose deadlines the schedule has passed (run or skipped)."""
        return self.index - 1

    def realtime_factor(self, now_ns: int) -> float:
        """Simulated time over wall time since start (1.0 = keeping up exactly)."""
        wall = now_ns - self.start_ns
        return (self.elapsed_steps() * self.dt_ns) / wall if wall > 0 else 0.0
