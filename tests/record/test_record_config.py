"""The [record] section: validation naming the key, and the Recorder it builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import build_config
from bridge.endpoints import endpoint_spec
from bridge.engine.clock import FakeClock
from bridge.errors import ConfigError
from bridge.record.config import parse_config


def test_defaults_and_units() -> None:
    s = parse_config({"path": "/r/run-{start}.sbr", "rotate_mb": 1.5, "rotate_s": 60,
                      "min_free_mb": 10, "fsync_s": 0.5, "endpoints": ["in0"]})
    assert (s.path, s.enabled, s.endpoints) == ("/r/run-{start}.sbr", True, ("in0",))
    assert (s.rotate_bytes, s.rotate_seconds, s.min_free_bytes) == (1_500_000, 60.0, 10_000_000)
    assert s.fsync_interval_ns == 500_000_000
    assert parse_config({"path": "x.sbr"}).buffer_frames == 65536


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({}, "record.path"),
        ({"path": ""}, "record.path"),
        ({"path": "run-{date}.sbr"}, "record.path"),
        ({"path": "run-{.sbr"}, "record.path"),
        ({"path": "x.sbr", "colour": 1}, "record.colour"),
        ({"path": "x.sbr", "enabled": "yes"}, "record.enabled"),
        ({"path": "x.sbr", "rotate_mb": -1}, "record.rotate_mb"),
        ({"path": "x.sbr", "rotate_mb": 0.001}, "record.rotate_mb"),
        ({"path": "x.sbr", "rotate_s": True}, "record.rotate_s"),
        ({"path": "x.sbr", "buffer_frames": 1.5}, "record.buffer_frames"),
        ({"path": "x.sbr", "buffer_frames": 0}, "record.buffer_frames"),
        ({"path": "x.sbr", "endpoints": "in0"}, "record.endpoints"),
        ({"path": "x.sbr", "endpoints": ["in0", "in0"]}, "record.endpoints"),
    ],
)
def test_errors_name_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    assert info.value.key == key


def test_recorder_for_a_subset_of_endpoints(tmp_path: Path) -> None:
    specs = [endpoint_spec("udp://127.0.0.1:5000?neurons=10", "in", 0),
             endpoint_spec("udp://127.0.0.1:5001?neurons=20&offset=10", "in", 1),
             endpoint_spec("udp://127.0.0.1:6000?neurons=30", "out", 0)]
    settings = parse_config({"path": str(tmp_path / "r.sbr"), "endpoints": ["out0", "in1"]})
    rec = settings.recorder(specs, node=4, clock=FakeClock())
    assert [e.name for e in rec.endpoints] == ["in1", "out0"]  # in the bridge's order
    assert rec.endpoints[0].offset == 10 and rec.endpoints[1].direction == "out"
    assert (rec.slot("in0"), rec.slot("in1"), rec.slot("out0")) == (None, 0, 1)
    with pytest.raises(ConfigError, match="no input or output is named 'zz'"):
        parse_config({"path": "x.sbr", "endpoints": ["zz"]}).recorder(specs)


def test_the_bridge_config_parses_the_section(tmp_path: Path) -> None:
    cfg = build_config({
        "input": ["udp://127.0.0.1:5000?neurons=10"],
        "record": {"path": str(tmp_path / "r.sbr"), "rotate_s": 5},
    })
    assert cfg.section("record").rotate_seconds == 5.0
    with pytest.raises(ConfigError, match=r"record\.rotate_s"):
        build_config({"input": ["udp://127.0.0.1:5000?neurons=10"],
                      "record": {"path": "x", "rotate_s": "soon"}})
