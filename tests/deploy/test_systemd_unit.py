"""The systemd unit: `systemd-analyze verify` clean and a security exposure of 2.0 or better."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "spikebridge.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def runnable_unit(tmp_path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify checks it)."""
    text = UNIT.read_text()
    command = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert command is not None
    copy = tmp_path / "spikebridge.service"
    copy.write_text(text.replace(command.group(1), shutil.which("true") or "/bin/true"))
    return copy


@needs_analyze
def test_verify_is_clean(runnable_unit) -> None:
    proc = subprocess.run([ANALYZE, "verify", str(runnable_unit)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (
        proc.stdout + proc.stderr
    )


@needs_analyze
def test_security_exposure_is_at_most_2(runnable_unit) -> None:
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--threshold=20", str(runnable_unit)],
        capture_output=True, text=True, timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert score is not None, proc.stdout + proc.stderr
    assert float(score.group(1)) <= 2.0 and proc.returncode == 0, proc.stdout


def test_the_service_contract() -> None:
    s = settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["RestartPreventExitStatus"] == ["2"]   # bad config: a restart cannot help
    assert s["ExecStart"][0].split()[1:] == ["run", "/etc/spikebridge/spikebridge.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["LimitMEMLOCK"] == ["infinity"] and int(s["LimitRTPRIO"][0]) >= 50
    assert s["CPUAffinity"]
    assert {"char-ttyACM rw", "char-ttyUSB rw"} <= set(s["DeviceAllow"])
    assert s["SupplementaryGroups"] == ["dialout"]
    for directory in ("StateDirectory", "CacheDirectory", "ConfigurationDirectory"):
        assert s[directory] == ["spikebridge"]
    # The loop raises itself to SCHED_FIFO: nothing may forbid that.
    assert "RestrictRealtime" not in s
    assert "sched_setscheduler" in " ".join(s["SystemCallFilter"])
