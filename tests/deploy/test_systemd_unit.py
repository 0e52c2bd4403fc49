"""The systemd units: `systemd-analyze verify` clean and a security exposure of 2.0 or better.

Both units are checked: spikebridge.service and the template spikebridge@.service (as an
instance, since a template itself cannot be loaded). ``verify`` also resolves the units'
``Documentation=man:spikebridge(1)``, against the page ``spikebridge man`` generates.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.tools.manpage import page

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "spikebridge.service"
TEMPLATE = DEPLOY / "spikebridge@.service"
UNITS = {"spikebridge.service": UNIT, "spikebridge@lab1.service": TEMPLATE}
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
# What the template changes for its instance; every other [Service] line is the same in both.
# systemd-analyze cannot start its manager here (a container without the needed privileges).
REFUSED = re.compile(r"Failed to (initialize manager|allocate manager)|Operation not permitted")
PER_INSTANCE = {"ExecStart", "StateDirectory", "CacheDirectory", "WorkingDirectory", "Environment"}


def settings(unit: Path = UNIT, section: str | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section in (None, current):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def manpath(tmp_path_factory) -> str:
    """A MANPATH holding spikebridge(1) as ``spikebridge man`` makes it."""
    root = tmp_path_factory.mktemp("man")
    (root / "man1").mkdir()
    (root / "man1" / "spikebridge.1").write_text(page())
    return str(root)


@pytest.fixture(params=sorted(UNITS), ids=lambda name: name)
def runnable_unit(request, tmp_path) -> Path:
    """The unit (an instance, for the template) with ExecStart pointing at a binary that exists
    here (verify checks it)."""
    text = UNITS[request.param].read_text()
    command = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert command is not None
    copy = tmp_path / request.param
    copy.write_text(text.replace(command.group(1), shutil.which("true") or "/bin/true"))
    return copy


def analyze(*args: str, manpath: str | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, **({"MANPATH": manpath} if manpath else {})}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, env=env)


@needs_analyze
@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (Debian man-db): "
                    "verify cannot resolve Documentation=man:spikebridge(1)")
def test_verify_is_clean(runnable_unit, manpath) -> None:
    proc = analyze("verify", str(runnable_unit), manpath=manpath)
    report = proc.stdout + proc.stderr
    if proc.returncode and REFUSED.search(report):
        pytest.skip(f"systemd-analyze verify refused to run here: {report.strip()}")
    assert proc.returncode == 0 and not report.strip(), report


@needs_analyze
def test_verify_notices_a_missing_man_page(runnable_unit, tmp_path) -> None:
    """The check above is not vacuous: without the page, verify names it."""
    if shutil.which("man") is None:
        pytest.skip("man is not installed: verify does not look pages up")
    proc = analyze("verify", str(runnable_unit), manpath=str(tmp_path))
    assert "man spikebridge(1)" in proc.stdout + proc.stderr


@needs_analyze
def test_security_exposure_is_at_most_2(runnable_unit) -> None:
    proc = analyze("security", "--offline=yes", "--threshold=20", str(runnable_unit))
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    if score is None and "offline" in proc.stderr:
        pytest.skip(f"systemd-analyze security refused --offline: {proc.stderr.strip()}")
    assert score is not None, proc.stdout + proc.stderr
    assert float(score.group(1)) <= 2.0 and proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("unit", [UNIT, TEMPLATE], ids=lambda p: p.name)
def test_the_service_contract(unit: Path) -> None:
    s = settings(unit)
    assert s["Documentation"] == ["man:spikebridge(1)"]
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["RestartPreventExitStatus"] == ["2"]   # bad config: a restart cannot help
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["LimitMEMLOCK"] == ["infinity"] and int(s["LimitRTPRIO"][0]) >= 50
    assert s["CPUAffinity"]
    assert {"char-ttyACM rw", "char-ttyUSB rw"} <= set(s["DeviceAllow"])
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["User"] == s["Group"] == ["spikebridge"]
    assert s["ConfigurationDirectory"] == ["spikebridge"]
    # The loop raises itself to SCHED_FIFO: nothing may forbid that.
    assert "RestrictRealtime" not in s
    assert "sched_setscheduler" in " ".join(s["SystemCallFilter"])


def test_the_single_unit_runs_the_one_config() -> None:
    s = settings(UNIT)
    assert s["ExecStart"][0].split()[1:] == ["run", "/etc/spikebridge/spikebridge.toml"]
    for directory in ("StateDirectory", "CacheDirectory"):
        assert s[directory] == ["spikebridge"]


def test_each_instance_has_its_config_state_and_cache() -> None:
    s = settings(TEMPLATE)
    assert "%i" in s["Description"][0]
    assert s["ExecStart"][0].split()[1:] == ["run", "/etc/spikebridge/%i.toml"]
    assert s["StateDirectory"] == ["spikebridge/%i"]
    assert s["CacheDirectory"] == ["spikebridge/%i"]
    assert s["WorkingDirectory"] == ["%S/spikebridge/%i"]
    env = dict(e.split("=", 1) for e in s["Environment"])
    assert env["XDG_CACHE_HOME"] == "%C/spikebridge/%i"   # Brian2's cache, per instance
    assert env["HOME"] == "%S/spikebridge/%i"
    # The metrics port is each config's [metrics] listen, never the unit's.
    assert not re.search(r"--metrics|:\d{4,5}\b", TEMPLATE.read_text())


def test_the_units_differ_only_per_instance() -> None:
    single, template = settings(UNIT, "Service"), settings(TEMPLATE, "Service")
    assert set(single) == set(template)
    for key in set(single) - PER_INSTANCE:
        assert single[key] == template[key], key
    assert settings(UNIT, "Install") == settings(TEMPLATE, "Install")
    assert settings(UNIT, "Unit").keys() == settings(TEMPLATE, "Unit").keys()
