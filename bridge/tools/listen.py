"""``spikebridge listen URL``: print each decoded frame (``--json``: one JSON object per line).

Undecodable input is counted by reason and reported on stderr at the end, never fatal.
"""

from __future__ import annotations

import json
import selectors
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.errors import ConfigError, DecodeError, EndpointError
from bridge.frame import SpikeFrame
from bridge.tools import ArgumentParser, StopFlag, add_duration, add_json, error, json_stream


def _frames(codec: Any, stream: bool, data: Any) -> tuple[list[SpikeFrame], list[str]]:
    frames: list[SpikeFrame] = []
    bad: list[str] = []
    if not stream:
        try:
            frames.append(codec.decode(data))
        except DecodeError as exc:
            bad.append(exc.reason)
        return frames, bad
    codec.feed(bytes(data))
    while True:
        try:
            frame = codec.next_frame()
        except DecodeError as exc:
            bad.append(exc.reason)
            continue
        if frame is None:
            return frames, bad
        frames.append(frame)


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(
        prog="spikebridge listen", description=__doc__,
        epilog="example: spikebridge listen 'udp://127.0.0.1:5001?format=native' --json",
    )
    parser.add_argument("url", help="endpoint URL to receive on")
    parser.add_argument("--count", type=int, default=0, help="stop after N frames (0: never)")
    add_duration(parser, "stop after SECONDS (0: never)", dest="timeout", default=0.0,
                 old=("--timeout",))
    add_json(parser, "one object per frame, one per line,")
    return parser


def main(argv: Sequence[str]) -> int:
    """Print frames until ``--count`` frames, ``--duration`` seconds or Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = "spikebridge listen"
    if args.count < 0 or args.timeout < 0:
        return error(prog, "--count and --duration must be >= 0")
    try:
        spec = endpoint_spec(args.url, "in")
        ep = open_endpoint(spec)
        codec = ep.bind_codec(make_codec(spec))  # spinnaker://: the database's key table
    except (ConfigError, EndpointError) as exc:
        return error(prog, str(exc))
    stop = StopFlag()
    failed = False
    print(f"listening on {ep.describe()}", file=sys.stderr, flush=True)
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    drops: Counter[str] = Counter()
    count = 0
    out = json_stream(args.json) if args.json else sys.stdout
    try:
        while not stop and (not args.count or count < args.count):
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                break
            ep.service(time.monotonic_ns())  # handshakes and retries (spinnaker://, spif://)
            if not sel.select(wait):
                continue
            while not args.count or count < args.count:
                try:
                    got = ep.recv()
                except EndpointError as exc:  # lost while receiving: a runtime failure
                    print(f"{prog}: {exc}", file=sys.stderr)
                    stop.set = failed = True
                    break
                if got is None:
                    break
                data, addr = got
                t_recv = time.time_ns()
                frames, bad = _frames(codec, spec.stream, data)
                drops.update(bad)
                for frame in frames:
                    count += 1
                    ids = frame.ids.tolist()
                    if args.json:
                        rec = {"source": frame.source, "seq": frame.seq,
                               "t_sent_ns": frame.t_sent_ns, "t_recv_ns": t_recv, "ids": ids}
                        if addr:
                            rec["from"] = f"{addr[0]}:{addr[1]}"
                        out.write(json.dumps(rec) + "\n")
                    else:
                        seq = "-" if frame.seq < 0 else str(frame.seq)
                        out.write(f"source={frame.source} seq={seq} n={len(ids)} ids={ids}\n")
                    if args.count and count >= args.count:
                        break
                out.flush()
    finally:
        sel.close()
        ep.close()
        if out is not sys.stdout:
            out.close()
    summary = f"{count} frame(s)"
    if drops:
        summary += "; dropped: " + ", ".join(f"{r}={n}" for r, n in sorted(drops.items()))
    if not args.quiet:
        print(summary, file=sys.stderr)
    return 1 if failed else 0
