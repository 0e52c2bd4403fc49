"""A reload (SIGHUP) speaks in config keys and values, and says truthfully where it reads from."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.config import config_from_flags, load_config
from bridge.engine.clock import FakeClock
from bridge.engine.stats import BridgeStats
from bridge.service.daemon import Reloader
from bridge.service.heartbeat import Heartbeat
from bridge.service.notify import Notifier

BASE = '[[input]]\nurl = "udp://127.0.0.1:0?neurons=16"\n'


def reloader(cfg):  # type: ignore[no-untyped-def]
    notifier = Notifier({}, sender=lambda _m: True)
    beat = Heartbeat(BridgeStats(), notifier, None)
    return Reloader(cfg, beat, notifier, FakeClock(), usec=2_000_000)


def reload_log(reload: Reloader, caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spikebridge"):
        reload()
    return caplog.text


def test_changes_are_named_by_key_with_old_and_new_values(tmp_path: Path, caplog) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(BASE + "[bridge]\ndt_ms = 1\nspin_us = 100\nduration_s = 10\n"
                    "[watchdog]\nmax_misses = 5\n")
    reload = reloader(load_config(str(path)))
    path.write_text(BASE + "[bridge]\ndt_ms = 0.5\nspin_us = 50\n[metrics]\nlisten = ':9877'\n"
                    "[watchdog]\nmax_misses = 50\nstall_ms = 250\n")
    text = reload_log(reload, caplog)
    assert "bridge.dt_ms 1 -> 0.5" in text
    assert "bridge.spin_us 100 -> 50" in text
    assert "bridge.duration_s 10 -> 0" in text
    assert "metrics.listen (none) -> '127.0.0.1:9877'" in text
    assert "reload: applied [watchdog] stall_ms = 250, max_misses = 50" in text
    for internal in ("dt_ns", "spin_ns", "duration_ns", "WatchdogConfig(", "MetricsConfig("):
        assert internal not in text


def test_a_daemon_started_from_a_file_never_claims_it_was_started_from_flags(
        tmp_path: Path, caplog) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(BASE)
    reload = reloader(load_config(str(path)))
    path.unlink()  # moved away while the daemon runs
    text = reload_log(reload, caplog)
    assert "--in/--out" not in text
    assert str(path) in text and "cannot read config" in text
    assert "keeping the running config" in text


def test_a_daemon_started_from_flags_says_so(caplog) -> None:
    reload = reloader(config_from_flags(["udp://127.0.0.1:0?neurons=4"], []))
    text = reload_log(reload, caplog)
    assert "started from --in/--out, there is no config file to re-read" in text
