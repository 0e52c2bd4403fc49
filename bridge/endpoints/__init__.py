"""The endpoint registry: a URL scheme maps to an Endpoint class (pyserial's serial_for_url).

``endpoint_spec`` validates a URL against the grammar without opening anything (``check``
uses it); ``open_endpoint`` then opens the transport. Both report problems as ConfigError
naming the URL, the key and the value, and quoting the grammar for unknown keys.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bridge.codecs import CODECS, STREAM_CODECS, codec_class
from bridge.endpoints.base import Endpoint
from bridge.endpoints.url import COMMON_KEYS, GRAMMAR, EndpointURL, parse_url
from bridge.errors import ConfigError

__all__ = [
    "ENDPOINTS",
    "Endpoint",
    "EndpointSpec",
    "endpoint_class",
    "endpoint_spec",
    "make_codec",
    "open_endpoint",
    "read_key_file",
]

ENDPOINTS: dict[str, str] = {
    "udp": "bridge.endpoints.udp:UdpEndpoint",
    "mcast": "bridge.endpoints.mcast:McastEndpoint",
    "loop": "bridge.endpoints.loop:LoopEndpoint",
    "serial": "bridge.endpoints.serial:SerialEndpoint",
    "file": "bridge.endpoints.file:FileEndpoint",
    "spinnaker": "bridge.endpoints.spinnaker:SpinnakerEndpoint",
    "spif": "bridge.endpoints.spif:SpifEndpoint",
    "dv+tcp": "bridge.endpoints.dv:DvEndpoint",
    "dv+unix": "bridge.endpoints.dv:DvUnixEndpoint",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def endpoint_class(scheme: str) -> type[Endpoint]:
    """The Endpoint class for ``scheme``; ConfigError when it is not available in this build."""
    target = ENDPOINTS.get(scheme)
    if target is None:
        raise ConfigError(f"unknown scheme {scheme!r}\n{GRAMMAR}")
    module, _, attr = target.partition(":")
    try:
        cls: type[Endpoint] = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise ConfigError(f"{scheme}: endpoints are not available: {exc}") from None
    return cls


@dataclass(frozen=True)
class EndpointSpec:
    """A validated endpoint: everything needed to open it, nothing opened yet."""

    url: EndpointURL
    role: str
    name: str
    format: str
    neurons: int
    offset: int
    allow: tuple[Network, ...] = ()
    keys: tuple[bytes, ...] = ()
    source: int | None = None
    codec_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    scheme_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Where ``neurons`` came from: "url" (given), "sensor" (the format's geometry), "output"
    # (the rest of the output population from the offset, config.resolve_outputs) or "" (not
    # given and not yet resolved: it follows from the processor once built).
    sized_by: str = "url"

    @property
    def stream(self) -> bool:
        """True for byte-stream formats (serial boards and sensors)."""
        return self.format in STREAM_CODECS

    def __str__(self) -> str:
        return f"{self.name}={self.url}"


def read_key_file(path: str) -> tuple[bytes, ...]:
    """Read auth keys: one hex key per line (first signs, all verify); '#' starts a comment.

    Refuses files that group or others may read or write, as ssh does for private keys.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read key file: {exc.strerror}", key=f"key={path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError("key file is not a regular file", key=f"key={path}")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"key file mode is {stat.S_IMODE(st.st_mode):04o}; it must not be accessible to "
            f"group or others (fix: chmod 600 {path})",
            key=f"key={path}",
        )
    keys: list[bytes] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                key = bytes.fromhex(text)
            except ValueError:
                raise ConfigError(f"line {lineno} is not hex", key=f"key={path}") from None
            if len(key) < 16:
                raise ConfigError(
                    f"line {lineno}: key is {len(key)} bytes, at least 16 are needed",
                    key=f"key={path}",
                )
            keys.append(key)
    if not keys:
        raise ConfigError("key file holds no key", key=f"key={path}")
    return tuple(keys)


def _int_param(url: EndpointURL, key: str, value: str, lo: int, hi: int) -> int:
    try:
        num = int(value, 0)
    except ValueError:
        num = lo - 1
    if not lo <= num <= hi:
        raise ConfigError(f"must be an integer in {lo}..{hi}, got {value!r}", key=f"{url}: {key}")
    return num


def _grammar_for(scheme_cls: type[Endpoint] | None, fmt: str | None) -> str:
    keys = list(COMMON_KEYS)
    if scheme_cls is not None:
        keys += list(scheme_cls.KEYS)
    if fmt is not None:
        cls = _format_class(fmt)
        if cls is not None:
            keys += list(getattr(cls, "OPTIONS", {}))
    return f"accepted keys here: {', '.join(keys)}\n{GRAMMAR}"


def _format_class(fmt: str) -> Any:
    if fmt in CODECS:
        return codec_class(fmt)
    target = STREAM_CODECS.get(fmt)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError:
        return None


def endpoint_spec(text: str | EndpointURL, role: str, index: int = 0) -> EndpointSpec:
    """Validate an endpoint URL for ``role`` ('in' or 'out'); ConfigError names what is wrong."""
    url = parse_url(text) if isinstance(text, str) else text
    scheme_cls = endpoint_class(url.scheme)
    params = dict(url.params)
    default_fmt = None if url.scheme == "serial" else getattr(scheme_cls, "default_format",
                                                              "native")
    fmt = params.pop("format", default_fmt)
    if fmt is None:
        raise ConfigError(
            f"serial endpoints need format= (one of {', '.join(sorted(STREAM_CODECS))})",
            key=str(url),
        )
    known = sorted(CODECS) if url.scheme != "serial" else sorted(STREAM_CODECS)
    if fmt not in known:
        raise ConfigError(
            f"unknown format {fmt!r} for {url.scheme}: endpoints; expected one of "
            f"{', '.join(known)}",
            key=f"{url}: format",
        )
    fmt_cls = _format_class(fmt)
    if fmt_cls is None:
        raise ConfigError(f"format {fmt!r} is not available in this build", key=f"{url}: format")
    neurons_text = params.pop("neurons", None)
    neurons = 0 if neurons_text is None else _int_param(url, "neurons", neurons_text, 0, 2**32 - 1)
    offset = _int_param(url, "offset", params.pop("offset", "0"), 0, 2**32 - 1)
    if offset + neurons > 2**32:
        raise ConfigError(
            f"offset={offset} with neurons={neurons} gives ids up to {offset + neurons - 1}, "
            f"beyond the 32-bit id range (offset + neurons must be <= 2**32)",
            key=f"{url}: offset",
        )
    name = params.pop("name", f"{role}{index}")
    if not name or not all(c.isalnum() or c in "_-.:" for c in name):
        raise ConfigError(
            f"name must be letters, digits or _-.: , got {name!r}", key=f"{url}: name"
        )
    source_text = params.pop("source", None)
    source = None if source_text is None else _int_param(url, "source", source_text, 0, 65535)
    allow: list[Network] = []
    allow_text = params.pop("allow", None)
    if allow_text is not None:
        if role != "in":
            raise ConfigError("allow= applies to inputs only", key=f"{url}: allow")
        for part in allow_text.split(","):
            try:
                allow.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"not a CIDR network: {part!r}", key=f"{url}: allow") from None
    key_path = params.pop("key", None)
    keys = read_key_file(key_path) if key_path is not None else ()
    # A key the scheme shares with the codec (a camera file's width= with format=spif) goes to
    # both; any other scheme key is the scheme's alone (spinnaker's tag= is not eieio's tag=).
    shared = scheme_cls.SHARED_KEYS
    scheme_options = {k: params[k] if k in shared else params.pop(k)
                      for k in list(params) if k in scheme_cls.KEYS}
    codec_opts = getattr(fmt_cls, "OPTIONS", {})
    codec_options = {k: params.pop(k) for k in list(params) if k in codec_opts}
    for k in shared:
        params.pop(k, None)
    if params:
        unknown = ", ".join(sorted(params))
        raise ConfigError(
            f"unknown key(s) {unknown} in {url}; {_grammar_for(scheme_cls, fmt)}", key=str(url)
        )
    spec = EndpointSpec(
        url=url, role=role, name=name, format=fmt, neurons=neurons, offset=offset,
        allow=tuple(allow), keys=keys, source=source,
        codec_options=MappingProxyType(codec_options),
        scheme_options=MappingProxyType(scheme_options),
        sized_by="url" if neurons_text is not None else "",
    )
    if neurons_text is None:
        spec = _sensor_sized(spec, fmt_cls)
    else:
        make_codec(spec)  # validates the codec options and neuron count now, not at open time
    try:  # constructing opens nothing: it checks the address and the scheme's own options
        scheme_cls(url, role, spec.scheme_options)
    except ValueError as exc:
        raise ConfigError(str(exc), key=str(url)) from None
    return spec


def _sensor_sized(spec: EndpointSpec, fmt_cls: Any) -> EndpointSpec:
    """``spec`` without neurons=: sized from the format's sensor geometry where it has one.

    Formats with a geometry expose it on the codec: ``sensor_neurons`` (eDVS) or
    ``geometry.size`` (spif and Faery's UDP layouts). Other
    formats are validated with a placeholder population of one; the spec keeps ``neurons`` 0
    and ``sized_by`` "" for the config to resolve (an output) or refuse (an input).
    """
    if not getattr(fmt_cls, "needs_neurons", True):
        codec = make_codec(spec)
        size = getattr(codec, "sensor_neurons", None)
        if size is None:  # the event-camera layouts (bridge/codecs/geometry.py)
            size = getattr(getattr(codec, "geometry", None), "size", None)
        if isinstance(size, int) and size > 0:
            from dataclasses import replace

            return replace(spec, neurons=size, sized_by="sensor")
        return spec
    from dataclasses import replace

    make_codec(replace(spec, neurons=1))  # validates the options; the population comes later
    return spec


def make_codec(spec: EndpointSpec) -> Any:
    """A fresh codec (datagram Codec or stream codec) for ``spec``; ConfigError on bad options."""
    cls = _format_class(spec.format)
    try:
        return cls.from_options(spec.neurons, spec.codec_options, keys=spec.keys)
    except KeyError as exc:
        raise ConfigError(f"unknown option {exc}", key=f"{spec.url}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), key=f"{spec.url}") from None


def open_endpoint(spec: EndpointSpec) -> Endpoint:
    """Open the transport that ``spec`` names; EndpointError when the OS refuses."""
    cls = endpoint_class(spec.url.scheme)
    try:
        ep = cls(spec.url, spec.role, spec.scheme_options)
    except ValueError as exc:
        raise ConfigError(str(exc), key=str(spec.url)) from None
    ep.open()
    return ep
