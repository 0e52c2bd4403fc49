"""Endpoint URLs: the one grammar used by config files, the CLI and log lines.

Parsing only: nothing here opens a socket or a device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qsl, quote, urlencode

from bridge.errors import ConfigError

GRAMMAR = """\
  udp://HOST:PORT[?KEYS]            unicast UDP (input: bind address; output: destination)
  mcast://GROUP:PORT[?KEYS]         IPv4 multicast (iface=, ttl=, loop=)
  serial:DEVICE-OR-PYSERIAL-URL[?KEYS]   e.g. serial:/dev/serial/by-id/...?baud=4000000&format=edvs
  file:PATH.sbr[?KEYS]              a spikebridge recording (or .aedat4 .raw .dat .es .csv)
  loop://NAME[?KEYS]                in-process loopback, for tests
  spinnaker://LABEL[?KEYS]          a sPyNNaker population (notify=, tag=, board_port=, full_keys=)
  spif://HOST[:PORT][?KEYS]         a SPIF board's output stream (input; default port 3332)
  dv+tcp://HOST:PORT[?KEYS]         iniVation DV / dv-processing network event stream (TCP)
  dv+unix:///PATH[?KEYS]            the same over a Unix socket
KEYS (all schemes): format=NAME  neurons=N  offset=N  allow=CIDR[,CIDR...]  key=FILE
                    source=NODE  name=LABEL"""

COMMON_KEYS: dict[str, str] = {
    "format": "wire format (legacy, native, eieio, spif, t64_x16_y16_on8, t32_x16_y15_on1; "
              "serial adds board, edvs)",
    "neurons": "population size of this endpoint",
    "offset": "first neuron of this endpoint in the merged input or the output population",
    "allow": "comma-separated CIDR allow-list of sender addresses (inputs)",
    "key": "file holding the auth key(s) of native frames",
    "source": "the only source node accepted (inputs) or the node sent as (outputs)",
    "name": "label for metrics and logs (default in0, in1, ..., out0, ...)",
}


@dataclass(frozen=True)
class EndpointURL:
    """A parsed endpoint URL: ``scheme``, ``target`` (address, path or name) and ``params``."""

    scheme: str
    target: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        sep = "//" if self.scheme in SLASHED else ""
        query = f"?{urlencode(dict(self.params), safe=',/:')}" if self.params else ""
        return f"{self.scheme}:{sep}{self.target}{query}"

    def with_params(self, **params: str) -> EndpointURL:
        """A copy with ``params`` added or replaced."""
        merged = {**self.params, **params}
        return EndpointURL(self.scheme, self.target, MappingProxyType(merged))

    def host_port(self) -> tuple[str, int]:
        """Split ``HOST:PORT`` (IPv6 as ``[::1]:PORT``); ConfigError when malformed."""
        host, sep, port = self.target.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"expected HOST:PORT, got {self.target!r}\n{GRAMMAR}", key=str(self))
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            num = int(port)
        except ValueError:
            num = -1
        if not 0 <= num <= 65535:
            raise ConfigError(f"port must be 0..65535, got {port!r}", key=str(self))
        return host, num


SCHEMES = ("udp", "mcast", "serial", "file", "loop", "spinnaker", "spif", "dv+tcp",
           "dv+unix")
SLASHED = ("udp", "mcast", "loop", "spinnaker", "spif", "dv+tcp", "dv+unix")  # SCHEME://


def parse_url(text: str) -> EndpointURL:
    """Parse an endpoint URL; ConfigError (quoting the grammar) when it does not fit."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"unknown endpoint {text!r}; the scheme must be one of {', '.join(SCHEMES)}\n{GRAMMAR}"
        )
    if scheme in SLASHED:
        if not rest.startswith("//"):
            raise ConfigError(f"{scheme} URLs start {scheme}://, got {text!r}\n{GRAMMAR}")
        rest = rest[2:]
    target, _, query = rest.partition("?")
    if not target:
        raise ConfigError(f"{text!r} names no address, path or name\n{GRAMMAR}")
    params: dict[str, str] = {}
    # '+' stays a plus (device commands such as E+), not a space as in HTML forms.
    for key, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True,
                                strict_parsing=False):
        if key in params:
            raise ConfigError(f"key {key!r} given twice in {text!r}")
        params[key] = value
    return EndpointURL(scheme, target, MappingProxyType(params))


def quote_target(path: str) -> str:
    """Quote a path for use as a URL target (keeps / and :)."""
    return quote(path, safe="/:")
