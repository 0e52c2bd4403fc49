"""``check`` refuses what ``run`` refuses, before a socket is opened or code compiled.

Each case is run both ways: ``spikebridge check`` (in-process, through bridge.cli.main) and
the daemon's ``run``, with the input's UDP port held by this test, so that a ``run`` that
opened its endpoints before checking would report "Address already in use" instead of the
real problem. A Brian2 case points ``[brian2] cache_dir`` at a fresh directory: the checks
must neither create nor fill it (nothing compiled).
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import cli
from bridge.config import load_config
from bridge.errors import ConfigError
from bridge.preflight import preflight
from bridge.processors import processor_from_spec
from bridge.service import daemon

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def held_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that this test holds bound (an input that cannot be opened)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def write_config(tmp_path: Path, port: int, bridge: str = "", outputs: str = "",
                 extra: str = "") -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f"[bridge]\n{bridge}\n"
                    f'[[input]]\nurl = "udp://127.0.0.1:{port}?neurons=64"\n'
                    f"{outputs}\n{extra}\n")
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["check", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def run(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spikebridge"):
        code = daemon.run(load_config(str(path)), environ={})
    return code, caplog.text


def both_refuse(tmp_path: Path, path: Path, capsys: pytest.CaptureFixture[str],
                caplog: pytest.LogCaptureFixture, words: str) -> None:
    code, text = check(path, capsys)
    assert code == 2 and words in text, text
    code, text = run(path, caplog)
    assert code == 2 and words in text, text
    assert "Address already in use" not in text  # refused before the input was opened


def test_a_missing_brian2_file(tmp_path: Path, held_port: int, capsys, caplog) -> None:
    path = write_config(tmp_path, held_port, 'processor = "brian2:nonexistent.py"')
    both_refuse(tmp_path, path, capsys, caplog, "no such file")


def test_a_missing_python_file(tmp_path: Path, held_port: int, capsys, caplog) -> None:
    path = write_config(tmp_path, held_port, 'processor = "python:nonexistent.py:step"')
    both_refuse(tmp_path, path, capsys, caplog, "no such file")


def test_a_missing_python_function(tmp_path: Path, held_port: int, capsys, caplog) -> None:
    (tmp_path / "steps.py").write_text("def other(ids):\n    return ids\n")
    path = write_config(tmp_path, held_port, 'processor = "python:steps.py:step"')
    both_refuse(tmp_path, path, capsys, caplog, "has no function 'step'")


def test_a_legacy_output_cannot_carry_node_300(tmp_path: Path, held_port: int, capsys,
                                               caplog) -> None:
    path = write_config(tmp_path, held_port, "node = 300",
                        '[[output]]\nurl = "udp://127.0.0.1:9?format=legacy&neurons=64"')
    both_refuse(tmp_path, path, capsys, caplog, "legacy node address must be 0..255, got 300")


def test_a_step_with_two_arguments_is_refused_up_front(tmp_path: Path, held_port: int, capsys,
                                                       caplog) -> None:
    # Before: check said ok, and run called step(ids) on every frame (TypeError), exit 0.
    (tmp_path / "steps.py").write_text("def step(ids, now):\n    return ids\n")
    path = write_config(tmp_path, held_port, 'processor = "python:steps.py:step"')
    both_refuse(tmp_path, path, capsys, caplog, "step(ids, now) cannot be called as step(ids)")


def test_brian2_not_installed_names_the_extra(tmp_path: Path, held_port: int, capsys, caplog,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.processors.brian2 as b2proc

    monkeypatch.setitem(sys.modules, "brian2", None)  # import brian2 -> ImportError
    monkeypatch.setattr(b2proc, "_brian", None)
    (tmp_path / "net.py").write_text("def build(inputs, dt, params):\n    pass\n")
    path = write_config(tmp_path, held_port, 'processor = "brian2:net.py"')
    both_refuse(tmp_path, path, capsys, caplog, "pip install 'spikebridge[brian2]'")


REFLEX = f'processor = "brian2:{ROOT / "examples" / "reflex.py"}"\ndt_ms = 1'


def test_brian2_output_sizes_are_checked_without_compiling(tmp_path: Path, held_port: int,
                                                           capsys, caplog) -> None:
    # The README's one-liner with a 16-neuron output: reflex.py's output group has 2.
    pytest.importorskip("brian2")
    cache = tmp_path / "cache"
    path = write_config(tmp_path, held_port, REFLEX,
                        '[[output]]\nurl = "udp://127.0.0.1:9?neurons=16"',
                        f'[brian2]\ncache_dir = "{cache}"')
    both_refuse(tmp_path, path, capsys, caplog,
                "out0 takes neurons 0..15 but the processor's output population has 2")
    assert not cache.exists()  # nothing was compiled


def test_every_output_slice_is_checked(tmp_path: Path, held_port: int, capsys, caplog) -> None:
    pytest.importorskip("brian2")
    path = write_config(tmp_path, held_port, REFLEX,
                        '[[output]]\nurl = "udp://127.0.0.1:9?neurons=2"\n'
                        '[[output]]\nurl = "udp://127.0.0.1:9?neurons=1&offset=2&name=late"')
    both_refuse(tmp_path, path, capsys, caplog, "late takes neurons 2..2")


def test_a_good_brian2_config_passes_check_and_compiles_nothing(tmp_path: Path, capsys,
                                                                caplog) -> None:
    pytest.importorskip("brian2")
    cache = tmp_path / "cache"
    path = write_config(tmp_path, 9, REFLEX, '[[output]]\nurl = "udp://127.0.0.1:9?neurons=2"',
                        f'[brian2]\ncache_dir = "{cache}"')
    with caplog.at_level(logging.WARNING):
        code, text = check(path, capsys)
        gc.collect()  # the network built for the check is gone: Brian must not call it unused
    assert code == 0, text
    assert "64 inputs, 2 outputs" in text
    assert not cache.exists()
    assert "getting deleted" not in caplog.text + text


def test_a_builder_that_raises_is_refused_with_its_traceback(tmp_path: Path, capsys) -> None:
    pytest.importorskip("brian2")
    (tmp_path / "net.py").write_text(
        "def helper(n):\n    raise RuntimeError(f'no table for {n}')\n\n"
        "def build(inputs, dt, params):\n    return helper(len(inputs))\n")
    path = write_config(tmp_path, 9, 'processor = "brian2:net.py"\ndt_ms = 1')
    code, text = check(path, capsys)
    assert code == 2
    assert "Traceback (most recent call last)" in text
    assert f'File "{tmp_path / "net.py"}", line 5, in build' in text
    assert 'line 2, in helper' in text and "RuntimeError: no table for 64" in text
    assert "bridge/processors" not in text  # the user's frames, not ours


def test_the_builder_signature_is_checked(tmp_path: Path, capsys) -> None:
    pytest.importorskip("brian2")
    (tmp_path / "net.py").write_text("def build(inputs):\n    pass\n")
    path = write_config(tmp_path, 9, 'processor = "brian2:net.py"\ndt_ms = 1')
    code, text = check(path, capsys)
    assert code == 2 and "build(inputs) cannot be called as build(inputs, dt, params)" in text


# -- the python: signature contract (docs/processors.md) ----------------------------------------


@pytest.mark.parametrize(("source", "ok"), [
    ("def step(ids):\n    return ids\n", True),
    ("def step(ids, now_ns=0):\n    return ids\n", True),
    ("def step(*args):\n    return args[0]\n", True),
    ("class Step:\n    def __call__(self, ids):\n        return ids\nstep = Step()\n", True),
    ("import numpy\nstep = numpy.asarray\n", True),
    ("def step():\n    return []\n", False),
    ("def step(ids, now):\n    return ids\n", False),
    ("def step(*, ids):\n    return ids\n", False),
    ("async def step(ids):\n    return ids\n", False),
    ("def step(ids):\n    yield ids\n", False),
    ("def step(ids):\n    return ids\ndef setup(inputs):\n    return 4\n", False),
    ("def step(ids):\n    return ids\ndef post_run(net):\n    pass\n", False),
])
def test_python_step_signatures(tmp_path: Path, source: str, ok: bool) -> None:
    (tmp_path / "user.py").write_text(source)
    spec = f"python:{tmp_path / 'user.py'}:step"
    if ok:
        processor_from_spec(spec)
    else:
        with pytest.raises(ConfigError, match=r"cannot be called as|is async|is a generator"):
            processor_from_spec(spec)


def test_python_preflight_knows_the_size_unless_setup_decides(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("def step(ids):\n    return ids\n")
    (tmp_path / "sized.py").write_text(
        "def step(ids):\n    return ids\ndef setup(inputs, params):\n    return 3\n")
    plain = processor_from_spec(f"python:{tmp_path / 'plain.py'}:step")
    sized = processor_from_spec(f"python:{tmp_path / 'sized.py'}:step")
    assert plain.preflight(inputs=10, dt_ns=None, params={}) == 10
    assert sized.preflight(inputs=10, dt_ns=None, params={}) is None
    assert processor_from_spec("relay").preflight(inputs=7, dt_ns=None, params={}) == 7


def test_preflight_opens_nothing(tmp_path: Path, held_port: int) -> None:
    # The input's port is held: opening it would fail. A relay config passes.
    path = write_config(tmp_path, held_port, "", '[[output]]\nurl = "udp://127.0.0.1:9?neurons=64"')
    plan = preflight(load_config(str(path)))
    assert (plan.inputs, plan.outputs) == (64, 64)
