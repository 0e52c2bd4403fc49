"""promtool on the shipped scrape config, alert rules and the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True,
                          timeout=60)


def test_check_config() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: prometheus.yml is valid" in proc.stdout


def test_check_rules() -> None:
    proc = promtool("check", "rules", "spikebridge-rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 12 rules found" in proc.stdout


def test_rule_unit_tests() -> None:
    proc = promtool("test", "rules", "spikebridge-rules.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
