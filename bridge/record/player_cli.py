"""``spikebridge replay FILE URL``: send a recording to an endpoint with its original timing.

Frames go out on an absolute schedule (due = start + offset / speed), so the pace does not
drift over long files. Each frame is re-encoded in the URL's format with a fresh send time;
sequence numbers are kept, except with --renumber or --loop, where they keep rising. On a
terminal a progress line shows position, frames and lateness. Exit 0 on success, 1 when the
replay failed, 2 for bad arguments.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Sequence

from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.errors import ConfigError, EndpointError
from bridge.frame import SpikeFrame
from bridge.record.camera import CameraError, add_camera_arguments, camera_options, open_recording
from bridge.record.format import RecordingError
from bridge.record.progress import ProgressLine
from bridge.record.resend import Resender
from bridge.record.schedule import Player, PlayStats, Selection
from bridge.tools import ArgumentParser, error

PROG = "spikebridge replay"
PR_SET_TIMERSLACK = 29
DEFAULT_SPIN_US = 100.0


def tighten_timer_slack(ns: int = 1) -> bool:
    """Ask Linux to wake this thread's sleeps within ``ns`` (default slack is 50 µs).

    Returns False where prctl is unavailable; the replay then runs with the default slack.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _us(ns: float) -> str:
    return "-" if ns != ns else ("inf" if ns == float("inf") else f"{ns / 1000:.0f} µs")


def main(argv: Sequence[str], *, clock: Clock = SYSTEM_CLOCK) -> int:
    """Replay to the end (or forever with --loop) or until Ctrl-C; returns the exit code."""
    parser = ArgumentParser(
        prog=PROG, description=__doc__, usage=f"{PROG} [options] FILE [FILE...] URL",
        epilog="examples: spikebridge replay run.sbr 'udp://127.0.0.1:5000?format=native' "
               "--speed 2 --endpoint in0 | spikebridge replay rec.aedat4 "
               "'udp://127.0.0.1:5000?format=spif&width=640&height=480'",
    )
    parser.add_argument("items", nargs="+", metavar="FILE [FILE...] URL",
                        help="the recording (or its rotated segments), then the endpoint URL")
    parser.add_argument("--speed", type=float, default=1.0, help="speed factor (default 1)")
    parser.add_argument("--loop", action="store_true", help="start over at the end, forever")
    parser.add_argument("--skip", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the recording")
    parser.add_argument("--ignore-timing", action="store_true",
                        help="send every frame at once, as fast as possible")
    parser.add_argument("--endpoint", action="append", default=[], metavar="NAME",
                        help="replay only frames of this recorded endpoint (repeatable)")
    parser.add_argument("--source", action="append", type=int, default=[], metavar="NODE",
                        help="replay only frames from this source node (repeatable)")
    parser.add_argument("--renumber", action="store_true",
                        help="give frames fresh sequence numbers (always on with --loop)")
    parser.add_argument("--spin-us", type=float, default=DEFAULT_SPIN_US, metavar="US",
                        help=f"busy-wait the last US µs before each frame for precision "
                             f"(default {DEFAULT_SPIN_US:g}; 0 sleeps only)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    shown.add_argument("--progress", action="store_true",
                       help="progress line even when stderr is not a terminal")
    add_camera_arguments(parser)
    args = parser.parse_args(argv)
    if len(args.items) < 2:
        return error(PROG, "give the recording FILE and then the endpoint URL")
    paths, url = args.items[:-1], args.items[-1]
    if not args.speed > 0 or args.skip < 0 or args.spin_us < 0:
        return error(PROG, "--speed must be > 0; --skip and --spin-us must be >= 0")
    try:
        recording = open_recording(paths, camera_options(args))
    except ValueError as exc:
        return error(PROG, str(exc))
    except OSError as exc:
        return error(PROG, f"cannot read {exc.filename}: {exc.strerror}")
    except RecordingError as exc:
        return error(PROG, str(exc))
    names = [ep.name for ep in recording.header.endpoints]
    unknown = [n for n in args.endpoint if n not in names]
    if unknown:
        return error(PROG, f"the recording has no endpoint {', '.join(unknown)} "
                           f"(it has {', '.join(names)})")
    try:
        spec = endpoint_spec(url, "out")
        resender = Resender(make_codec(spec), renumber=args.renumber or args.loop,
                            stream=spec.stream)
        ep = open_endpoint(spec)
    except ConfigError as exc:
        return error(PROG, str(exc))
    except EndpointError as exc:  # a port in use, a missing device: exit 2 like run
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    player = Player(
        recording,
        selection=Selection(args.endpoint, args.source, int(args.skip * 1e9)),
        speed=args.speed, loop=args.loop, timing=not args.ignore_timing, clock=clock,
        spin_ns=int(args.spin_us * 1000),
    )
    if not args.ignore_timing:
        tighten_timer_slack()

    def on_signal(_sig: int, _frm: object) -> None:
        player.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = ProgressLine(enabled=False if args.quiet else (True if args.progress else None))
    started = clock.monotonic_ns()

    def send(_ep: int, frame: SpikeFrame) -> bool:
        ok = True
        for d in resender.datagrams(frame, clock.wall_ns()):
            ok = ep.send(d) and ok
        return ok

    def line(now: int, st: PlayStats) -> str:
        late = st.lateness
        lap = f"lap {st.laps + 1}  " if args.loop else ""
        return (f"{(now - started) / 1e9:8.1f} s  {lap}{st.frames} frames  "
                f"{st.spikes} spikes  late p50 {_us(late.quantile(0.5))} "
                f"p99 {_us(late.quantile(0.99))}  send errors {st.send_errors}")

    def on_frame(now: int, st: PlayStats) -> None:
        progress.update(now, line(now, st))

    try:
        stats = player.run(send, on_frame if progress.enabled else None)
    except EndpointError as exc:
        print(f"\n{PROG}: {exc}", file=sys.stderr)
        return 1
    except CameraError as exc:
        return error(PROG, str(exc))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        ep.close()
    progress.close(line(clock.monotonic_ns(), player.stats))
    for reader in recording.readers:
        report = reader.report
        if report.truncated_bytes or report.damaged:
            print(f"{PROG}: warning: {reader.path}: {report.problems()}", file=sys.stderr)
    if stats.send_errors or resender.encode_errors:
        print(f"{PROG}: warning: {stats.send_errors} frame(s) refused by the endpoint, "
              f"{resender.encode_errors} not encodable in its format", file=sys.stderr)
    return 0
