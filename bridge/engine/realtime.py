"""Real-time settings for the loop thread: SCHED_FIFO, CPU affinity, mlockall, GC, switch interval.

The loop thread calls ``Realtime.apply()`` on itself once start-up is over (every other thread
already started). Priority and affinity change the calling thread only; mlockall, the GC and
the switch interval are process-wide by nature. A refused setting logs a warning that names the
fix and is listed in the report (for the metrics), unless the config marks it required: then
``RealtimeRefused`` is raised. This module never starts a thread and never touches another
thread's scheduling; the system calls are injected so that tests need no privileges.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.errors import ConfigError

log = logging.getLogger("spikebridge.realtime")

SETTINGS = ("priority", "cpus", "mlock", "gc_freeze", "switch_interval")
KEYS = ("priority", "cpus", "mlock", "gc_freeze", "switch_interval_us", "required")
MAX_PRIORITY = 99
MCL_CURRENT, MCL_FUTURE = 1, 2
CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23


class RealtimeRefused(Exception):
    """A real-time setting that the config marks required was refused by the system."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class RealtimeSettings:
    """The ``[realtime]`` section. Zero/empty/False/None leave a setting alone."""

    priority: int = 0                     # SCHED_FIFO priority 1..99 for the loop thread
    cpus: tuple[int, ...] = ()            # CPUs the loop thread may run on
    mlock: bool = False                   # mlockall(MCL_CURRENT | MCL_FUTURE)
    gc_freeze: bool = False               # gc.freeze() then gc.disable() after start-up
    switch_interval_us: float | None = None  # sys.setswitchinterval, in µs
    required: frozenset[str] = field(default_factory=frozenset)

    def enabled(self) -> tuple[str, ...]:
        """The settings this config asks for, in the order they are applied."""
        on = {
            "priority": self.priority > 0, "cpus": bool(self.cpus), "mlock": self.mlock,
            "gc_freeze": self.gc_freeze, "switch_interval": self.switch_interval_us is not None,
        }
        return tuple(name for name in SETTINGS if on[name])


def parse_cpus(value: Any, key: str) -> tuple[int, ...]:
    """A list of CPU numbers, or a string like ``"2,3"`` or ``"2-3"`` (as taskset takes)."""
    cpus: set[int] = set()
    if isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(","))):
            lo, sep, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise ConfigError(f"expected CPU numbers like \"2,3\" or \"2-3\", got {value!r}",
                                  key=key) from None
            if first < 0 or last < first:
                raise ConfigError(f"bad CPU range {part!r}", key=key)
            cpus.update(range(first, last + 1))
    elif isinstance(value, list):
        for cpu in value:
            if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
                raise ConfigError(f"expected CPU numbers >= 0, got {cpu!r}", key=key)
            cpus.add(cpu)
    else:
        raise ConfigError(f"expected a list of CPU numbers or a string, got {value!r}", key=key)
    return tuple(sorted(cpus))


def parse_config(table: Mapping[str, Any], path: str = "realtime") -> RealtimeSettings:
    """Validate a ``[realtime]`` table; ConfigError naming the key on anything wrong."""
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"unknown key; [{path}] takes {', '.join(KEYS)}",
                              key=f"{path}.{key}")
    priority = table.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
        0 <= priority <= MAX_PRIORITY
    ):
        raise ConfigError(f"expected 0 (off) or a SCHED_FIFO priority 1..99, got {priority!r}",
                          key=f"{path}.priority")
    cpus = parse_cpus(table["cpus"], f"{path}.cpus") if "cpus" in table else ()
    flags = {}
    for name in ("mlock", "gc_freeze"):
        value = table.get(name, False)
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", key=f"{path}.{name}")
        flags[name] = value
    interval = table.get("switch_interval_us")
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0
    ):
        raise ConfigError(f"expected a time > 0 in µs, got {interval!r}",
                          key=f"{path}.switch_interval_us")
    required = table.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ConfigError(f"expected a list of names from {', '.join(SETTINGS)}",
                          key=f"{path}.required")
    settings = RealtimeSettings(
        priority=priority, cpus=cpus, mlock=flags["mlock"], gc_freeze=flags["gc_freeze"],
        switch_interval_us=None if interval is None else float(interval),
        required=frozenset(required),
    )
    for name in required:
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting {name!r}; expected {', '.join(SETTINGS)}",
                              key=f"{path}.required")
        if name not in settings.enabled():
            raise ConfigError(f"{name} is required but not enabled in [{path}]",
                              key=f"{path}.required")
    return settings


class Syscalls(Protocol):
    """The system calls ``Realtime`` needs; each raises OSError when refused."""

    def set_fifo(self, priority: int) -> None:
        """Put the calling thread under SCHED_FIFO at ``priority``."""
        ...

    def set_other(self) -> None:
        """Put the calling thread back under SCHED_OTHER."""
        ...

    def rtprio_limit(self) -> int:
        """The soft RLIMIT_RTPRIO (-1 for unlimited)."""
        ...

    def get_affinity(self) -> set[int]:
        """The CPUs the calling thread may run on."""
        ...

    def set_affinity(self, cpus: Sequence[int]) -> None:
        """Pin the calling thread to ``cpus``."""
        ...

    def memlock_limit(self) -> int:
        """The soft RLIMIT_MEMLOCK in bytes (-1 for unlimited)."""
        ...

    def has_capability(self, cap: int) -> bool:
        """Whether the process holds capability ``cap`` in its effective set."""
        ...

    def mlockall(self, flags: int) -> None:
        """Lock the address space."""
        ...

    def munlockall(self) -> None:
        """Unlock the address space."""
        ...


class LinuxSyscalls:
    """The real calls: os.sched_*, resource, /proc/self/status and libc's mlockall."""

    __slots__ = ("_libc",)

    def __init__(self) -> None:
        self._libc: Any = None

    def set_fifo(self, priority: int) -> None:
        """sched_setscheduler(0, SCHED_FIFO): 0 is the calling thread on Linux."""
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))

    def set_other(self) -> None:
        """sched_setscheduler(0, SCHED_OTHER)."""
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    def rtprio_limit(self) -> int:
        """The soft RLIMIT_RTPRIO."""
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
        return soft

    def get_affinity(self) -> set[int]:
        """sched_getaffinity(0): the calling thread's CPUs."""
        return set(os.sched_getaffinity(0))

    def set_affinity(self, cpus: Sequence[int]) -> None:
        """sched_setaffinity(0): the calling thread only."""
        os.sched_setaffinity(0, cpus)

    def memlock_limit(self) -> int:
        """The soft RLIMIT_MEMLOCK."""
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return soft

    def has_capability(self, cap: int) -> bool:
        """Read CapEff from /proc/self/status."""
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("CapEff:"):
                        return bool(int(line.split()[1], 16) >> cap & 1)
        except OSError:
            pass
        return False

    def _call(self, name: str, *args: int) -> None:
        if self._libc is None:
            self._libc = ctypes.CDLL(None, use_errno=True)
        if getattr(self._libc, name)(*(ctypes.c_int(a) for a in args)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def mlockall(self, flags: int) -> None:
        """libc mlockall(flags)."""
        self._call("mlockall", flags)

    def munlockall(self) -> None:
        """libc munlockall()."""
        self._call("munlockall")


def _limit_text(value: int) -> str:
    return "unlimited" if value < 0 or value == resource.RLIM_INFINITY else str(value)


@dataclass
class RealtimeReport:
    """What ``apply`` did: settings applied, and refused ones with the warning given."""

    applied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def refused_flag(self, setting: str) -> int:
        """1 when ``setting`` was asked for and refused (the metric's value), else 0."""
        return int(setting in self.refused)


class Realtime:
    """Applies ``RealtimeSettings`` to the calling thread, and undoes them at shutdown."""

    def __init__(self, settings: RealtimeSettings, syscalls: Syscalls | None = None) -> None:
        self.settings = settings
        self.sys: Syscalls = syscalls if syscalls is not None else LinuxSyscalls()
        self.report = RealtimeReport()
        self._old_interval: float | None = None
        self._gc_was_enabled = False
        self._released = False

    def apply(self) -> RealtimeReport:
        """Apply every enabled setting to the calling thread; RealtimeRefused if required."""
        st = self.settings
        steps = {
            "priority": lambda: self._priority(st.priority),
            "cpus": lambda: self._cpus(st.cpus),
            "mlock": self._mlock,
            "gc_freeze": self._gc,
            "switch_interval": lambda: self._interval(st.switch_interval_us or 0.0),
        }
        for name in st.enabled():
            problem = steps[name]()
            if problem is None:
                self.report.applied.append(name)
                continue
            if name in st.required:
                raise RealtimeRefused(name, f"required real-time setting refused: {problem}")
            self.report.refused[name] = problem
            log.warning("%s; running on without it", problem)
        if self.report.applied:
            log.info("real-time settings applied: %s", ", ".join(self.report.applied))
        return self.report

    def _priority(self, priority: int) -> str | None:
        try:
            self.sys.set_fifo(priority)
        except OSError as exc:
            limit = self.sys.rtprio_limit()
            return (
                f"SCHED_FIFO priority {priority} refused ({exc.strerror}): grant CAP_SYS_NICE "
                f"(AmbientCapabilities=CAP_SYS_NICE) or raise RLIMIT_RTPRIO to {priority} "
                f"(LimitRTPRIO={priority} in the systemd unit; it is {_limit_text(limit)}); in "
                "a container also allow real-time runtime (docker --cpu-rt-runtime, "
                "cpu.rt_runtime_us)"
            )
        return None

    def _cpus(self, cpus: tuple[int, ...]) -> str | None:
        allowed = self.sys.get_affinity()
        try:
            self.sys.set_affinity(cpus)
        except OSError as exc:
            return (
                f"CPU affinity {list(cpus)} refused ({exc.strerror}): this process may use "
                f"CPUs {sorted(allowed)}; choose [realtime] cpus among them or widen "
                "CPUAffinity=/AllowedCPUs= in the systemd unit"
            )
        return None

    def _mlock(self) -> str | None:
        limit = self.sys.memlock_limit()
        unlimited = limit < 0 or limit == resource.RLIM_INFINITY
        fix = ("set LimitMEMLOCK=infinity in the systemd unit (ulimit -l unlimited) or grant "
               "CAP_IPC_LOCK")
        if not unlimited and not self.sys.has_capability(CAP_IPC_LOCK):
            # With MCL_FUTURE under a finite limit, a later allocation would fail instead.
            return f"mlockall refused: RLIMIT_MEMLOCK is {limit} bytes; {fix}"
        try:
            self.sys.mlockall(MCL_CURRENT | MCL_FUTURE)
        except OSError as exc:
            why = "out of lockable memory" if exc.errno in (errno.ENOMEM, errno.EAGAIN) else (
                exc.strerror)
            return f"mlockall refused ({why}): {fix}"
        return None

    def _gc(self) -> str | None:
        self._gc_was_enabled = gc.isenabled()
        gc.freeze()  # everything built at start-up leaves the collector's view
        gc.disable()
        return None

    def _interval(self, interval_us: float) -> str | None:
        self._old_interval = sys.getswitchinterval()
        sys.setswitchinterval(interval_us / 1e6)
        return None

    def release(self) -> None:
        """Undo what ``apply`` did, CPU affinity aside (before slow shutdown work); idempotent."""
        if self._released:
            return
        self._released = True
        applied = self.report.applied
        if "priority" in applied:
            try:
                self.sys.set_other()
            except OSError as exc:
                log.warning("could not return to SCHED_OTHER: %s", exc.strerror)
        if "mlock" in applied:
            try:
                self.sys.munlockall()
            except OSError as exc:
                log.warning("munlockall failed: %s", exc.strerror)
        if "gc_freeze" in applied:
            gc.unfreeze()
            if self._gc_was_enabled:
                gc.enable()
        if "switch_interval" in applied and self._old_interval is not None:
            sys.setswitchinterval(self._old_interval)
