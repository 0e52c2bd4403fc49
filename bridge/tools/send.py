"""``spikebridge send URL --ids 1,7``: send spike frames, paced on an absolute schedule."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import numpy as np

from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.errors import ConfigError, EndpointError
from bridge.frame import SpikeFrame
from bridge.tools import ArgumentParser, StopFlag, error, parse_ids


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(
        prog="spikebridge send", description=__doc__,
        epilog="example: spikebridge send 'udp://127.0.0.1:5000?format=legacy&neurons=100' "
               "--ids 1,7 --count 10 --rate 100",
    )
    parser.add_argument("url", help="destination endpoint URL")
    parser.add_argument("--ids", required=True, help="neuron ids, e.g. 1,7 or 0-9 (may be empty)")
    parser.add_argument("--count", type=int, default=1, help="frames to send (0: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=0.0, help="frames per second (0: at once)")
    parser.add_argument("--node", type=int, default=1, help="source node address sent (default 1)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Send ``--count`` frames of ``--ids`` at ``--rate`` Hz; exit 0 when all were handed over."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = "spikebridge send"
    try:
        ids = parse_ids(args.ids)
    except ValueError as exc:
        return error(prog, f"--ids {args.ids!r}: {exc}")
    if args.count < 0:
        return error(prog, f"--count must be >= 0, got {args.count}")
    if args.rate < 0:
        return error(prog, f"--rate must be >= 0, got {args.rate}")
    try:
        spec = endpoint_spec(args.url, "out")
        codec = make_codec(spec)
        if spec.neurons and ids and max(ids) >= spec.neurons:
            return error(prog, f"id {max(ids)} is out of range for neurons={spec.neurons}")
        ep = open_endpoint(spec)
    except (ConfigError, EndpointError) as exc:
        return error(prog, str(exc))
    stop = StopFlag()
    arr = np.asarray(ids, dtype=np.uint32)
    period = 1e9 / args.rate if args.rate else 0.0
    start = time.monotonic_ns()
    seq = sent = refused = n = 0
    try:
        while not stop and (args.count == 0 or n < args.count):
            if period:
                delay = start + n * period - time.monotonic_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
            try:
                frame = SpikeFrame(args.node, seq, time.time_ns(), arr)
                encoded = codec.encode(frame)
            except ValueError as exc:
                return error(prog, str(exc))
            datagrams = encoded if isinstance(encoded, list) else [encoded]
            seq += len(datagrams)
            for d in datagrams:
                if ep.send(d):
                    sent += 1
                else:
                    refused += 1
            n += 1
    finally:
        ep.close()
    if not args.quiet or refused:
        print(f"sent {sent} datagram(s) in {n} frame(s)"
              + (f", {refused} refused by the kernel" if refused else ""), file=sys.stderr)
    return 0 if not refused else 1
