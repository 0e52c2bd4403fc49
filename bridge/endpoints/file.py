"""file:PATH endpoints: an input replays a recording, an output records what it is sent.

PATH is a .sbr recording or an event-camera file (.aedat4, .raw, .dat, .es, camera .csv; read
and written through bridge.record.camera): a recorded camera stands in for a live sensor,
paced by its own timestamps, and an output writes the camera format directly.

Input: a replay thread, started at ``open`` (before the loop raises its priority), reads the
file and, from the moment the loop first asks for ``fileno`` (it registers the descriptor as it
starts running, after any long set-up such as Brian2 compilation), waits for each frame's due
time on an absolute schedule and writes the frame, encoded in
the endpoint's ``format=``, to one end of a Unix datagram socket pair. The loop polls the other
end like any socket (Python 3.11 has no timerfd, and a socket pair gives the loop a real
descriptor, datagram boundaries and a bounded kernel buffer). When the loop falls behind and
the pair is full, frames are dropped and counted in ``overflow_drops``.

Output: frames go to a Recorder, whose writer thread does the file I/O. ``send_frame`` takes
the frame itself; ``send`` (the plain Endpoint path) decodes the datagram it is given first.
Neither ever blocks the loop or raises for a full buffer: a refused frame returns False.
"""

from __future__ import annotations

import glob
import logging
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from bridge.codecs.geometry import Geometry
from bridge.endpoints import endpoint_spec, make_codec
from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.url import EndpointURL
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.errors import ConfigError, DecodeError, EndpointError
from bridge.frame import SpikeFrame
from bridge.record import camera
from bridge.record.config import endpoint_info
from bridge.record.format import RecordingError
from bridge.record.recorder import DEFAULT_MIN_FREE_BYTES, Recorder
from bridge.record.resend import Resender
from bridge.record.schedule import Player, Selection

log = logging.getLogger("spikebridge.file")

BUFFER_BYTES = 4 << 20
MAX_DATAGRAM = 65536


def _float(url: EndpointURL, key: str, text: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:
        raise ConfigError(f"must be a number in {lo}..{hi}, got {text!r}", key=f"{url}: {key}")
    return value


def _flag(url: EndpointURL, key: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"expected 1/0 (true/false), got {text!r}", key=f"{url}: {key}")


class FileEndpoint(Endpoint):
    """A recording as an input (replayed on its own schedule) or an output (recorded)."""

    scheme: ClassVar[str] = "file"
    KEYS: ClassVar[Mapping[str, str]] = {
        "speed": "replay speed factor (inputs; default 1)",
        "loop": "1 to replay over and over (inputs; sequence numbers keep rising)",
        "skip": "seconds of the recording to skip (inputs)",
        "timing": "0 to replay as fast as the loop reads, ignoring the recorded times (inputs)",
        "select": "recorded endpoint names to replay, comma-separated (inputs; default all)",
        "spin_us": "busy-wait the last N µs before each frame for precision (inputs; default 0)",
        "rotate_mb": "start a new file after this many MB (outputs)",
        "rotate_s": "start a new file after this many seconds (outputs)",
        "min_free_mb": "stop writing under this much free disk space (outputs; default 256)",
        "width": "camera files: sensor width when the file's header has none",
        "height": "camera files: sensor height when the file's header has none",
        "layout": "camera files: id layout of (x, y, p), most significant first (default pyx)",
        "polarity": "camera files: polarity written for layouts without p (default 1)",
        "window_us": f"camera inputs: frame window in µs (default {camera.DEFAULT_WINDOW_US}; "
                     "0: one frame per timestamp)",
        "evt": "camera .raw files: EVT version (evt3, evt2, evt2.1; default evt3)",
    }
    CAMERA_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"width", "height", "layout", "polarity", "window_us", "evt"})
    SHARED_KEYS: ClassVar[frozenset[str]] = frozenset({"width", "height", "layout", "polarity"})
    takes_frames: ClassVar[bool] = True  # outputs accept ``send_frame`` without encoding

    def __init__(
        self, url: EndpointURL, role: str, options: Mapping[str, str], *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(url, role, options)
        self.clock = clock
        in_keys = {"speed", "loop", "skip", "timing", "select", "spin_us"}
        wrong = sorted(k for k in options
                       if k not in self.CAMERA_KEYS and (k in in_keys) != (role == "in"))
        if wrong:
            raise ConfigError(
                f"{', '.join(wrong)} do(es) not apply to {'inputs' if role == 'in' else 'outputs'}",
                key=str(url),
            )
        self.speed = _float(url, "speed", options.get("speed", "1"), 1e-6, 1e6)
        self.loop = _flag(url, "loop", options.get("loop", "0"))
        self.skip_s = _float(url, "skip", options.get("skip", "0"), 0, 1e12)
        self.timing = _flag(url, "timing", options.get("timing", "1"))
        self.spin_ns = int(_float(url, "spin_us", options.get("spin_us", "0"), 0, 10_000) * 1000)
        self.select = tuple(s for s in options.get("select", "").split(",") if s)
        cam_keys = sorted(self.CAMERA_KEYS & set(options))
        # A .csv is camera events when it says so (t,x,y,on) or is given camera keys.
        self.is_camera = camera.is_camera_path(url.target, writing=role == "out",
                                               csv_events=bool(cam_keys))
        if cam_keys and not self.is_camera:
            raise ConfigError(f"{', '.join(cam_keys)} apply to event-camera files only "
                              f"({', '.join(camera.SUFFIXES)})", key=str(url))
        if "window_us" in options and role != "in":
            raise ConfigError("window_us applies to inputs only", key=str(url))
        self.camera_options = self._camera_options(url, options)
        self.rotate_bytes = int(_float(url, "rotate_mb", options.get("rotate_mb", "0"), 0, 1e9)
                                * 1_000_000)
        self.rotate_s = _float(url, "rotate_s", options.get("rotate_s", "0"), 0, 1e9)
        min_free = options.get("min_free_mb", str(DEFAULT_MIN_FREE_BYTES / 1e6))
        self.min_free_bytes = int(_float(url, "min_free_mb", min_free, 0, 1e12) * 1_000_000)
        self.recorder: Recorder | camera.CameraRecorder | None = None
        self.player: Player | None = None
        self._codec: Any = None
        self._resender: Resender | None = None
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._go = threading.Event()
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._overflow = 0
        self.replay_error: str | None = None

    @staticmethod
    def _camera_options(url: EndpointURL, options: Mapping[str, str]) -> camera.CameraOptions:
        def side(key: str) -> int | None:
            text = options.get(key)
            return None if text is None else int(_float(url, key, text, 1, 65536))
        try:
            return camera.CameraOptions(
                width=side("width"), height=side("height"),
                layout=options.get("layout", "pyx"),
                polarity=int(_float(url, "polarity", options.get("polarity", "1"), 0, 1)),
                window_us=int(_float(url, "window_us",
                                     options.get("window_us", str(camera.DEFAULT_WINDOW_US)),
                                     0, 1e9)),
                evt_version=options.get("evt"),
            )
        except ValueError as exc:
            raise ConfigError(str(exc), key=str(url)) from None

    # -- open ---------------------------------------------------------------------------

    def open(self) -> None:
        """Input: read the header and start the replay thread. Output: start the recorder."""
        spec = endpoint_spec(self.url, self.role)
        self._codec = make_codec(spec)
        if self.role == "in":
            self._open_replay(spec.format)
        elif self.is_camera:
            self._open_camera_recorder(spec)
        else:
            self.recorder = Recorder(
                self.url.target, [endpoint_info(spec)], node=spec.source,
                rotate_bytes=self.rotate_bytes, rotate_seconds=self.rotate_s,
                min_free_bytes=self.min_free_bytes, clock=self.clock,
            )
            try:
                self.recorder.start()
            except OSError as exc:
                raise EndpointError(f"{self.url}: cannot record: {exc}") from None

    def _open_camera_recorder(self, spec: Any) -> None:
        opts = self.camera_options
        geo_src = self._codec if opts.width is None and hasattr(self._codec, "geometry") else None
        try:
            if geo_src is not None:
                geo = geo_src.geometry
            else:
                geo = Geometry("file", spec.neurons, opts.width, opts.height,
                                      opts.layout, opts.polarity)
        except ValueError as exc:
            raise ConfigError(f"{exc} (width= and height= on the file: URL)",
                              key=str(self.url)) from None
        target = camera.CameraTarget(Path(self.url.target), geo,
                                     evt_version=opts.evt_version or "evt3")
        recorder = self.recorder = camera.CameraRecorder(target)
        try:
            recorder.start()
        except (OSError, camera.CameraError) as exc:
            raise EndpointError(f"{self.url}: cannot record: {exc}") from None

    def _paths(self) -> list[str]:
        target = self.url.target
        if any(c in target for c in "*?["):
            paths = sorted(glob.glob(target))
            if not paths:
                raise EndpointError(f"{self.url}: no file matches {target!r}")
            return paths
        return [target]

    def _open_replay(self, fmt: str) -> None:
        try:
            recording = camera.open_recording(self._paths(), self.camera_options)
        except OSError as exc:
            raise EndpointError(f"{self.url}: cannot read: {exc.strerror or exc}") from None
        except camera.CameraError as exc:
            raise ConfigError(str(exc), key=str(self.url)) from None
        except RecordingError as exc:
            raise EndpointError(f"{self.url}: {exc}") from None
        names = [ep.name for ep in recording.header.endpoints]
        missing = [s for s in self.select if s not in names]
        if missing:
            raise ConfigError(
                f"the recording has no endpoint {', '.join(missing)} (it has {', '.join(names)})",
                key=f"{self.url}: select",
            )
        self.player = Player(
            recording,
            selection=Selection(endpoints=self.select, skip_ns=int(self.skip_s * 1e9)),
            speed=self.speed, loop=self.loop, timing=self.timing, clock=self.clock,
            spin_ns=self.spin_ns,
        )
        self._resender = Resender(self._codec)
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        reader.setblocking(False)
        writer.setblocking(False)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
        writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        self._reader, self._writer = reader, writer
        self._thread = threading.Thread(target=self._replay, name="sbr-replay", daemon=True)
        self._thread.start()

    def _replay(self) -> None:
        assert self.player is not None and self._resender is not None
        player, resender, writer = self.player, self._resender, self._writer
        assert writer is not None
        clock = self.clock
        laps_seen = 0

        def send(_ep: int, frame: SpikeFrame) -> bool:
            nonlocal laps_seen
            if player.stats.laps != laps_seen:
                laps_seen = player.stats.laps
                resender.renumber = True  # a second lap must not repeat sequence numbers
            ok = True
            for d in resender.datagrams(frame, clock.wall_ns()):
                try:
                    writer.send(d)
                except BlockingIOError:
                    self._overflow += 1
                    ok = False
                except OSError:  # the reader was closed: the endpoint is shutting down
                    player.stop()
                    return False
            return ok

        self._go.wait()
        if player.stopped:
            return
        try:
            player.run(send)
        except Exception as exc:  # a file that cannot be read on: reported, never raised
            self.replay_error = repr(exc)
            log.error("%s: replay stopped: %s", self.url, exc)
            return
        for report in player.stats.reports:
            if report.truncated_bytes or report.damaged:
                log.warning("%s: %s", self.url, report.problems())

    # -- loop side ------------------------------------------------------------------------

    def fileno(self) -> int:
        """The descriptor the loop polls (the replay socket); inputs only."""
        if self._reader is None:
            raise RuntimeError(f"{self.url} is not an open input")
        self._go.set()
        return self._reader.fileno()

    def recv(self) -> tuple[memoryview, Address] | None:
        """One replayed datagram (valid until the next recv), or None."""
        if self._reader is None:
            return None
        try:
            n = self._reader.recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return None
        return self._view[:n], None

    def send(self, data: bytes) -> bool:
        """Record one encoded datagram (decoded first); False when refused or undecodable."""
        if self.recorder is None:
            return False
        try:
            frame = self._codec.decode(data)
        except DecodeError:
            return False
        return self.recorder.record(
            self.clock.monotonic_ns(), 0, frame.source, frame.seq, frame.ids, frame.t_sent_ns
        )

    def send_frame(self, frame: SpikeFrame, now_ns: int) -> bool:
        """Record ``frame`` received or produced at monotonic ``now_ns``; False when dropped."""
        if self.recorder is None:
            return False
        return self.recorder.record(
            now_ns, 0, frame.source, frame.seq, frame.ids, frame.t_sent_ns
        )

    def overflow_drops(self) -> int:
        """Replayed datagrams dropped because the loop did not read them in time."""
        return self._overflow

    @property
    def finished(self) -> bool:
        """True once an input's replay has ended (never while looping)."""
        return self._thread is not None and not self._thread.is_alive()

    def close(self) -> None:
        """Stop the replay or finish the recording (the file is completed); idempotent."""
        if self.player is not None:
            self.player.stop()
        self._go.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        for s in (self._reader, self._writer):
            if s is not None:
                s.close()
        self._reader = self._writer = None
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def describe(self) -> str:
        """The URL and what the endpoint does with the file."""
        what = "replaying" if self.role == "in" else "recording"
        return f"{self.url} ({what})"
