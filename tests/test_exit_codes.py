"""One exit-code table (0 success, 1 runtime failure, 2 bad usage or config), in --help and in
docs/cli.md, and every command follows it: a port in use, a bad URL, a bad file are 2; a
daemon that does not answer ``top`` is 1.

Commands run in-process through bridge.cli.main with loopback endpoints only.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import cli

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def call(capsys: pytest.CaptureFixture[str] | pytest.CaptureFixture[bytes] | Any,
         *args: str) -> tuple[int, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out + out.err


@pytest.fixture
def busy_udp() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that this test holds."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def closed_tcp() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_table_is_in_help_and_in_the_docs(capsys) -> None:
    code, text = call(capsys, "--help")
    assert code == 0
    docs = DOCS.read_text()
    for number, meaning in cli.EXIT_CODES:
        assert re.search(rf"^  {number}  ", text, re.M), text
        assert " ".join(text.split()).count(meaning) == 1
        row = re.search(rf"^\| {number} \| (.+) \|$", docs, re.M)
        assert row is not None, f"docs/cli.md has no row for exit code {number}"
        assert row.group(1) == meaning  # the docs say what --help says
    assert "exit codes" in text


@pytest.mark.parametrize("command", ["run", "listen", "record", "top"])
def test_a_port_in_use_is_2_for_every_command(tmp_path: Path, capfd, busy_udp: int,
                                              command: str) -> None:
    # capfd: the daemon logs to the stderr file descriptor.
    url = f"udp://127.0.0.1:{busy_udp}?neurons=4"
    args = {"run": ["run", "--in", url], "listen": ["listen", url, "--timeout", "0.1"],
            "record": ["record", url, str(tmp_path / "r.sbr"), "--duration", "0.1"],
            "top": ["top", url, "--iterations", "1"]}[command]
    code, text = call(capfd, *args)
    assert code == 2, text
    assert "Address already in use" in text


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/metrics",  # HOST:PORT is accepted (issue 13)
                                 "http://127.0.0.1:99999/metrics", "http:///metrics"])
def test_top_refuses_a_bad_metrics_url_with_2(capsys, url: str) -> None:
    code, text = call(capsys, "top", "--metrics", url, "--iterations", "1")
    assert code == 2, text
    assert url in text


def test_top_without_a_daemon_is_1(capsys, closed_tcp: int) -> None:
    url = f"http://127.0.0.1:{closed_tcp}/metrics"
    code, text = call(capsys, "top", "--metrics", url, "--iterations", "1", "--interval", "0.05")
    assert code == 1, text
    assert f"cannot read {url}" in text


def test_top_from_a_config_without_metrics_is_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[input]]\nurl = "udp://127.0.0.1:9?neurons=4"\n')
    code, text = call(capsys, "top", str(path), "--iterations", "1")
    assert code == 2 and "metrics.listen" in text


def _recording(tmp_path: Path) -> Path:
    import numpy as np

    from bridge.record.format import EndpointInfo, Header, encode_end, encode_spikes
    from bridge.record.sbrfile import SbrWriter

    rec = tmp_path / "r.sbr"
    w = SbrWriter(rec, Header((EndpointInfo("in0", "udp://127.0.0.1:5000", "in", "native", 8),),
                              start_wall_ns=0, start_mono_ns=0, run="t"))
    w.write(encode_spikes(1000, 0, 3, 0, 0, np.array([1, 2], dtype=np.uint32)))
    w.write(encode_end(2000, 1, 0, 0, 0))
    w.close()
    return rec


def test_plot_to_an_unknown_image_type_is_2(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    rec = _recording(tmp_path)
    assert call(capsys, "plot", str(rec), "-o", str(tmp_path / "x.png"))[0] == 0
    code, text = call(capsys, "plot", str(rec), "-o", str(tmp_path / "x.xyz"))
    assert code == 2 and "unknown image type 'xyz'" in text and "png" in text
    assert not (tmp_path / "x.xyz").exists()


def test_plot_with_more_rate_bins_than_can_be_drawn_is_2(tmp_path: Path, capsys) -> None:
    # Found by tests/test_cli_fuzz.py: a tiny --bin-ms was "cannot draw" (exit 1).
    pytest.importorskip("matplotlib")
    code, text = call(capsys, "plot", str(_recording(tmp_path)), "-o", str(tmp_path / "x.png"),
                      "--bin-ms", "1e-9", "--start=-1e6")
    assert code == 2 and "rate bins" in text, text


def test_convert_a_bad_csv_is_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,neuron\n0.1,x\n")
    code, text = call(capsys, "convert", str(bad), str(tmp_path / "o.sbr"))
    assert code == 2 and "line 2" in text


def test_record_to_a_file_that_cannot_be_created_is_2(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a regular file where a directory is needed
    code, text = call(capsys, "record", "udp://127.0.0.1:0?neurons=4",
                      str(blocker / "r.sbr"), "--duration", "0.1")
    assert code == 2, text
    assert f"{blocker} is not a directory" in text


def test_listen_that_loses_its_device_is_1() -> None:
    """A runtime failure: the serial device goes away while ``listen`` reads it."""
    import os
    import subprocess
    import time

    from bridge.testing import spikebridge_cmd

    master, slave = os.openpty()
    name = os.ttyname(slave)
    proc = subprocess.Popen(spikebridge_cmd("listen", f"serial:{name}?format=edvs",
                                            "--duration", "20"),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "listening on" in proc.stderr.readline()
        time.sleep(0.2)  # let it poll the device
        os.close(master)
        os.close(slave)
        err = proc.communicate(timeout=15)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
