"""What ``run`` would refuse, found before anything is opened or compiled: ``check``, ``run``
and ``prebuild`` all call ``preflight``, so a config that ``check`` passes is not refused by
``run`` for any reason that can be known without the network or the devices.

It checks each output's node against its format's address range, loads the processor (its
file, module, function and call signature, and the optional package it needs) and builds it
without compiling (``Processor.preflight``) to check the output population against every
output's slice. It never opens a socket, a device or a recording, never compiles, never
runs a step, and leaves nothing behind (the processor it builds is closed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.config import BridgeConfig
from bridge.endpoints import EndpointSpec, make_codec
from bridge.engine.router import Span, merged_size
from bridge.errors import ConfigError
from bridge.frame import SpikeFrame
from bridge.processors import processor_from_spec

_EMPTY = np.empty(0, dtype=np.uint32)


@dataclass(frozen=True)
class Plan:
    """What the checks found: merged input size, output size (None: known after setup)."""

    inputs: int
    outputs: int | None


def check_node(spec: EndpointSpec, node: int) -> None:
    """ConfigError when output ``spec`` cannot carry ``node`` (legacy: 0..255)."""
    source = node if spec.source is None else spec.source
    try:
        make_codec(spec).encode(SpikeFrame(source, 0, 0, _EMPTY))
    except ValueError as exc:
        raise ConfigError(f"cannot send as node {source}: {exc}",
                          key=f"output {spec.url}") from None


def check_outputs(cfg: BridgeConfig, size: int) -> None:
    """ConfigError naming the first output whose slice lies beyond an output population of
    ``size`` neurons."""
    for spec in cfg.outputs:
        hi = spec.offset + spec.neurons
        if hi > size:
            raise ConfigError(
                f"{spec.name} takes neurons {spec.offset}..{hi - 1} but the processor's output "
                f"population has {size}", key=f"output {spec.url}")


def preflight(cfg: BridgeConfig) -> Plan:
    """Every check ``run`` makes that needs no socket, device or compiler; ConfigError on the
    first that fails."""
    for spec in cfg.outputs:
        check_node(spec, cfg.node)
    stepped = cfg.mode == "stepped"
    n_in = merged_size([Span(s.offset, s.offset + s.neurons) for s in cfg.inputs])
    proc = processor_from_spec(cfg.processor)
    try:
        proc.configure(cfg.section(cfg.processor.partition(":")[0]))
        if proc.stepped_only and not stepped:
            raise ConfigError(f"{cfg.processor} needs stepped mode", key="bridge.mode")
        size = proc.preflight(inputs=n_in, dt_ns=cfg.dt_ns if stepped else None,
                              params=cfg.params)
    finally:
        proc.close()
    if size is not None:
        check_outputs(cfg, size)
    return Plan(inputs=n_in, outputs=size)
