"""``spikebridge check CONFIG.toml``: refuse what ``run`` would refuse, without opening anything.

It validates every key, then runs the same pre-flight checks ``run`` makes before it opens an
endpoint (bridge.preflight): output nodes per format, the processor's file, function and call
signature, the optional package it needs, and (Brian2) the network built without compiling,
its output population against every output's slice. It never opens a socket or a device and
never compiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bridge.config import load_config, resolve_outputs, unresolved
from bridge.endpoints import EndpointSpec
from bridge.errors import ConfigError
from bridge.tools import ArgumentParser, error


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(prog="spikebridge check", description=__doc__,
                            epilog="example: spikebridge check /etc/spikebridge/spikebridge.toml")
    parser.add_argument("config", help="path to a TOML config file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    return parser


SIZED_BY = {"url": "neurons=", "sensor": "from the sensor geometry",
            "output": "the rest of the output population from its offset"}


def population(spec: EndpointSpec) -> str:
    """The resolved population of ``spec`` and where it came from, for the summary."""
    if not spec.sized_by:
        return (f"neurons {spec.offset}.. (the rest of the processor's output population, "
                "known once its network is built)")
    return (f"neurons {spec.offset}..{spec.offset + spec.neurons - 1} ({spec.neurons}, "
            f"{SIZED_BY.get(spec.sized_by, spec.sized_by)})")


def main(argv: Sequence[str]) -> int:
    """Exit 0 and summarise a valid config; exit 2 naming the bad key otherwise."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        from bridge.preflight import preflight

        plan = preflight(cfg)
        if plan.outputs is not None and unresolved(cfg):  # sized by the built network
            cfg = replace(cfg, outputs=resolve_outputs(cfg.outputs, plan.outputs))
    except ConfigError as exc:
        return error("spikebridge check", str(exc))
    if not args.quiet:
        mode = f"stepped dt={cfg.dt_ns / 1e6:g} ms" if cfg.mode == "stepped" else "relay"
        outs = ("the outputs sized by its setup()" if plan.outputs is None
                else f"{plan.outputs} outputs")
        print(f"{args.config}: ok: node {cfg.node}, {mode}, processor {cfg.processor} "
              f"({plan.inputs} inputs, {outs})")
        for spec in (*cfg.inputs, *cfg.outputs):
            print(f"  {spec.role:<3} {spec.name:<12} {spec.url}  {population(spec)}")
        if cfg.metrics.listen:
            print(f"  metrics on {cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}")
    return 0
