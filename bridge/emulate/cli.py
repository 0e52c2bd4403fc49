"""``spikebridge emulate edvs|board``: run a device emulator behind a pty until stopped.

Prints the path to open (the ``--link`` symlink when given, else the pty) on the first line
of stdout, then runs until SIGINT/SIGTERM or ``--duration``. At the end it stops producing,
lets its buffer drain (up to 2 s), and ``--stats`` prints the counters as one JSON line.
A thin CLI: the emulators live in edvs.py and board.py.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from bridge.codecs.edvs import VARIANTS
from bridge.emulate.board import MODES, BoardEmulator
from bridge.emulate.device import Emulator
from bridge.emulate.edvs import EdvsEmulator
from bridge.emulate.faults import Faults
from bridge.tools import ArgumentParser, add_duration


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    p = ArgumentParser(  # type=float refuses nan and inf
        prog="spikebridge emulate",
        description="Run an eDVS sensor or spiking board emulator behind a pseudo-terminal.",
        epilog="example: spikebridge emulate edvs --link /tmp/edvs --rate 100000 --baud 12000000"
               "\n         spikebridge run --in 'serial:/tmp/edvs?format=edvs&baud=12000000' ...",
    )
    p.add_argument("device", choices=("edvs", "board"))
    p.add_argument("--link", metavar="PATH",
                   help="stable symlink to the pty (kept across unplug/replug)")
    add_duration(p, "stop after SECONDS (default: run until stopped)", old=())
    p.add_argument("--stats", action="store_true", help="print counters as JSON at exit")
    p.add_argument("--seed", type=int, default=0, help="random seed (noise, patterns)")
    f = p.add_argument_group("faults")
    f.add_argument("--baud", type=int, default=0,
                   help="pace output at the line rate, baud/10 bytes/s (0: no pacing)")
    f.add_argument("--flip", type=float, default=0.0, metavar="P", help="bit flip per byte")
    f.add_argument("--insert", type=float, default=0.0, metavar="P",
                   help="inserted byte per byte")
    f.add_argument("--delete", type=float, default=0.0, metavar="P",
                   help="deleted byte per byte")
    f.add_argument("--split", type=int, default=0, metavar="N",
                   help="write at most N bytes per write (1: byte by byte)")
    f.add_argument("--garbage", type=int, default=0, metavar="N",
                   help="N random bytes when the host first talks after a plug-in")
    f.add_argument("--unplug-every", type=float, default=0.0, metavar="S",
                   help="unplug every S seconds")
    f.add_argument("--down", type=float, default=200.0, metavar="MS",
                   help="how long each unplug lasts")
    e = p.add_argument_group("edvs")
    e.add_argument("--pattern", default="bar", help="bar, random, blink or file:PATH (CSV/npz)")
    e.add_argument("--rate", type=float, default=None,
                   help="events/s (edvs, default 10000) or spontaneous spikes/s (board, 0)")
    e.add_argument("--sync", type=int, choices=(0, 1), default=1, help="sync polarity")
    e.add_argument("--variant", choices=tuple(VARIANTS), default="standard",
                   help="!E command numbering of the firmware")
    e.add_argument("--burst", type=float, default=0.0, metavar="MS",
                   help="stream in bursts of MS ...")
    e.add_argument("--idle", type=float, default=0.0, metavar="MS",
                   help="... separated by MS of silence (timestamp wrap after idle)")
    e.add_argument("--autostart", action="store_true",
                   help="stream from power-on without waiting for E+ / start")
    b = p.add_argument_group("board")
    b.add_argument("--mode", choices=tuple(MODES), default="echo")
    b.add_argument("--neurons", type=int, default=256)
    b.add_argument("--heartbeat", type=float, default=100.0, metavar="MS")
    return p


def build(args: argparse.Namespace) -> Emulator:
    """The emulator the parsed arguments describe; ValueError for bad combinations."""
    faults = Faults(
        baud=args.baud, flip=args.flip, insert=args.insert, delete=args.delete,
        split=args.split, garbage=args.garbage, unplug_every_s=args.unplug_every,
        down_ms=args.down, seed=args.seed,
    )
    if args.device == "edvs":
        return EdvsEmulator(
            link=args.link, faults=faults, pattern=args.pattern,
            rate=10_000.0 if args.rate is None else args.rate, sync=args.sync,
            variant=args.variant, burst_ms=args.burst, idle_ms=args.idle,
            autostart=args.autostart,
        )
    return BoardEmulator(
        link=args.link, faults=faults, mode=args.mode, neurons=args.neurons,
        rate=args.rate or 0.0, heartbeat_ms=args.heartbeat, autostart=args.autostart,
    )


def main(argv: Sequence[str]) -> int:
    """Run until a signal or --duration; exit 0, or 2 for bad arguments."""
    args = build_parser().parse_args(list(argv))
    try:
        emu = build(args)
    except (ValueError, OSError) as exc:
        print(f"spikebridge emulate: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        print(emu.start(), flush=True)
        done.wait(args.duration)
        emu.quiesce()  # stop producing and let what is queued go out first
    finally:
        emu.stop()
        if args.stats:
            print(json.dumps(emu.counters()), flush=True)
    return 0
