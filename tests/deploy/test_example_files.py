"""The example config is valid for this build; the udev rule is well formed."""

from __future__ import annotations

import re
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
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "DRIVER", "DRIVERS", "ATTRS", "ATTR", "ENV", "KERNEL"}
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
