"""The daemon's ``[record]`` section: parsed and validated settings, and the Recorder they build.

Parsing opens nothing; ``RecordSettings.recorder`` builds the Recorder (the caller starts it
before the loop starts). Errors are ConfigErrors naming ``record.KEY`` and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import Any

from bridge.endpoints import EndpointSpec
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.errors import ConfigError
from bridge.record.format import EndpointInfo
from bridge.record.recorder import (
    DEFAULT_BUFFER_FRAMES,
    DEFAULT_BUFFER_SPIKES,
    DEFAULT_FSYNC_INTERVAL_NS,
    DEFAULT_MIN_FREE_BYTES,
    Recorder,
)

KEYS: dict[str, str] = {
    "enabled": "false to keep the section but record nothing (default true)",
    "path": "file name; {start} becomes the UTC start time, {n} the segment number (required)",
    "endpoints": "names of the inputs/outputs to record (default: all)",
    "rotate_mb": "start a new file after this many MB (0: never)",
    "rotate_s": "start a new file after this many seconds (0: never)",
    "min_free_mb": "stop writing while the disk has less free space than this (default 256)",
    "buffer_frames": "frames the writer may fall behind before new ones are dropped (65536)",
    "buffer_spikes": "spikes the writer may fall behind before frames are dropped (16777216)",
    "fsync_s": "seconds between fsyncs: the most a power loss can lose (default 1)",
}
MB = 1_000_000


@dataclass(frozen=True)
class RecordSettings:
    """Validated ``[record]`` settings."""

    path: str
    enabled: bool = True
    endpoints: tuple[str, ...] = ()
    rotate_bytes: int = 0
    rotate_seconds: float = 0.0
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    buffer_frames: int = DEFAULT_BUFFER_FRAMES
    buffer_spikes: int = DEFAULT_BUFFER_SPIKES
    fsync_interval_ns: int = DEFAULT_FSYNC_INTERVAL_NS

    def select(self, specs: Sequence[EndpointSpec]) -> list[EndpointSpec]:
        """The specs to record, in the given order; ConfigError for a name that matches none."""
        if not self.endpoints:
            return list(specs)
        names = {s.name for s in specs}
        for name in self.endpoints:
            if name not in names:
                raise ConfigError(
                    f"no input or output is named {name!r} (names: {', '.join(sorted(names))})",
                    key="record.endpoints",
                )
        return [s for s in specs if s.name in self.endpoints]

    def recorder(
        self, specs: Sequence[EndpointSpec], *, node: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Recorder:
        """A Recorder for the selected ``specs`` (inputs and outputs); ``slot(name)`` maps them."""
        return Recorder(
            self.path,
            [endpoint_info(s) for s in self.select(specs)],
            node=node,
            rotate_bytes=self.rotate_bytes,
            rotate_seconds=self.rotate_seconds,
            min_free_bytes=self.min_free_bytes,
            buffer_frames=self.buffer_frames,
            buffer_spikes=self.buffer_spikes,
            fsync_interval_ns=self.fsync_interval_ns,
            clock=clock,
        )


def endpoint_info(spec: EndpointSpec) -> EndpointInfo:
    """How a recording's header describes the endpoint ``spec``."""
    return EndpointInfo(
        name=spec.name, url=str(spec.url), direction=spec.role, format=spec.format,
        neurons=spec.neurons, offset=spec.offset,
    )


def _number(table: Mapping[str, Any], key: str, path: str, default: float, *,
            integer: bool = False, minimum: float = 0) -> Any:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        integer and not isinstance(value, int)
    ):
        want = "an integer" if integer else "a number"
        raise ConfigError(f"expected {want}, got {value!r}", key=f"{path}.{key}")
    if value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value!r}", key=f"{path}.{key}")
    return value


def parse_config(table: Mapping[str, Any], path: str = "record") -> RecordSettings:
    """Validate the ``[record]`` table; ConfigError names the key and the value."""
    for key in table:
        if key not in KEYS:
            raise ConfigError(
                f"unknown key; [{path}] takes {', '.join(KEYS)}", key=f"{path}.{key}"
            )
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"expected true or false, got {enabled!r}", key=f"{path}.enabled")
    file_path = table.get("path")
    if not isinstance(file_path, str) or not file_path:
        raise ConfigError(
            "a file name is needed, e.g. path = \"/var/lib/spikebridge/run-{start}.sbr\"",
            key=f"{path}.path",
        )
    try:
        fields = {f for _, f, spec, _ in Formatter().parse(file_path) if f is not None or spec}
    except ValueError:
        fields = {"?"}
    if not fields <= {"start", "n"}:
        raise ConfigError(
            f"only {{start}} and {{n}} may appear in braces, got {file_path!r}", key=f"{path}.path"
        )
    endpoints = table.get("endpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError(
            f"expected an array of endpoint names, got {endpoints!r}", key=f"{path}.endpoints"
        )
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError("a name is listed twice", key=f"{path}.endpoints")
    rotate_mb = _number(table, "rotate_mb", path, 0)
    rotate_s = _number(table, "rotate_s", path, 0)
    min_free_mb = _number(table, "min_free_mb", path, DEFAULT_MIN_FREE_BYTES / MB)
    buffer_frames = _number(table, "buffer_frames", path, DEFAULT_BUFFER_FRAMES, integer=True,
                            minimum=1)
    buffer_spikes = _number(table, "buffer_spikes", path, DEFAULT_BUFFER_SPIKES, integer=True,
                            minimum=1)
    fsync_s = _number(table, "fsync_s", path, DEFAULT_FSYNC_INTERVAL_NS / 1e9)
    if rotate_mb and rotate_mb * MB < 4096:
        raise ConfigError(f"must be 0 or at least 0.004 (4 kB), got {rotate_mb!r}",
                          key=f"{path}.rotate_mb")
    return RecordSettings(
        path=file_path,
        enabled=enabled,
        endpoints=tuple(endpoints),
        rotate_bytes=round(rotate_mb * MB),
        rotate_seconds=float(rotate_s),
        min_free_bytes=round(min_free_mb * MB),
        buffer_frames=buffer_frames,
        buffer_spikes=buffer_spikes,
        fsync_interval_ns=round(fsync_s * 1e9),
    )
