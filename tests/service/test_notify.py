from __future__ import annotations

import os
import socket

import pytest

from bridge.service.notify import Notifier, SocketSender


def test_silent_no_op_outside_systemd() -> None:
    n = Notifier(environ={})
    assert not n.enabled
    assert n.ready("up") is False
    assert n.watchdog() is False
    assert (n.sent, n.errors) == (0, 0)


def test_messages_reach_the_socket(notify_socket) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": notify_socket.path})
    assert n.enabled
    assert n.extend_timeout(30_000_000, "compiling: codegen")
    assert n.ready("2 in, 1 out")
    assert n.status("in 10 fr/s\nout   5 fr/s")
    assert n.watchdog()
    assert n.reloading(5_123_456_789)
    assert n.stopping()
    assert notify_socket.messages() == [
        "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=compiling: codegen",
        "READY=1\nSTATUS=2 in, 1 out",
        "STATUS=in 10 fr/s out 5 fr/s",
        "WATCHDOG=1",
        "RELOADING=1\nMONOTONIC_USEC=5123456",
        "STOPPING=1",
    ]
    assert (n.sent, n.errors) == (6, 0)


def test_abstract_socket_address() -> None:
    name = f"spikebridge-test-{os.getpid()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + name)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert rx.recv(100) == b"READY=1"
    finally:
        rx.close()


def test_a_refused_send_is_counted_not_raised(tmp_path) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.watchdog() is False
    assert n.watchdog() is False
    assert (n.sent, n.errors) == (0, 2)


def test_relative_socket_path_is_ignored() -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": "relative/path"})
    assert not n.enabled
    with pytest.raises(ValueError):
        SocketSender("relative")


def test_extend_timeout_must_be_positive(notify_socket) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": notify_socket.path})
    with pytest.raises(ValueError):
        n.extend_timeout(0)


def test_a_full_notify_queue_never_blocks(notify_socket) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": notify_socket.path})
    # Nobody reads the socket: the kernel queue fills (net.unix.max_dgram_qlen), then every
    # further send is refused at once instead of blocking the caller.
    results = [n.watchdog() for _ in range(2000)]
    assert results[0] is True
    assert results[-1] is False
    assert n.sent + n.errors == 2000 and n.errors > 0
    assert len(notify_socket.messages()) == n.sent
