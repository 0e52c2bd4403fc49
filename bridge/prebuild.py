"""``spikebridge prebuild CONFIG``: compile a config's Brian2 network into its cache ahead of time.

It builds the network exactly as the daemon does (same inputs, dt, params and cache) and
prepares a run, so every Cython code object lands in ``[brian2] cache_dir``; a daemon started
afterwards loads them instead of compiling. It never opens an endpoint or runs a step.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

from bridge.config import load_config
from bridge.engine.router import Span, merged_size
from bridge.errors import ConfigError
from bridge.preflight import preflight
from bridge.tools import ArgumentParser


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(
        prog="spikebridge prebuild",
        description="Compile a config's Brian2 network into its code cache ahead of time, "
                    "so that the daemon starts without compiling.",
        epilog="example: spikebridge prebuild examples/reflex.toml",
    )
    parser.add_argument("config", help="the TOML config the daemon will run")
    parser.add_argument("--cache-dir", help="compile into DIR instead of [brian2] cache_dir")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    return parser


def main(argv: Sequence[str]) -> int:
    """Compile and report; exit 0 done, 1 failure, 2 bad config or arguments."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        from bridge.processors.brian2 import Brian2Processor, Brian2Settings

        cfg = load_config(args.config)
        kind, _, spec = cfg.processor.partition(":")
        if kind != "brian2":
            raise ConfigError(f"nothing to prebuild: the processor is {cfg.processor!r}, not "
                              "brian2:...", key="bridge.processor")
        preflight(cfg)  # refuse what the daemon would refuse before compiling for a minute
        settings = cfg.section("brian2") or Brian2Settings()
        if args.cache_dir:
            settings = dataclasses.replace(settings, cache_dir=args.cache_dir)
        proc = Brian2Processor.from_spec(spec)
        proc.configure(settings)
        inputs = merged_size([Span(s.offset, s.offset + s.neurons) for s in cfg.inputs])
        started = time.monotonic()
        progress = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
        try:
            proc.setup(inputs=inputs, dt_ns=cfg.dt_ns, params=cfg.params, on_progress=progress)
        finally:
            proc.close()
    except ConfigError as exc:
        print(f"spikebridge prebuild: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"spikebridge prebuild: failed: {exc!r}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    if settings.target != "cython":
        print(f"target {settings.target}: nothing to compile ({elapsed:.1f} s)")
        return 0
    print(f"{len(proc.compiled)} code objects compiled, {len(proc.loaded)} already cached, "
          f"in {settings.resolved_cache_dir()} ({elapsed:.1f} s)")
    return 0
