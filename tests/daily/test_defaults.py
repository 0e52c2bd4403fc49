"""neurons= may be left out where the population follows (issue 13, deliverable 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.cli import main as cli_main
from bridge.codecs.legacy import LegacyCodec
from bridge.config import build_config
from bridge.errors import ConfigError
from bridge.frame import SpikeFrame
from tests.engine.test_loop import native


def test_a_relay_output_without_neurons_takes_the_merged_input_population() -> None:
    cfg = build_config({"input": ["udp://127.0.0.1:1?format=legacy&neurons=100",
                                  "udp://127.0.0.1:2?neurons=20&offset=100"],
                        "output": ["udp://127.0.0.1:3?format=legacy",
                                   "udp://127.0.0.1:4?offset=30"]})
    assert [(o.offset, o.neurons, o.sized_by) for o in cfg.outputs] == [
        (0, 120, "output"), (30, 90, "output")]


def test_an_offset_beyond_the_population_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="offset=120 leaves nothing of the merged input"):
        build_config({"input": ["udp://127.0.0.1:1?neurons=120"],
                      "output": ["udp://127.0.0.1:3?offset=120"]})


def test_an_input_without_neurons_is_refused_saying_why() -> None:
    with pytest.raises(ConfigError, match="its population is what the peer sends"):
        build_config({"input": ["udp://127.0.0.1:1?format=legacy"]})


@pytest.mark.parametrize(("url", "neurons"), [
    ("serial:/dev/ttyUSB0?format=edvs", 128 * 128 * 2),
    ("serial:/dev/ttyUSB0?format=edvs&width=64&height=32&scale=2", 32 * 16 * 2),
    ("serial:/dev/ttyUSB0?format=edvs&polarity=merge", 128 * 128),
    ("udp://127.0.0.1:1?format=spif&width=640&height=480", 640 * 480 * 2),
    ("udp://127.0.0.1:1?format=spif&width=640&height=480&layout=yx", 640 * 480),
    ("udp://127.0.0.1:1?format=t64_x16_y16_on8&width=346&height=260", 346 * 260 * 2),
    ("udp://127.0.0.1:1?format=t32_x16_y15_on1&width=64&height=48", 64 * 48 * 2),
])
def test_a_sensor_input_takes_its_population_from_the_geometry(url: str, neurons: int) -> None:
    cfg = build_config({"input": [url]})
    assert cfg.inputs[0].neurons == neurons and cfg.inputs[0].sized_by == "sensor"


def test_a_given_neurons_wins_over_the_geometry() -> None:
    cfg = build_config({"input": ["serial:/dev/ttyUSB0?format=edvs&neurons=10"]})
    assert cfg.inputs[0].neurons == 10 and cfg.inputs[0].sized_by == "url"


def test_the_issue_command_relays_with_a_following_output(run_bridge: Any, peers: Any) -> None:
    tx, rx = peers(), peers()
    rb = run_bridge({"input": ["udp://127.0.0.1:0?format=legacy&neurons=100"],
                     "output": [f"udp://127.0.0.1:{rx.port}?format=legacy"]})
    tx.send(rb.in_port(), LegacyCodec(100).encode(native_frame([3, 99]))[0])
    assert [LegacyCodec(100).decode(d).ids.tolist() for d in rx.recv_all()] == [[3, 99]]


def native_frame(ids: list[int]) -> SpikeFrame:
    return SpikeFrame(1, 0, 0, np.asarray(ids, dtype=np.uint32))


def test_a_python_processor_output_follows_its_setup(run_bridge: Any, peers: Any,
                                                     tmp_path: Path) -> None:
    mod = tmp_path / "double.py"
    mod.write_text("import numpy as np\n"
                   "def setup(inputs, params):\n    return inputs * 2\n"
                   "def step(ids):\n    return ids * 2 + 1\n")
    tx, rx, rx2 = peers(), peers(), peers()
    rb = run_bridge({"bridge": {"processor": f"python:{mod}:step"},
                     "input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                     "output": [f"udp://127.0.0.1:{rx.port}?format=legacy",
                                f"udp://127.0.0.1:{rx2.port}?format=legacy&offset=4"]})
    assert [(o.spec.offset, o.spec.neurons) for o in rb.bridge.outputs] == [(0, 16), (4, 12)]
    assert [o.neurons for o in rb.bridge.config.outputs] == [16, 12]
    tx.send(rb.in_port(), native([1, 7], seq=0, neurons=8))
    assert [LegacyCodec(16).decode(d).ids.tolist() for d in rx.recv_all()] == [[3, 15]]
    assert [LegacyCodec(12).decode(d).ids.tolist() for d in rx2.recv_all()] == [[11]]


def test_check_prints_every_resolved_population(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[input]]\nurl = "udp://127.0.0.1:1?format=legacy&neurons=100"\n'
                    '[[input]]\nurl = "serial:/dev/ttyUSB0?format=edvs&width=8&height=8"\n'
                    '[[output]]\nurl = "udp://127.0.0.1:2?format=legacy&offset=10"\n')
    assert cli_main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "neurons 0..99 (100, neurons=)" in out
    assert "neurons 0..127 (128, from the sensor geometry)" in out
    assert "neurons 10..127 (118, the rest of the output population from its offset)" in out


def test_check_sizes_a_brian2_output_from_the_built_network(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("brian2")
    path = tmp_path / "c.toml"
    reflex = Path(__file__).resolve().parents[2] / "examples" / "reflex.py"
    path.write_text(f'[bridge]\nprocessor = "brian2:{reflex}"\ndt_ms = 1.0\n'
                    '[[input]]\nurl = "udp://127.0.0.1:1?neurons=64"\n'
                    '[[output]]\nurl = "udp://127.0.0.1:2?offset=1"\n')
    assert cli_main(["check", str(path)]) == 0
    assert "neurons 1..1 (1, the rest of the output population" in capsys.readouterr().out
    path.write_text(path.read_text().replace("offset=1", "offset=2"))
    assert cli_main(["check", str(path)]) == 2
    assert "offset=2 leaves nothing of the processor's output" in capsys.readouterr().err


def test_the_emulate_help_example_input_needs_no_neurons() -> None:
    import re

    from bridge.emulate.cli import build_parser

    epilog = build_parser().epilog or ""
    url = re.search(r"--in '([^']+)'", epilog)
    assert url is not None, epilog
    cfg = build_config({"input": [url.group(1)],
                        "output": ["udp://127.0.0.1:2?format=native"]})
    assert cfg.inputs[0].neurons == 128 * 128 * 2 and cfg.outputs[0].neurons == 128 * 128 * 2
