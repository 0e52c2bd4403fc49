"""``spikebridge run``: the daemon's life cycle around the engine.

Config -> open every endpoint and build the processor -> run the loop in this thread ->
on SIGTERM/SIGINT drain, flush, post-run hook, exit 0. Bad config or an endpoint that cannot
be opened exits 2 before anything runs. Signal handlers only set flags on the bridge.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence

from bridge.config import BridgeConfig, config_from_flags, load_config
from bridge.engine.loop import Bridge
from bridge.errors import ConfigError, EndpointError
from bridge.processors import SPEC_GRAMMAR
from bridge.tools import ArgumentParser, error

log = logging.getLogger("spikebridge")


def parse_args(argv: Sequence[str]) -> tuple[BridgeConfig | None, str | None]:
    """Build the config from ``CONFIG.toml`` or from --in/--out flags: (config, error)."""
    parser = ArgumentParser(
        prog="spikebridge run",
        description="Run the bridge: from a TOML config, or from --in/--out URLs with no file.",
        epilog="examples:\n"
        "  spikebridge run /etc/spikebridge/spikebridge.toml\n"
        "  spikebridge run --in 'udp://0.0.0.0:50001?format=legacy&neurons=100' \\\n"
        "                  --out 'udp://10.0.0.2:50002?format=legacy&neurons=100'\n"
        "  spikebridge run --in 'udp://127.0.0.1:50001?neurons=100' --out ... \\\n"
        "                  --processor brian2:examples/reflex.py --dt 1 --duration 10",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", nargs="?", help="TOML config file")
    parser.add_argument("--in", dest="inputs", action="append", default=[], metavar="URL",
                        help="input endpoint URL (repeat for several)")
    parser.add_argument("--out", dest="outputs", action="append", default=[], metavar="URL",
                        help="output endpoint URL (repeat for several)")
    parser.add_argument("--processor", default="relay", metavar="SPEC",
                        help=f"{SPEC_GRAMMAR} (default relay)")
    parser.add_argument("--node", type=int, help="this node's address (default 1)")
    parser.add_argument("--dt", type=float, metavar="MS", help="step in ms (implies stepped mode)")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="seconds per run (default: run until stopped)")
    parser.add_argument("--repetitions", type=int, metavar="N", help="runs (needs --duration)")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics here (default: config, else off)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.config:
            if args.inputs or args.outputs:
                return None, "give a CONFIG file or --in/--out URLs, not both"
            cfg = load_config(args.config)
            overrides = {k: v for k, v in (("node", args.node), ("dt", args.dt),
                         ("duration", args.duration), ("repetitions", args.repetitions)) if v}
            if overrides:
                return None, (f"--{next(iter(overrides))} goes with --in/--out; "
                              "set it in the config file")
            if args.metrics:
                from dataclasses import replace

                from bridge.config import MetricsConfig, parse_listen

                cfg = replace(cfg, metrics=MetricsConfig(parse_listen(args.metrics, "--metrics")))
        else:
            if not args.inputs:
                return None, "give a CONFIG file, or at least one --in URL"
            cfg = config_from_flags(
                args.inputs, args.outputs, processor=args.processor, node=args.node,
                dt_ms=args.dt, duration_s=args.duration, repetitions=args.repetitions,
                metrics=args.metrics,
            )
    except ConfigError as exc:
        return None, str(exc)
    return cfg, None


def run(cfg: BridgeConfig) -> int:
    """Open, run and close one bridge; the process exit code."""
    bridge = Bridge(cfg)
    try:
        bridge.open(on_progress=lambda msg: log.info("%s", msg))
    except (ConfigError, EndpointError) as exc:
        log.error("%s", exc)
        return 2
    for port in bridge.inputs:
        log.info("input  %-10s %s", port.spec.name, port.ep.describe())
    for out in bridge.outputs:
        log.info("output %-10s %s", out.spec.name, out.ep.describe())
    signal.signal(signal.SIGTERM, lambda *_: bridge.request_stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.request_stop())
    signal.signal(signal.SIGHUP, lambda *_: bridge.request_reload())
    log.info("running (%s, processor %s)", cfg.mode, cfg.processor)
    try:
        bridge.run()
    finally:
        bridge.close()
    log.info("stopped")
    return 0


def main(argv: Sequence[str]) -> int:
    """``spikebridge run``: exit 0 after a clean stop, 2 on bad config or arguments."""
    cfg, problem = parse_args(argv)
    if cfg is None:
        return error("spikebridge run", problem or "bad arguments")
    return run(cfg)
