"""record and convert: summary, --parents, suffix-chosen format, --force (issue 13, item 4)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from bridge.engine.clock import FakeClock
from bridge.record.convert import main as convert
from bridge.record.format import EndpointInfo
from bridge.record.recorder import Recorder
from bridge.record.recorder_cli import main as record

URL = "udp://127.0.0.1:0?format=native"
EPS = [EndpointInfo("in0", "udp://127.0.0.1:5000", "in", "native", 100)]


def test_record_prints_its_summary_on_stdout_even_when_piped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.sbr"
    assert record([URL, str(out), "--duration", "0.2"]) == 0  # capsys: stdout is no terminal
    text = capsys.readouterr().out
    assert re.fullmatch(rf"{re.escape(str(out))}: 0 frames, 0 spikes in [0-9.]+ s, 0 dropped\n",
                        text), text
    assert record([URL, str(tmp_path / "y.sbr"), "--duration", "0.1", "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_record_creates_a_missing_directory_only_with_parents(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a" / "b" / "x.sbr"
    assert record([URL, str(out), "--duration", "0.1"]) == 2
    assert "does not exist (--parents creates it)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert record([URL, str(out), "--duration", "0.1", "--parents"]) == 0
    assert out.is_file()


def test_record_refuses_an_unknown_suffix(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert record([URL, str(tmp_path / "x.txt"), "--duration", "0.1"]) == 2
    assert "unknown suffix" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()


def test_record_replaces_an_existing_file_only_with_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.sbr"
    out.write_bytes(b"precious")
    assert record([URL, str(out), "--duration", "0.1"]) == 2
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert record([URL, str(out), "--duration", "0.1", "--force"]) == 0
    assert out.read_bytes() != b"precious"


def test_convert_picks_the_format_by_suffix_and_says_what_it_wrote(
        sample_sbr: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "x.csv"
    assert convert([str(sample_sbr), str(csv)]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"{re.escape(str(sample_sbr))} -> {re.escape(str(csv))}: "
                        r"[1-9][0-9]* spikes\n", out), out
    assert csv.read_text().splitlines()[0].count(",") >= 2  # CSV text, not the binary format
    assert not csv.read_bytes().startswith(sample_sbr.read_bytes()[:8])
    assert convert([str(sample_sbr), str(tmp_path / "x.bin")]) == 2
    assert "unknown suffix" in capsys.readouterr().err


def test_convert_force_and_parents(sample_sbr: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "x.npz"
    dst.write_bytes(b"keep")
    assert convert([str(sample_sbr), str(dst)]) == 2
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert dst.read_bytes() == b"keep"
    assert convert([str(sample_sbr), str(dst), "--force"]) == 0
    deep = tmp_path / "d" / "x.npz"
    assert convert([str(sample_sbr), str(deep)]) == 2
    assert "does not exist (--parents creates it)" in capsys.readouterr().err
    assert convert([str(sample_sbr), str(deep), "--parents"]) == 0 and deep.is_file()


def test_the_daemon_recorder_makes_its_directory_and_logs_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state" / "recordings" / "run.sbr"
    rec = Recorder(path, EPS, clock=FakeClock(), min_free_bytes=0)
    with caplog.at_level(logging.INFO):
        rec.start(thread=False)
    rec.close()
    assert path.parent.is_dir()
    assert f"created the recording directory {path.parent}" in caplog.text
