"""The pty port: a real pty, a stable link, unplug and reappearance under a new name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.emulate.port import PtyPort

pytestmark = pytest.mark.integration


def test_plug_unplug_replug_new_name_same_link(tmp_path: Path) -> None:
    link = tmp_path / "serial-by-id"
    port = PtyPort(link)
    first = port.plug()
    try:
        assert os.path.realpath(link) == first
        host = os.open(link, os.O_RDWR | os.O_NOCTTY)
        assert port.write(b"hello") == 5
        assert os.read(host, 10) == b"hello"
        os.write(host, b"cmd")
        assert port.read() == b"cmd"
        port.unplug()
        assert not link.exists()
        assert os.read(host, 10) == b""  # the host side hangs up
        os.close(host)
        assert port.write(b"x") == 0 and port.read() == b""
        second = port.plug()
        assert second != first and os.path.realpath(link) == second
        assert port.names == [first, second]
    finally:
        port.close()
    assert not link.exists()


def test_write_when_nobody_reads_returns_short() -> None:
    port = PtyPort()
    port.plug()
    try:
        total = 0
        for _ in range(1000):
            n = port.write(b"z" * 4096)
            total += n
            if n < 4096:
                break
        assert 0 < total < 1000 * 4096  # the pty buffer filled: no blocking, a short count
    finally:
        port.close()
