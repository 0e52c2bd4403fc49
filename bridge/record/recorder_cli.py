"""``spikebridge record URL FILE``: capture the frames arriving at an endpoint to a .sbr file.

A thin command around Recorder: the receive loop never waits for the disk. On a terminal it
shows a progress line (elapsed, frames, spikes, rate, drops); piped, it prints nothing but
warnings. Ctrl-C or SIGTERM ends the capture and completes the file. Exit 0 on success,
1 when the capture failed, 2 for bad arguments.
"""

from __future__ import annotations

import selectors
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.errors import ConfigError, EndpointError
from bridge.record import camera
from bridge.record.config import endpoint_info
from bridge.record.intake import Intake
from bridge.record.output import add_output_arguments, prepare
from bridge.record.progress import ProgressLine, human_rate
from bridge.record.recorder import Recorder
from bridge.tools import ArgumentParser, add_duration, error

PROG = "spikebridge record"


def main(argv: Sequence[str], *, clock: Clock = SYSTEM_CLOCK) -> int:
    """Record until --duration, --count, Ctrl-C or SIGTERM; returns the exit code."""
    parser = ArgumentParser(
        prog=PROG, description=__doc__,
        epilog="example: spikebridge record 'udp://0.0.0.0:5000?format=native' run.sbr "
               "--duration 60",
    )
    parser.add_argument("url", help="endpoint URL to receive on (udp://, mcast://, serial:, ...)")
    parser.add_argument("file", help="the file to create; its suffix picks the format: .sbr, "
                                     "or an event-camera file (.aedat4, .raw, .dat, .es, .csv)")
    add_duration(parser, "stop after SECONDS (default: until Ctrl-C)", default=0.0, old=())
    parser.add_argument("--count", type=int, default=0, metavar="N",
                        help="stop after N frames (default: no limit)")
    parser.add_argument("--rotate-mb", type=float, default=0.0, metavar="MB",
                        help="start a new file every MB megabytes (FILE gets -0000, -0001, ...)")
    parser.add_argument("--rotate-s", type=float, default=0.0, metavar="S",
                        help="start a new file every S seconds")
    parser.add_argument("--min-free-mb", type=float, default=256.0, metavar="MB",
                        help="stop writing when the disk has less free space (default 256)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", action="store_true", help="no progress line, no summary")
    shown.add_argument("--progress", action="store_true",
                       help="progress line even when stderr is not a terminal")
    add_output_arguments(parser)
    camera.add_camera_arguments(parser, window=False)
    args = parser.parse_args(argv)
    if args.duration < 0 or args.count < 0 or args.rotate_mb < 0 or args.rotate_s < 0:
        return error(PROG, "--duration, --count, --rotate-mb and --rotate-s must be >= 0")
    is_camera = camera.is_camera_path(args.file, writing=True, csv_events=True)
    if Path(args.file).suffix.lower() != ".sbr" and not is_camera:
        return error(PROG, f"{args.file}: unknown suffix; expected .sbr or one of "
                           f"{', '.join(camera.SUFFIXES)}")
    problem = prepare(args.file, parents=args.parents, force=args.force)
    if problem is not None:
        return error(PROG, problem)
    try:
        spec = endpoint_spec(args.url, "in")
        codec = make_codec(spec)
        recorder: Recorder | camera.CameraRecorder
        if is_camera:
            if args.rotate_mb or args.rotate_s:
                return error(PROG, "--rotate-mb and --rotate-s apply to .sbr recordings")
            recorder = camera.recorder_for(args.file, codec, spec.neurons,
                                           camera.camera_options(args, spec.neurons))
        else:
            recorder = Recorder(
                args.file, [endpoint_info(spec)], node=spec.source,
                rotate_bytes=int(args.rotate_mb * 1e6), rotate_seconds=args.rotate_s,
                min_free_bytes=int(args.min_free_mb * 1e6), clock=clock,
                extra={"recorded_by": PROG},
            )
        ep = open_endpoint(spec)
    except (ConfigError, ValueError) as exc:
        return error(PROG, str(exc))
    except EndpointError as exc:  # a port in use, a missing device: exit 2 like run
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        recorder.start()
    except (OSError, camera.CameraError) as exc:
        ep.close()
        print(f"{PROG}: cannot record to {args.file}: {exc}", file=sys.stderr)
        return 2
    stop = False

    def on_signal(_sig: int, _frm: object) -> None:
        nonlocal stop
        stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    progress = ProgressLine(enabled=False if args.quiet else (True if args.progress else None))
    intake = Intake(ep, codec, spec.stream)
    sel = selectors.DefaultSelector()
    sel.register(ep.fileno(), selectors.EVENT_READ)
    start = clock.monotonic_ns()
    end = start + int(args.duration * 1e9) if args.duration else None
    frames = spikes = 0

    def line(now: int) -> str:
        secs = (now - start) / 1e9
        drops = intake.dropped() + recorder.dropped_frames + recorder.lost_frames
        return (f"{secs:8.1f} s  {frames} frames  {spikes} spikes  "
                f"{human_rate(frames, secs)}  drops {drops}")

    try:
        while not stop:
            now = clock.monotonic_ns()
            if end is not None and now >= end:
                break
            timeout = 0.25 if end is None else max(0.0, min(0.25, (end - now) / 1e9))
            ready = sel.select(timeout)
            now = clock.monotonic_ns()  # one reading per wake-up, as the daemon's loop does
            if ready:
                for frame in intake.frames():
                    recorder.record(clock.monotonic_ns(), 0, frame.source, frame.seq, frame.ids,
                                    frame.t_sent_ns)
                    frames += 1
                    spikes += len(frame.ids)
            progress.update(now, line(now))
            if args.count and frames >= args.count:
                break
    except EndpointError as exc:
        print(f"\n{PROG}: {exc}", file=sys.stderr)
        return 1
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        sel.close()
        ep.close()
        recorder.close()
        progress.close(line(clock.monotonic_ns()))
        if not args.quiet:  # on stdout, whatever it is: the progress line is for terminals
            secs = (clock.monotonic_ns() - start) / 1e9
            drops = intake.dropped() + recorder.dropped_frames + recorder.lost_frames
            print(f"{args.file}: {frames} frames, {spikes} spikes in {secs:.1f} s, "
                  f"{drops} dropped", flush=True)
    lost = recorder.dropped_frames + recorder.lost_frames
    if isinstance(recorder, camera.CameraRecorder) and recorder.error:
        print(f"{PROG}: cannot write {args.file}: {recorder.error}", file=sys.stderr)
    if lost:
        print(f"{PROG}: warning: {lost} frame(s) could not be written (see the gap records)",
              file=sys.stderr)
    if intake.dropped():
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(intake.drops.items()))
        kernel = ep.overflow_drops()
        print(f"{PROG}: warning: {intake.dropped()} datagram(s) dropped"
              f"{' (' + reasons + ')' if reasons else ''}"
              f"{f', {kernel} by the kernel' if kernel else ''}", file=sys.stderr)
    return 1 if recorder.write_errors and not recorder.frames_written else 0
