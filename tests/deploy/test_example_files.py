"""The example config is valid for this build; the udev rule is well formed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.service.watchdog import WatchdogConfig
from bridge.tools.check import main as check

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_example_config_passes_check(capsys, tmp_path) -> None:
    pytest.importorskip("brian2")
    # As shipped it names the network at its installed path; check refuses it until then.
    assert check([str(DEPLOY / "spikebridge.toml")]) == 2
    assert "no such file '/etc/spikebridge/network.py'" in capsys.readouterr().err
    # Installed beside deploy/network.py, it passes: the network fits every output's slice.
    text = (DEPLOY / "spikebridge.toml").read_text()
    (tmp_path / "spikebridge.toml").write_text(
        text.replace("/etc/spikebridge/network.py", str(DEPLOY / "network.py")))
    assert check([str(tmp_path / "spikebridge.toml")]) == 0
    assert "17384 inputs, 100 outputs" in capsys.readouterr().out
    cfg = load_config(str(DEPLOY / "spikebridge.toml"))
    assert cfg.metrics.listen == ("127.0.0.1", 9877)   # loopback unless the operator says so
    assert isinstance(cfg.section("watchdog"), WatchdogConfig)
    # The devices it names are the stable ones the udev rule creates.
    rules = (DEPLOY / "99-spikebridge.rules").read_text()
    for spec in (*cfg.inputs, *cfg.outputs):
        if spec.url.scheme == "serial":
            link = spec.url.target.removeprefix("/dev/")
            assert f'SYMLINK+="{link}"' in rules, link


RULE_TOKEN = re.compile(r'\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(,|$)')
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "DRIVER", "DRIVERS", "ATTRS", "ATTR", "ENV", "KERNEL", "TEST"}
ASSIGN_KEYS = {"SYMLINK", "GROUP", "MODE", "ATTR", "OWNER"}


def test_udev_rules_are_well_formed() -> None:
    lines = [ln for ln in (DEPLOY / "99-spikebridge.rules").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines
    for line in lines:
        pos, tokens = 0, []
        while pos < len(line):
            m = RULE_TOKEN.match(line, pos)
            assert m, f"cannot parse at {line[pos:]!r}"
            tokens.append(m.groups()[:3])
            pos = m.end()
        for key, op, _ in tokens:
            base = key.split("{")[0]
            if op in ("==", "!="):
                assert base in MATCH_KEYS, key
            else:
                assert base in ASSIGN_KEYS, key
        assigned = {k: v for k, op, v in tokens if op in ("=", "+=")}
        if "SYMLINK" in assigned:
            assert assigned["SYMLINK"].startswith("spikebridge/")
            assert assigned.get("GROUP") == "dialout" and assigned.get("MODE") == "0660"


def rule_lines() -> list[str]:
    return [ln for ln in (DEPLOY / "99-spikebridge.rules").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def test_usb_autosuspend_is_off_for_every_named_device() -> None:
    """docs/operations.md: power/control=on, on the USB device of each device the rule names."""
    power = [ln for ln in rule_lines() if 'ATTR{power/control}="on"' in ln]
    for line in power:
        assert 'SUBSYSTEM=="usb"' in line and 'TEST=="power/control"' in line, line
    vendors = set(re.findall(r'ATTRS\{idVendor\}=="(\w+)"[^\n]*SYMLINK', "\n".join(rule_lines())))
    assert vendors and vendors <= {m for ln in power
                                   for m in re.findall(r'ATTR\{idVendor\}=="(\w+)"', ln)}


UDEVADM = shutil.which("udevadm")
UNSHARE = shutil.which("unshare")
# In a private mount namespace, over fresh tmpfs on /run and /dev: udevadm test loads the rules
# from /run/udev/rules.d and simulates one event, and nothing it writes reaches the host.
NAMESPACED_TEST = """set -e
mount -t tmpfs spikebridge-test /run
mount -t tmpfs spikebridge-test /dev
mkdir -p /run/udev/rules.d
cp "$1"/*.rules /run/udev/rules.d/
exec "$2" test --action=add "$3"
"""


def udev_parse(rules: Path) -> str:
    """What udev's own rule parser says about the rules files in ``rules``."""
    if UDEVADM is None or UNSHARE is None:
        pytest.skip("udevadm or unshare is not installed (Debian packages udev, util-linux)")
    devices = sorted(Path("/sys/class/tty").glob("tty*"))
    if not devices:
        pytest.skip("no tty device in /sys to simulate an event on")
    proc = subprocess.run([UNSHARE, "--mount", "--propagation", "private", "sh", "-c",
                           NAMESPACED_TEST, "sh", str(rules), UDEVADM, str(devices[0])],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if proc.returncode and ("Operation not permitted" in out or "Permission denied" in out):
        pytest.skip(f"a private mount namespace was refused: {out.strip()[:200]}")
    return out


def test_udev_parses_the_rule(tmp_path: Path) -> None:
    """udev's own parser (udevadm test; udevadm verify came with systemd 253, Debian 12 has
    252) reads the rule without a complaint, and does complain about a broken copy."""
    shutil.copy(DEPLOY / "99-spikebridge.rules", tmp_path / "99-spikebridge.rules")
    (tmp_path / "98-broken.rules").write_text('SUBSYSTEM=="tty", FOO{bar}=="x", MODE="0660"\n')
    out = udev_parse(tmp_path)
    assert "Reading rules file: /run/udev/rules.d/99-spikebridge.rules" in out, out
    assert "/run/udev/rules.d/98-broken.rules:1 Invalid key 'FOO'" in out, out
    complaints = [ln for ln in out.splitlines() if "99-spikebridge.rules:" in ln]
    assert not complaints, complaints


def test_udevadm_verify_accepts_the_rule() -> None:
    if UDEVADM is None:
        pytest.skip("udevadm is not installed (Debian package udev)")
    probe = subprocess.run([UDEVADM, "verify", "--help"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        pytest.skip("this udevadm has no 'verify' (it came with systemd 253; Debian 12 has 252)")
    proc = subprocess.run([UDEVADM, "verify", "--resolve-names=never",
                           str(DEPLOY / "99-spikebridge.rules")], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
