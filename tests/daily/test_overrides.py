"""``run CONFIG`` takes command-line overrides of the file (issue 13, deliverable 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.service import daemon

CONFIG = """\
[bridge]
node = 3
dt_ms = 1.0
duration_s = 5
[[input]]
url = "udp://127.0.0.1:1?neurons=4"
[metrics]
listen = "127.0.0.1:9"
"""


def test_every_override_replaces_the_file_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    cfg, problem, level = daemon.parse_args(
        [str(path), "--duration", "0.5", "--repetitions", "3", "--dt", "0.25", "--node", "7",
         "--metrics", "127.0.0.1:19877", "--log-level", "debug"])
    assert problem is None and cfg is not None and level == "DEBUG"
    assert (cfg.duration_ns, cfg.repetitions, cfg.dt_ns, cfg.node) == (
        500_000_000, 3, 250_000, 7)
    assert cfg.metrics.listen == ("127.0.0.1", 19877)
    assert dict(cfg.overridden) == {
        "bridge.duration_s": (5, 0.5), "bridge.repetitions": (None, 3),
        "bridge.dt_ms": (1.0, 0.25), "bridge.node": (3, 7),
        "metrics.listen": ("127.0.0.1:9", "127.0.0.1:19877")}


def test_an_override_is_validated_as_the_file_key_is(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.replace("duration_s = 5\n", ""))
    cfg, problem, _ = daemon.parse_args([str(path), "--repetitions", "2"])
    assert cfg is None and problem is not None and "bridge.duration_s" in problem


def test_processor_with_a_file_is_refused_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    cfg, problem, _ = daemon.parse_args([str(path), "--processor", "python:x:y"])
    assert cfg is None and problem is not None and "--processor goes with --in/--out" in problem


def test_the_overrides_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    monkeypatch.setattr(daemon, "run", lambda cfg: 0)
    with caplog.at_level(logging.INFO, logger="spikebridge"):
        assert daemon.main([str(path), "--duration", "0.5", "--node", "7"]) == 0
    assert "command line overrides bridge.duration_s: 5 -> 0.5" in caplog.text
    assert "command line overrides bridge.node: 3 -> 7" in caplog.text
