"""Bad input gets a message and exit 2, never a traceback: non-finite numbers, a dt the engine
cannot keep, a config that is binary or not UTF-8, a missing optional package.

Commands run in-process through bridge.cli.main, so an uncaught exception fails the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bridge import cli
from bridge.config import MIN_DT_NS

INPUT = '[[input]]\nurl = "udp://127.0.0.1:9?neurons=4"\n'


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


@pytest.mark.parametrize(("table", "key"), [
    ("[bridge]\ndt_ms = nan", "bridge.dt_ms"),
    ("[bridge]\ndt_ms = inf", "bridge.dt_ms"),
    ("[bridge]\ndt_ms = -inf", "bridge.dt_ms"),
    ("[bridge]\nspin_us = nan", "bridge.spin_us"),
    ("[bridge]\nmiss_us = inf", "bridge.miss_us"),
    ("[bridge]\nduration_s = inf", "bridge.duration_s"),
    ("[bridge]\nmax_age_ms = nan", "bridge.max_age_ms"),
    ("[watchdog]\nstall_ms = nan", "watchdog.stall_ms"),
    ("[watchdog]\nwindow_s = inf", "watchdog.window_s"),
])
def test_non_finite_numbers_name_the_key(tmp_path: Path, capsys, table: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"{table}\n{INPUT}")
    code, err = call(capsys, "check", str(path))
    assert code == 2 and f"{key}: must be a finite number" in err, err


def test_params_may_hold_non_finite_numbers(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[processor.params]\nthreshold = inf\n{INPUT}")
    assert call(capsys, "check", str(path))[0] == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_dt_flag_non_finite(capsys, value: str) -> None:
    code, err = call(capsys, "run", "--in", "udp://127.0.0.1:9?neurons=4", f"--dt={value}")
    assert code == 2 and "argument --dt: must be a finite number" in err, err


@pytest.mark.parametrize(("args", "option"), [
    (["demo", "--seconds", "nan"], "--seconds"),
    (["top", "--metrics", "http://127.0.0.1:1/metrics", "--interval", "inf"], "--interval"),
    (["listen", "udp://127.0.0.1:0?neurons=4", "--timeout", "nan"], "--timeout"),
    (["send", "udp://127.0.0.1:9?neurons=4", "--ids", "1", "--rate", "inf"], "--rate"),
    (["emulate", "edvs", "--duration", "nan"], "--duration"),
])
def test_every_command_refuses_non_finite_options(capsys, args: list[str], option: str) -> None:
    code, err = call(capsys, *args)
    assert code == 2 and f"argument {option}: must be a finite number" in err, err


def test_a_huge_finite_time_is_refused_not_overflowed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[bridge]\ndt_ms = 1.7976931348623157e308\n{INPUT}")
    code, err = call(capsys, "check", str(path))
    assert code == 2 and "bridge.dt_ms: must be under" in err, err


def test_a_dt_below_what_the_engine_keeps_is_refused_with_the_reason(tmp_path: Path,
                                                                     capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[bridge]\ndt_ms = 0.005\n{INPUT}")
    code, err = call(capsys, "check", str(path))
    assert code == 2 and "bridge.dt_ms: must be >= 0.01 ms, got 0.005" in err
    assert "work per step" in err
    path.write_text(f"[bridge]\ndt_ms = {MIN_DT_NS / 1e6}\n{INPUT}")
    assert call(capsys, "check", str(path))[0] == 0


def test_a_config_that_is_not_utf8_quotes_a_short_escaped_excerpt(tmp_path: Path,
                                                                  capsys) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(("# " + "x" * 5000 + "\n").encode() + '[bridge]\nnode = "\xe9t\xe9"\n'
                     .encode("latin-1") + INPUT.encode())
    code, err = call(capsys, "check", str(path))
    assert code == 2 and "not UTF-8 text" in err and "(line 3)" in err
    assert "\\xe9" in err and "\xe9" not in err  # escaped, not raw
    assert len(err) < 400


@pytest.mark.parametrize("command", ["check", "run", "prebuild", "top"])
def test_a_binary_file_given_as_config(tmp_path: Path, capsys, command: str) -> None:
    # `spikebridge prebuild raster.png` printed ~90 KB of the file as its message.
    path = tmp_path / "raster.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 360)
    code, err = call(capsys, command, str(path))
    assert code == 2, err
    assert "a binary file, not a TOML config" in err
    assert len(err) < 400


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, err = call(capsys, "plot", str(tmp_path / "any.sbr"), "-o", str(tmp_path / "r.png"))
    assert code == 2 and "pip install 'spikebridge[plot]'" in err, err
