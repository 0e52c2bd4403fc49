"""A lab of several hosts inside this machine: network namespaces joined by a Linux bridge.

One namespace is the switch (a bridge, multicast flooded to every port); each host namespace
gets a veth into it, an address in 10.200.0.0/24 and a multicast route on that link. Nothing
is added to the machine's own network namespace and no address outside the lab is used. The
namespaces are deleted at teardown whatever happened. Needs CAP_SYS_ADMIN and CAP_NET_ADMIN;
the tests skip, with the kernel's answer, when ``ip netns add`` is refused.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.bench.probe import Metrics, ServiceProcess

SUBNET = "10.200.0"
METRICS_PORT = 9100  # each host namespace has its own loopback: the same port everywhere
CLONE_NEWNET = 0x40000000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: builds hosts in network namespaces (root or CAP_NET_ADMIN)")


class Refused(Exception):
    """The kernel or the tools refused to build the lab."""


def ip(*args: str) -> str:
    """Run ``ip ARGS``; Refused with its message on failure."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode:
        raise Refused(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


class Host:
    """One host: a network namespace with eth0 on the lab switch."""

    def __init__(self, lab: Lab, name: str, address: str) -> None:
        self.lab = lab
        self.name = name
        self.ns = f"{lab.tag}-{name}"
        self.address = address
        self.port = f"p-{name}"[:15]  # its switch port, in the switch namespace
        self.via = ("ip", "netns", "exec", self.ns)
        self.daemon: ServiceProcess | None = None

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
               ) -> socket.socket:
        """A socket created inside this host's namespace (from a thread that enters it)."""
        made: list[socket.socket | BaseException] = []

        def enter() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                made.append(socket.socket(family, kind))
            except BaseException as exc:
                made.append(exc)

        # The thread ends inside the namespace; the socket stays there wherever it is used.
        t = threading.Thread(target=enter)
        t.start()
        t.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def scrape(self) -> Metrics:
        """The host's daemon's metrics, fetched inside its namespace."""
        sock = self.socket()
        sock.settimeout(5)
        sock.connect(("127.0.0.1", METRICS_PORT))
        conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORT)
        conn.sock = sock
        try:
            conn.request("GET", "/metrics")
            return Metrics(conn.getresponse().read().decode())
        finally:
            conn.close()

    def start(self, config: Path, log: Path) -> ServiceProcess:
        """Run ``spikebridge run CONFIG`` inside this host (metrics on its loopback)."""
        self.daemon = ServiceProcess([str(config), "--metrics", f"127.0.0.1:{METRICS_PORT}"],
                                     via=self.via, log_path=log)
        return self.daemon

    def link(self, up: bool) -> None:
        """Plug or unplug this host's cable at the switch."""
        ip("-n", self.lab.switch, "link", "set", self.port, "up" if up else "down")

    def carrier(self) -> bool:
        """True once both ends of the cable are operationally up (forwarding again).

        Unplugging takes effect inside ``link(False)``; after ``link(True)`` the kernel
        brings the carrier up later, from a worker (linkwatch) that a loaded machine runs
        late: the switch port forwards, and this host's eth0 sends, only from then on.
        """
        ends = (("-n", self.lab.switch, "-o", "link", "show", self.port),
                ("-n", self.ns, "-o", "link", "show", "eth0"))
        return all(" state UP " in ip(*end) for end in ends)


class Lab:
    """The switch and the hosts; ``close`` tears everything down."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"sb{os.getpid() % 100000}"
        self.switch = f"{self.tag}-sw"
        self.hosts = {n: Host(self, n, f"{SUBNET}.{i + 1}") for i, n in enumerate(names)}
        self.made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _add(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.made.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for h in self.hosts.values():
            self._add(h.ns)
            ip("-n", self.switch, "link", "add", h.port, "type", "veth", "peer", "name", "eth0",
               "netns", h.ns)
            ip("-n", self.switch, "link", "set", h.port, "master", "br0", "up")
            ip("-n", h.ns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            ip("-n", h.ns, "link", "set", "eth0", "up")
            ip("-n", h.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")

    def close(self) -> None:
        """Stop every daemon and delete every namespace this lab made; idempotent."""
        for h in self.hosts.values():
            if h.daemon is not None:
                h.daemon.close()
                h.daemon = None
        while self.made:
            subprocess.run(["ip", "netns", "del", self.made.pop()], capture_output=True)


@pytest.fixture(scope="module")
def lab_factory() -> Iterator[type[Lab]]:
    """The Lab class, or a skip naming why this machine cannot build one."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    probe = f"sb{os.getpid() % 100000}-probe"
    proc = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"network namespaces refused: {proc.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    yield Lab
