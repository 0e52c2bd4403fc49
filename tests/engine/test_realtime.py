"""Real-time settings: config parsing, refusals (fake system calls), and the real calls."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

import pytest

from bridge.engine.realtime import (
    CAP_IPC_LOCK,
    MCL_CURRENT,
    MCL_FUTURE,
    Realtime,
    RealtimeRefused,
    RealtimeSettings,
    parse_config,
)
from bridge.errors import ConfigError


class FakeSyscalls:
    """Records calls; refuses the ones named in ``refuse`` with EPERM."""

    def __init__(self, refuse: Sequence[str] = (), memlock: int = -1, caps: set[int] | None = None,
                 allowed: set[int] | None = None) -> None:
        self.refuse = set(refuse)
        self.memlock = memlock
        self.caps = caps if caps is not None else set()
        self.allowed = allowed if allowed is not None else {0, 1}
        self.calls: list[tuple[str, object]] = []

    def _do(self, name: str, arg: object = None) -> None:
        if name in self.refuse:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        self.calls.append((name, arg))

    def set_fifo(self, priority: int) -> None:
        self._do("set_fifo", priority)

    def set_other(self) -> None:
        self._do("set_other")

    def rtprio_limit(self) -> int:
        return 0

    def get_affinity(self) -> set[int]:
        return set(self.allowed)

    def set_affinity(self, cpus: Sequence[int]) -> None:
        if not set(cpus) <= self.allowed:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._do("set_affinity", tuple(cpus))

    def memlock_limit(self) -> int:
        return self.memlock

    def has_capability(self, cap: int) -> bool:
        return cap in self.caps

    def mlockall(self, flags: int) -> None:
        self._do("mlockall", flags)

    def munlockall(self) -> None:
        self._do("munlockall")


@pytest.fixture(autouse=True)
def restore_process_state() -> Iterator[None]:
    interval = sys.getswitchinterval()
    enabled = gc.isenabled()
    yield
    sys.setswitchinterval(interval)
    gc.unfreeze()
    if enabled:
        gc.enable()


ALL = {"priority": 50, "cpus": [1], "mlock": True, "gc_freeze": True, "switch_interval_us": 200}


def test_parse_config_defaults_change_nothing() -> None:
    settings = parse_config({})
    assert settings == RealtimeSettings()
    assert settings.enabled() == ()


def test_parse_config_all_keys() -> None:
    got = parse_config({**ALL, "cpus": "1-3,5", "required": ["priority", "mlock"]})
    assert got.priority == 50
    assert got.cpus == (1, 2, 3, 5)
    assert got.mlock and got.gc_freeze
    assert got.switch_interval_us == 200.0
    assert got.required == {"priority", "mlock"}
    assert got.enabled() == ("priority", "cpus", "mlock", "gc_freeze", "switch_interval")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"priority": 100}, "realtime.priority"),
        ({"priority": True}, "realtime.priority"),
        ({"priority": "high"}, "realtime.priority"),
        ({"cpus": "a-b"}, "realtime.cpus"),
        ({"cpus": "3-1"}, "realtime.cpus"),
        ({"cpus": [-1]}, "realtime.cpus"),
        ({"cpus": 2}, "realtime.cpus"),
        ({"mlock": "yes"}, "realtime.mlock"),
        ({"gc_freeze": 1}, "realtime.gc_freeze"),
        ({"switch_interval_us": 0}, "realtime.switch_interval_us"),
        ({"switch_interval": 100}, "realtime.switch_interval"),
        ({"required": ["speed"]}, "realtime.required"),
        ({"required": ["mlock"]}, "realtime.required"),  # required but not enabled
        ({"required": "mlock"}, "realtime.required"),
    ],
)
def test_parse_config_errors_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    assert info.value.key == key


def test_apply_everything_granted() -> None:
    fake = FakeSyscalls()
    rt = Realtime(parse_config(ALL), fake)
    report = rt.apply()
    assert report.applied == ["priority", "cpus", "mlock", "gc_freeze", "switch_interval"]
    assert report.refused == {}
    assert fake.calls == [("set_fifo", 50), ("set_affinity", (1,)),
                          ("mlockall", MCL_CURRENT | MCL_FUTURE)]
    assert not gc.isenabled()
    assert sys.getswitchinterval() == pytest.approx(200e-6)
    rt.release()
    rt.release()  # idempotent
    assert fake.calls[3:] == [("set_other", None), ("munlockall", None)]
    assert gc.isenabled()


def test_refused_priority_warns_with_the_fix_and_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report = Realtime(parse_config({"priority": 80, "gc_freeze": True}),
                      FakeSyscalls(refuse=["set_fifo"])).apply()
    assert report.applied == ["gc_freeze"]
    assert report.refused_flag("priority") == 1
    assert report.refused_flag("gc_freeze") == 0
    text = caplog.text
    assert "CAP_SYS_NICE" in text and "LimitRTPRIO=80" in text


def test_refused_cpus_names_the_allowed_set() -> None:
    report = Realtime(parse_config({"cpus": [7]}), FakeSyscalls(allowed={0, 1})).apply()
    assert "CPUs [0, 1]" in report.refused["cpus"]
    assert "CPUAffinity=" in report.refused["cpus"]


def test_mlock_under_a_finite_limit_is_refused_before_calling() -> None:
    fake = FakeSyscalls(memlock=8 << 20)
    report = Realtime(parse_config({"mlock": True}), fake).apply()
    assert "LimitMEMLOCK=infinity" in report.refused["mlock"]
    assert fake.calls == []  # MCL_FUTURE under a finite limit would fail later allocations


def test_mlock_with_cap_ipc_lock_ignores_the_limit() -> None:
    fake = FakeSyscalls(memlock=8 << 20, caps={CAP_IPC_LOCK})
    assert Realtime(parse_config({"mlock": True}), fake).apply().applied == ["mlock"]


def test_mlock_refused_by_the_kernel() -> None:
    report = Realtime(parse_config({"mlock": True}), FakeSyscalls(refuse=["mlockall"])).apply()
    assert "LimitMEMLOCK=infinity" in report.refused["mlock"]


def test_required_setting_refused_raises() -> None:
    rt = Realtime(parse_config({"priority": 10, "required": ["priority"]}),
                  FakeSyscalls(refuse=["set_fifo"]))
    with pytest.raises(RealtimeRefused, match="CAP_SYS_NICE") as info:
        rt.apply()
    assert info.value.setting == "priority"


def test_affinity_pins_the_calling_thread_only() -> None:
    """Real sched_setaffinity from a thread: the main thread keeps its CPUs."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to tell a pinned thread from the others")
    seen: dict[str, object] = {}

    def loop_thread() -> None:
        rt = Realtime(RealtimeSettings(cpus=(allowed[-1],)))
        seen["report"] = rt.apply()
        seen["cpus"] = os.sched_getaffinity(0)

    t = threading.Thread(target=loop_thread)
    t.start()
    t.join()
    assert seen["cpus"] == {allowed[-1]}
    assert sorted(os.sched_getaffinity(0)) == allowed


def test_real_sched_fifo_in_a_subprocess() -> None:
    """The real call; skipped where the system refuses SCHED_FIFO."""
    code = (
        "import os, sys\n"
        "from bridge.engine.realtime import Realtime, RealtimeSettings\n"
        "r = Realtime(RealtimeSettings(priority=1)).apply()\n"
        "print(os.sched_getscheduler(0) == os.SCHED_FIFO, r.refused.get('priority', ''))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip()
    is_fifo, _, refusal = out.partition(" ")
    if is_fifo != "True":
        pytest.skip(f"SCHED_FIFO refused here: {refusal}")
    assert refusal == ""
