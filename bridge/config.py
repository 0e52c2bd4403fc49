"""Configuration: TOML (or CLI flags) -> frozen dataclasses, validated before anything starts.

Every error is a ConfigError naming the key path and the value. Nothing here opens a socket,
a device or a file other than the config and key files it is asked to read.
"""

from __future__ import annotations

import importlib
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from bridge.endpoints import EndpointSpec, endpoint_spec
from bridge.endpoints.url import EndpointURL, parse_url
from bridge.engine.pacer import POLICIES
from bridge.engine.router import Span, merged_size
from bridge.errors import ConfigError
from bridge.processors import SPEC_GRAMMAR

MODES = ("relay", "stepped")

# The shortest step the engine keeps. Its own work per step (poll, admit, step, send) costs
# 5.4 µs with the relay processor on the 2-core development VM (docs/cli.md); below 10 µs a
# step leaves no time to wait for input, the schedule is all catch-up and the finest
# step-lateness bucket (10 µs) can no longer tell a late step from a kept one.
MIN_DT_NS = 10_000
MAX_NS = 2**62  # any time in the config: about 146 years, well inside int64 nanoseconds

# Sections owned by other subsystems: name -> "module:function" taking (table, key path) and
# returning a frozen settings object (ConfigError on a bad key).
SECTION_PARSERS: dict[str, str] = {
    "realtime": "bridge.engine.realtime:parse_config",
    "record": "bridge.record.config:parse_config",
    "brian2": "bridge.processors.brian2:parse_config",
    "watchdog": "bridge.service.watchdog:parse_config",
}


@dataclass(frozen=True)
class MetricsConfig:
    """Where the Prometheus endpoint listens; ``listen`` None means no metrics server."""

    listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class BridgeConfig:
    """One bridge: its node, mode, processor, endpoints and the subsystem sections."""

    inputs: tuple[EndpointSpec, ...]
    outputs: tuple[EndpointSpec, ...]
    node: int = 1
    mode: str = "relay"
    processor: str = "relay"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    dt_ns: int = 1_000_000
    policy: str = "catch-up"
    spin_ns: int = 0
    miss_ns: int = 1_000_000
    duration_ns: int | None = None
    repetitions: int = 1
    queue_frames: int = 4096
    max_age_ns: int | None = None
    on_error: str = "skip"
    metrics: MetricsConfig = MetricsConfig()
    sections: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "<cli>"
    # Keys the command line set over the file's: "bridge.dt_ms" -> (file's value, new value).
    overridden: Mapping[str, tuple[Any, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def section(self, name: str) -> Any:
        """The parsed settings of subsystem section ``name``, or None when absent."""
        return self.sections.get(name)


def _ms(ns: int | None) -> str:
    return "0" if ns is None else f"{ns / 1e6:g}"


# BridgeConfig field -> (the config key that sets it, its value as the config writes it).
_FIELD_KEYS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "node": ("bridge.node", str),
    "mode": ("bridge.mode", repr),
    "processor": ("bridge.processor", repr),
    "params": ("[processor.params]", lambda v: "{" + ", ".join(
        f"{k} = {x!r}" for k, x in v.items()) + "}"),
    "dt_ns": ("bridge.dt_ms", _ms),
    "policy": ("bridge.policy", repr),
    "spin_ns": ("bridge.spin_us", lambda v: f"{v / 1e3:g}"),
    "miss_ns": ("bridge.miss_us", lambda v: f"{v / 1e3:g}"),
    "duration_ns": ("bridge.duration_s", lambda v: "0" if v is None else f"{v / 1e9:g}"),
    "repetitions": ("bridge.repetitions", str),
    "queue_frames": ("bridge.queue_frames", str),
    "max_age_ns": ("bridge.max_age_ms", _ms),
    "on_error": ("bridge.on_error", repr),
    "metrics": ("metrics.listen", lambda v: "(none)" if v.listen is None else repr(
        f"{v.listen[0]}:{v.listen[1]}")),
    "inputs": ("[[input]]", lambda v: ", ".join(str(s) for s in v)),
    "outputs": ("[[output]]", lambda v: ", ".join(str(s) for s in v)),
}


def describe_change(name: str, old: BridgeConfig, new: BridgeConfig) -> str:
    """A changed BridgeConfig field in config terms: ``bridge.dt_ms 1 -> 2``."""
    entry = _FIELD_KEYS.get(name)
    if entry is None:
        return name
    key, show = entry
    return f"{key} {show(getattr(old, name))} -> {show(getattr(new, name))}"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _get(
    table: Mapping[str, Any], key: str, path: str, kinds: tuple[type, ...], default: Any
) -> Any:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"expected a number, got {value!r}", key=f"{path}.{key}")
    if not isinstance(value, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(
            f"expected {want}, got {_type_name(value)} {value!r}", key=f"{path}.{key}"
        )
    return value


def _positive_ns(value: float | int, unit_ns: int, key: str, allow_zero: bool = False) -> int:
    if not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", key=key)
    if abs(float(value) * unit_ns) >= MAX_NS:
        raise ConfigError(f"must be under {MAX_NS / unit_ns:g}, got {value!r}", key=key)
    ns = round(float(value) * unit_ns)
    if ns < 0 or (ns == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}", key=key)
    return ns


def parse_listen(text: str, key: str = "metrics.listen") -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``:PORT``, ``PORT`` or ``http://HOST:PORT/metrics`` for a listening
    socket (host: 127.0.0.1)."""
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme not in ("http", "https"):
            raise ConfigError(f"expected HOST:PORT or an http:// URL, got {text!r}", key=key)
        text = rest.partition("/")[0]
    if text.isdigit():
        text = f":{text}"
    if text.startswith(":"):
        text = f"127.0.0.1{text}"
    try:
        return EndpointURL("udp", text).host_port()
    except ConfigError:
        raise ConfigError(f"expected HOST:PORT, got {text!r}", key=key) from None


def _endpoints(items: Any, role: str, path: str) -> tuple[EndpointSpec, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError("expected an array of tables ([[...]]) or of URL strings", key=path)
    specs = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            text = item
            extra: dict[str, str] = {}
        elif isinstance(item, dict):
            if "url" not in item:
                raise ConfigError("missing url", key=where)
            text = item["url"]
            if not isinstance(text, str):
                raise ConfigError(f"expected a URL string, got {text!r}", key=f"{where}.url")
            extra = {}
            for k, v in item.items():
                if k == "url":
                    continue
                if isinstance(v, bool):
                    v = "1" if v else "0"
                if isinstance(v, list):
                    v = ",".join(str(x) for x in v)
                if not isinstance(v, str | int | float):
                    raise ConfigError(f"expected a scalar, got {v!r}", key=f"{where}.{k}")
                extra[k] = str(v)
        else:
            raise ConfigError(f"expected a URL or a table, got {item!r}", key=where)
        try:
            url = parse_url(text)
            for k in extra:
                if k in url.params:
                    raise ConfigError(f"{k} given both in the URL and as a key", key=f"{where}.{k}")
            specs.append(endpoint_spec(url.with_params(**extra), role, i))
        except ConfigError as exc:
            raise ConfigError(str(exc), key=where) from None
    return tuple(specs)


def _section(name: str, table: Any) -> Any:
    target = SECTION_PARSERS[name]
    module, _, attr = target.partition(":")
    try:
        parse: Callable[[Mapping[str, Any], str], Any] = getattr(
            importlib.import_module(module), attr
        )
    except (ImportError, AttributeError):
        raise ConfigError(f"section [{name}] is not supported by this build", key=name) from None
    if not isinstance(table, dict):
        raise ConfigError("expected a table", key=name)
    return parse(table, name)


BRIDGE_KEYS = {
    "node", "mode", "processor", "dt_ms", "policy", "spin_us", "miss_us", "duration_s",
    "repetitions", "queue_frames", "max_age_ms", "on_error",
}
ON_ERROR = ("skip", "stop")
TOP_KEYS = {"bridge", "input", "output", "processor", "metrics", *SECTION_PARSERS}


def _refuse_non_finite(value: Any, path: str) -> None:
    """ConfigError naming the key of the first nan or inf (user params may hold them)."""
    if path == "processor.params":
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", key=path or "<document>")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_non_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _refuse_non_finite(v, f"{path}[{i}]")


def build_config(doc: Mapping[str, Any], source: str = "<config>") -> BridgeConfig:
    """Validate a parsed TOML document (or the same shape built from CLI flags)."""
    _refuse_non_finite(doc, "")
    for key in doc:
        if key not in TOP_KEYS:
            raise ConfigError(
                f"unknown section; expected one of {', '.join(sorted(TOP_KEYS))}", key=key
            )
    br = doc.get("bridge", {})
    if not isinstance(br, dict):
        raise ConfigError("expected a table", key="bridge")
    for key in br:
        if key not in BRIDGE_KEYS:
            raise ConfigError(
                f"unknown key; [bridge] takes {', '.join(sorted(BRIDGE_KEYS))}", key=f"bridge.{key}"
            )
    node = _get(br, "node", "bridge", (int,), 1)
    if not 0 <= node <= 65535:
        raise ConfigError(f"must be 0..65535, got {node}", key="bridge.node")
    processor = _get(br, "processor", "bridge", (str,), "relay")
    kind = processor.partition(":")[0]
    if kind not in ("relay", "python", "brian2", "nir"):
        raise ConfigError(f"unknown processor {processor!r}; expected {SPEC_GRAMMAR}",
                          key="bridge.processor")
    default_mode = "stepped" if kind in ("brian2", "nir") or "dt_ms" in br else "relay"
    mode = _get(br, "mode", "bridge", (str,), default_mode)
    if mode not in MODES:
        raise ConfigError(f"must be one of {', '.join(MODES)}, got {mode!r}", key="bridge.mode")
    if kind in ("brian2", "nir") and mode != "stepped":
        raise ConfigError(f"a {kind} processor runs in stepped mode only", key="bridge.mode")
    dt_ms = _get(br, "dt_ms", "bridge", (int, float), 1.0)
    dt_ns = _positive_ns(dt_ms, 1_000_000, "bridge.dt_ms")
    if dt_ns < MIN_DT_NS:
        raise ConfigError(f"must be >= {MIN_DT_NS / 1e6:g} ms, got {dt_ms!r}: the engine's own "
                          "work per step takes several µs, so a shorter step cannot be kept "
                          "(see docs/cli.md)", key="bridge.dt_ms")
    policy = _get(br, "policy", "bridge", (str,), "catch-up")
    if policy not in POLICIES:
        raise ConfigError(f"must be one of {', '.join(POLICIES)}, got {policy!r}",
                          key="bridge.policy")
    spin_ns = _positive_ns(_get(br, "spin_us", "bridge", (int, float), 0), 1000, "bridge.spin_us",
                           allow_zero=True)
    if spin_ns >= dt_ns:
        raise ConfigError(f"must be shorter than dt ({dt_ns / 1e6} ms)", key="bridge.spin_us")
    miss_us = _get(br, "miss_us", "bridge", (int, float), 1000)
    miss_ns = _positive_ns(miss_us, 1000, "bridge.miss_us")
    duration = _get(br, "duration_s", "bridge", (int, float), 0)
    duration_ns = (
        _positive_ns(duration, 1_000_000_000, "bridge.duration_s", allow_zero=True) or None
    )
    repetitions = _get(br, "repetitions", "bridge", (int,), 1)
    if repetitions < 1:
        raise ConfigError(f"must be >= 1, got {repetitions}", key="bridge.repetitions")
    if repetitions > 1 and duration_ns is None:
        raise ConfigError("repetitions > 1 needs a finite bridge.duration_s",
                          key="bridge.repetitions")
    queue_frames = _get(br, "queue_frames", "bridge", (int,), 4096)
    if not 1 <= queue_frames <= 1 << 20:
        raise ConfigError(f"must be 1..1048576, got {queue_frames}", key="bridge.queue_frames")
    on_error = _get(br, "on_error", "bridge", (str,), "skip")
    if on_error not in ON_ERROR:
        raise ConfigError(f"must be one of {', '.join(ON_ERROR)}, got {on_error!r}",
                          key="bridge.on_error")
    max_age = _get(br, "max_age_ms", "bridge", (int, float), 0)
    max_age_ns = _positive_ns(max_age, 1_000_000, "bridge.max_age_ms", allow_zero=True) or None

    proc = doc.get("processor", {})
    if not isinstance(proc, dict):
        raise ConfigError("expected a table", key="processor")
    for key in proc:
        if key != "params":
            raise ConfigError("unknown key; [processor] takes params", key=f"processor.{key}")
    params = proc.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError("expected a table", key="processor.params")

    metrics_tab = doc.get("metrics", {})
    if not isinstance(metrics_tab, dict):
        raise ConfigError("expected a table", key="metrics")
    for key in metrics_tab:
        if key != "listen":
            raise ConfigError("unknown key; [metrics] takes listen", key=f"metrics.{key}")
    listen_text = _get(metrics_tab, "listen", "metrics", (str,), "")
    metrics = MetricsConfig(parse_listen(listen_text) if listen_text else None)

    inputs = _endpoints(doc.get("input"), "in", "input")
    outputs = _endpoints(doc.get("output"), "out", "output")
    if not inputs:
        raise ConfigError("at least one input is needed ([[input]] url = ... or --in URL)",
                          key="input")
    for spec in inputs:
        if spec.neurons == 0:
            raise ConfigError(
                f"{spec.url}: an input needs neurons=N: its population is what the peer sends, "
                "and nothing else tells it (only sensor formats such as edvs and spif take it "
                "from their width and height)", key="input")
    if kind == "relay":
        outputs = resolve_outputs(outputs, merged_size(
            [Span(s.offset, s.offset + s.neurons) for s in inputs]), "the merged input")
    names = [s.name for s in (*inputs, *outputs)]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"endpoint names must be unique, repeated: {', '.join(sorted(dup))}",
                          key="input/output name")
    sections = {name: _section(name, doc[name]) for name in SECTION_PARSERS if name in doc}
    record = sections.get("record")
    for name in getattr(record, "endpoints", ()) or ():
        if name not in names:
            raise ConfigError(f"no endpoint is named {name!r}; names: {', '.join(names)}",
                              key="record.endpoints")
    return BridgeConfig(
        inputs=inputs, outputs=outputs, node=node, mode=mode, processor=processor,
        params=MappingProxyType(dict(params)), dt_ns=dt_ns, policy=policy, spin_ns=spin_ns,
        miss_ns=miss_ns, duration_ns=duration_ns, repetitions=repetitions,
        queue_frames=queue_frames, max_age_ns=max_age_ns, on_error=on_error, metrics=metrics,
        sections=MappingProxyType(sections), source=source,
    )


def resolve_outputs(outputs: Sequence[EndpointSpec], size: int,
                    what: str = "the processor's output") -> tuple[EndpointSpec, ...]:
    """Give each output without neurons= the rest of the output population from its offset.

    ``size`` is the output population (relay: the merged input population; Brian2, NIR:
    the built network's output groups). ConfigError when an offset leaves nothing to take.
    """
    resolved = []
    for spec in outputs:
        if not spec.sized_by:
            if spec.offset >= size:
                raise ConfigError(
                    f"{spec.url}: offset={spec.offset} leaves nothing of {what} population "
                    f"({size} neurons) for neurons= to follow; set neurons= or a smaller "
                    "offset", key="output")
            spec = replace(spec, neurons=size - spec.offset, sized_by="output")
        resolved.append(spec)
    return tuple(resolved)


def unresolved(cfg: BridgeConfig) -> list[EndpointSpec]:
    """The outputs whose population follows from a processor not yet built."""
    return [s for s in cfg.outputs if not s.sized_by]


def _resolve_processor(spec: str, base: str) -> str:
    """Make a ``python:FILE.py:FN``, ``brian2:FILE.py`` or ``nir:FILE.nir`` path relative to
    ``base``."""
    kind, sep, arg = spec.partition(":")
    if kind == "brian2" and arg:
        path, colon, builder = arg.partition(":")
        if not os.path.isabs(path):
            return f"brian2:{os.path.join(base, path)}{colon}{builder}"
    if kind == "nir" and arg and not os.path.isabs(arg):
        return f"nir:{os.path.join(base, arg)}"
    if kind == "python" and sep:
        module, colon, func = arg.rpartition(":")
        if module.endswith(".py") and not os.path.isabs(module):
            return f"python:{os.path.join(base, module)}{colon}{func}"
    return spec


CLI_SOURCE = "<command line>"  # BridgeConfig.source of a config built from --in/--out
MAX_CONFIG_BYTES = 1 << 20


def excerpt(data: bytes, at: int = 0, width: int = 24) -> str:
    """A short, escaped excerpt of ``data`` around byte ``at``, safe to print in a message."""
    lo = max(0, at - width // 2)
    part = data[lo:lo + width]
    text = repr(part)  # b'...': printable ASCII as is, everything else escaped
    return f"{'...' if lo else ''}{text}{'...' if lo + width < len(data) else ''}"


def read_config_text(path: str) -> str:
    """The text of a config file; ConfigError (quoting at most a short excerpt) when it is
    unreadable, too large, binary or not UTF-8."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", key=path) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file",
                          key=path)
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"a binary file, not a TOML config (byte {nul} is NUL; starts "
                          f"{excerpt(data)})", key=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text: byte {exc.start} (line {line}) is "
                          f"0x{data[exc.start]:02x}, near {excerpt(data, exc.start)}; "
                          "a config is TOML in UTF-8", key=path) from None


def load_config(path: str, overrides: Mapping[str, Any] | None = None) -> BridgeConfig:
    """Read and validate a TOML config file (processor files relative to its directory).

    ``overrides`` ({"bridge.dt_ms": 0.5, "metrics.listen": "127.0.0.1:9877"}) replace the
    file's keys before validation, so they are checked as the file's own would be; the
    result's ``overridden`` names each with its old and new value.
    """
    text = read_config_text(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", key=path) from None
    bridge = doc.get("bridge")
    if isinstance(bridge, dict) and isinstance(bridge.get("processor"), str):
        base = os.path.dirname(os.path.abspath(path))
        doc = {**doc, "bridge": {**bridge,
                                 "processor": _resolve_processor(bridge["processor"], base)}}
    changed: dict[str, tuple[Any, Any]] = {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError("expected a table", key=section)
        changed[dotted] = (table.get(key), value)
        doc = {**doc, section: {**table, key: value}}
    cfg = build_config(doc, source=path)
    return replace(cfg, overridden=MappingProxyType(changed)) if changed else cfg


def config_from_flags(
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    processor: str = "relay",
    node: int | None = None,
    dt_ms: float | None = None,
    duration_s: float | None = None,
    repetitions: int | None = None,
    metrics: str | None = None,
    mode: str | None = None,
) -> BridgeConfig:
    """The config that ``spikebridge run --in ... --out ...`` describes."""
    br: dict[str, Any] = {"processor": processor}
    if node is not None:
        br["node"] = node
    if dt_ms is not None:
        br["dt_ms"] = dt_ms
    if duration_s is not None:
        br["duration_s"] = duration_s
    if repetitions is not None:
        br["repetitions"] = repetitions
    if mode is not None:
        br["mode"] = mode
    doc: dict[str, Any] = {"bridge": br, "input": list(inputs), "output": list(outputs)}
    if metrics:
        doc["metrics"] = {"listen": metrics}
    return build_config(doc, source=CLI_SOURCE)
