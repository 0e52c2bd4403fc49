"""IPv4 multicast endpoints: an input joins GROUP on an interface, an output sends to GROUP.

Same non-blocking, counted-drop behaviour as udp://; only socket set-up differs.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Mapping
from typing import ClassVar

from bridge.codecs.base import parse_bool
from bridge.endpoints.udp import UdpEndpoint
from bridge.endpoints.url import EndpointURL
from bridge.errors import ConfigError, EndpointError


class McastEndpoint(UdpEndpoint):
    """mcast://GROUP:PORT?iface=NAME&ttl=N&loop=0|1."""

    scheme: ClassVar[str] = "mcast"
    KEYS: ClassVar[Mapping[str, str]] = {
        **UdpEndpoint.KEYS,
        "iface": "interface name to join on / send from (default: the kernel's choice)",
        "ttl": "multicast TTL of sent datagrams (default 1: this subnet only)",
        "loop": "deliver our own sent datagrams to local listeners (default 1)",
    }

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        super().__init__(url, role, options)
        try:
            group = ipaddress.IPv4Address(self.host)
        except ValueError:
            raise ConfigError(
                f"GROUP must be an IPv4 address, got {self.host!r}", key=str(url)
            ) from None
        if not group.is_multicast:
            raise ConfigError(f"{group} is not a multicast group (224.0.0.0/4)", key=str(url))
        self.group = str(group)
        self.iface = options.get("iface")
        self.ifindex = 0
        if self.iface is not None:
            try:
                self.ifindex = socket.if_nametoindex(self.iface)
            except OSError:
                raise ConfigError(
                    f"no network interface {self.iface!r}", key=f"{url}: iface"
                ) from None
        ttl_text = options.get("ttl", "1")
        try:
            self.ttl = int(ttl_text)
        except ValueError:
            self.ttl = -1
        if not 0 <= self.ttl <= 255:
            raise ConfigError(f"ttl must be 0..255, got {ttl_text!r}", key=f"{url}: ttl")
        try:
            self.loop = parse_bool(options.get("loop", "1"))
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"{url}: loop") from None

    def _mreqn(self) -> bytes:
        return struct.pack("=4s4si", socket.inet_aton(self.group), bytes(4), self.ifindex)

    def _new_socket(self, family: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock

    def _bind(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        # Binding the group address (not INADDR_ANY) keeps other groups on this port out.
        sock.bind((self.group, addr[1]))
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, self._mreqn())
        except OSError as exc:
            raise EndpointError(
                f"{self.url}: cannot join {self.group} on {self.iface or 'default interface'}: "
                f"{exc.strerror} (is there a multicast route? e.g. ip route add 224.0.0.0/4 "
                f"dev IFACE)"
            ) from None

    def _connect(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(self.loop))
        if self.ifindex:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, self._mreqn())
        sock.connect((self.group, addr[1]))
