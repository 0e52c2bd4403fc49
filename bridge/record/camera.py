"""Event-camera recordings (.aedat4, .raw EVT2/EVT3, .dat, .es, .csv) read and written via Faery.

Faery (the ``events`` extra) decodes and encodes the bytes; this module only turns its event
arrays (t µs, x, y, on) into spike frames and back. Events are grouped into frames by time
window (``window_us``; 0 makes one frame per distinct timestamp, which is exact) and each frame
is stamped with the time of its last event, so a frame is never due before all of its events
have happened. Pixels map to neuron ids through the shared sensor geometry
(bridge.codecs.geometry: ``width``, ``height``, ``layout``, ``polarity``), the same keys and
formulas as the spif and Faery UDP formats. The geometry comes from the file's header where it
has one; otherwise from ``width``/``height``.

Damage is reported, never raised past the reader once events have been read: a file cut off
replays what is complete and says how many bytes were cut; a file that cannot be decoded raises
CameraError naming the file, the byte offset (where the format lets us know it) and Faery's
reason. Nothing here may run on the real-time loop thread (it reads and writes files).
"""

from __future__ import annotations

import os
import struct
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge import __version__
from bridge.codecs.geometry import Geometry
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame
from bridge.record.format import EndpointInfo, Header, RecordingError
from bridge.record.sbrfile import ReadReport, SpikeTable

INSTALL_HINT = "pip install 'spikebridge[events]'"
SUFFIXES: dict[str, str] = {
    ".aedat4": "aedat", ".raw": "evt", ".dat": "dat", ".es": "es", ".csv": "csv",
}
"""Camera suffixes and Faery's file type for each."""

DEFAULT_WINDOW_US = 1000
"""Replay and file: inputs group events into 1 ms frames unless told otherwise."""

EVT_VERSIONS = ("evt3", "evt2", "evt2.1")
AEDAT_MAGIC = b"#!AER-DAT4.0\r\n"
MAX_FRAME_EVENTS = 1 << 20  # a longer window is cut into several frames of the same time
_I32x2 = struct.Struct("<ii")


class CameraError(RecordingError):
    """A camera file that cannot be read or written: names the file, the offset and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str,
                 offset: int | None = None, where: str = "") -> None:
        self.path, self.reason, self.offset = str(path), reason, offset
        if offset is not None:
            at = f" {where or 'at'} byte {offset}"
        else:
            at = f" {where}" if where else ""
        super().__init__(f"{path}{at}: {reason}")


def faery_module() -> Any:
    """The faery package; CameraError naming the extra to install when it is missing."""
    try:
        import faery
    except ImportError as exc:
        raise CameraError(
            "event-camera files", f"need the faery library ({exc}); install it with: "
            f"{INSTALL_HINT}",
        ) from None
    return faery


def _sniff_csv(path: Path) -> bool:
    """True when a .csv holds camera events (a ``t,x,y,on`` header, as Faery writes)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return False
    cols = [c.strip().lower().partition("@")[0] for c in first.split(",")]
    return len(cols) == 4 and cols[:3] == ["t", "x", "y"] and cols[3] in ("on", "p")


def is_camera_path(path: str | os.PathLike[str], *, writing: bool = False,
                   csv_events: bool = False) -> bool:
    """True for a camera suffix; an existing .csv is sniffed, a new one only with csv_events."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        return False
    if suffix != ".csv":
        return True
    if writing:
        return csv_events
    return csv_events or _sniff_csv(p)


@dataclass(frozen=True)
class CameraOptions:
    """How a camera file becomes frames: geometry fallback, id layout, frame window."""

    width: int | None = None
    height: int | None = None
    layout: str = "pyx"
    polarity: int = 1
    window_us: int = DEFAULT_WINDOW_US
    neurons: int = 0
    evt_version: str | None = None  # .raw without a version line: evt3 unless told

    def __post_init__(self) -> None:
        if self.window_us < 0:
            raise ValueError(f"window_us must be >= 0, got {self.window_us}")
        if self.evt_version is not None and self.evt_version not in EVT_VERSIONS:
            raise ValueError(f"evt version must be one of {', '.join(EVT_VERSIONS)}")


@dataclass
class CameraReport(ReadReport):
    """A camera file's read report: events read, bytes cut off at the end (if known)."""

    events: int = 0
    note: str = ""

    def problems(self) -> str:
        """One human line about truncation; empty when the file read to its end."""
        parts = []
        if self.truncated_bytes:
            parts.append(f"cut off: the last {self.truncated_bytes} bytes hold an incomplete "
                         f"{'packet' if self.note == 'aedat' else 'event'}; "
                         f"{self.events} complete events were read")
        return "; ".join(parts)


def _aedat_packets(path: Path) -> tuple[list[int], int]:
    """Start offsets of an AEDAT4 file's packets (framing only: 8-byte id/size headers)."""
    size = path.stat().st_size
    offsets: list[int] = []
    with open(path, "rb") as fh:
        head = fh.read(len(AEDAT_MAGIC) + 4)
        if len(head) < len(AEDAT_MAGIC) + 4:
            return offsets, size
        (hsize,) = struct.unpack_from("<i", head, len(AEDAT_MAGIC))
        pos = len(head) + hsize
        while pos + 8 <= size:
            fh.seek(pos)
            _, n = _I32x2.unpack(fh.read(8))
            if n < 0:
                break
            offsets.append(pos)
            pos += 8 + n
    return offsets, size


def _csv_dimensions(path: Path) -> tuple[int, int] | None:
    """The sensor size in a Faery CSV header (``t,x@640,y@480,on``), or None."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            cols = [c.strip() for c in fh.readline().split(",")]
    except OSError:
        return None
    size = {}
    for c in cols:
        name, at, value = c.partition("@")
        if at and name in ("x", "y") and value.isdigit():
            size[name] = int(value)
    return (size["x"], size["y"]) if len(size) == 2 else None


def _header_size(path: Path) -> int:
    """Bytes of the '%'-comment header of an EVT or DAT file (and DAT's 2-byte type/size)."""
    n = 0
    with open(path, "rb") as fh:
        while True:
            line = fh.readline()
            if not line.startswith(b"%"):
                break
            n += len(line)
    return n


class CameraFile:
    """One camera recording read lazily with Faery: its geometry, events, and frames."""

    def __init__(self, path: str | os.PathLike[str], options: CameraOptions | None = None,
                 ) -> None:
        self.path = Path(path)
        self.options = opt = options or CameraOptions()
        suffix = self.path.suffix.lower()
        if suffix not in SUFFIXES:
            raise CameraError(self.path, f"not an event-camera file (suffix {suffix!r}; "
                                         f"expected one of {', '.join(SUFFIXES)})")
        self.kind = SUFFIXES[suffix]
        self.evt_word = 2  # bytes per EVT word: EVT3 2, EVT2 4, EVT2.1 8 (from the header)
        faery = faery_module()
        if not self.path.exists():
            raise CameraError(self.path, "no such file")
        fallback = (opt.width, opt.height) if opt.width and opt.height else None
        self.header_geometry = self._header_dimensions(faery)
        if self.header_geometry is None and fallback is None:
            raise CameraError(self.path, f"the {self.kind} file has no sensor size in its "
                                         "header: give it (--width/--height, or width=/height= "
                                         "in a file: URL)")
        if (self.header_geometry is not None and fallback is not None
                and fallback != self.header_geometry):
            raise CameraError(
                self.path, f"width/height {fallback[0]}x{fallback[1]} disagree with the "
                           f"file's header, {self.header_geometry[0]}x{self.header_geometry[1]}")
        dims = self.header_geometry or fallback
        assert dims is not None
        self.width, self.height = dims
        try:
            self.geometry = Geometry(self.kind, opt.neurons, self.width, self.height,
                                     opt.layout, opt.polarity)
        except ValueError as exc:
            raise CameraError(self.path, str(exc)) from None
        self.report = CameraReport(note=self.kind)
        self.t0_us: int | None = None  # the first event's time; frame times count from it

    def _decoder(self, faery: Any) -> Any:
        opt = self.options
        kw: dict[str, Any] = {}
        if self.kind in ("evt", "dat", "csv"):
            w, h = getattr(self, "width", opt.width), getattr(self, "height", opt.height)
            kw["dimensions_fallback"] = (w, h) if w and h else (1, 1)
        if self.kind == "evt" and opt.evt_version:
            kw["version_fallback"] = opt.evt_version
        try:
            return faery.file_decoder.Decoder(self.path, **kw)
        except Exception as exc:  # faery raises plain Exception/RuntimeError subclasses
            raise CameraError(self.path, self._reason(exc), where="in its header") from None

    def _header_dimensions(self, faery: Any) -> tuple[int, int] | None:
        """The sensor size the file's own header states, or None (CSV; EVT/DAT without one)."""
        if self.kind == "csv":
            return _csv_dimensions(self.path)
        if self.kind in ("evt", "dat"):
            try:
                mod = faery.evt if self.kind == "evt" else faery.dat
                version = (self.options.evt_version or "evt3") if self.kind == "evt" else "dat2"
                with mod.Decoder(self.path, None, version) as dec:
                    dims = dec.dimensions
                    if self.kind == "evt":
                        self.evt_word = {"evt2": 4, "evt2.1": 8}.get(dec.version, 2)
            except Exception as exc:
                text = str(exc)
                if "dimension" in text.lower() or "size" in text.lower():
                    return None
                raise CameraError(self.path, self._reason(exc), where="in its header") from None
            return None if dims is None else (int(dims[0]), int(dims[1]))
        dec = self._decoder(faery)
        w, h = dec.dimensions()
        return int(w), int(h)

    @staticmethod
    def _reason(exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        if "fill whole buffer" in text:
            return "cannot decode: the file ends inside its header (empty or cut off)"
        return f"cannot decode: {text}"

    # -- events -----------------------------------------------------------------------------

    def events(self) -> Iterator[npt.NDArray[Any]]:
        """Faery's event arrays (t, x, y, on) in file order; sets ``report`` as it goes."""
        faery = faery_module()
        self.report = rep = CameraReport(note=self.kind)
        offsets: list[int] = []
        size = self.path.stat().st_size
        if self.kind == "aedat":
            offsets, size = _aedat_packets(self.path)
            it = self._aedat_events(faery, offsets, size)
        else:
            it = self._plain_events(faery, size)
        for ev in it:
            if len(ev):
                if self.t0_us is None:
                    self.t0_us = int(ev["t"][0])
                rep.events += len(ev)
                yield ev
        rep.complete = not rep.truncated_bytes

    def _aedat_events(self, faery: Any, offsets: list[int],
                      size: int) -> Iterator[npt.NDArray[Any]]:
        packets = 0
        try:
            with faery.aedat.Decoder(self.path) as dec:
                tracks = [t for t in dec.tracks() if t.data_type == "events"]
                if not tracks:
                    raise CameraError(self.path, "the AEDAT4 file holds no event stream")
                track = tracks[0].id
                for trk, packet in dec:
                    packets += 1
                    if trk.id == track and trk.data_type == "events":
                        yield packet
        except CameraError:
            raise
        except Exception as exc:
            at = offsets[packets] if packets < len(offsets) else None
            whole = at is not None and at + 8 <= size
            if whole and at is not None:
                with open(self.path, "rb") as fh:
                    fh.seek(at)
                    _, n = _I32x2.unpack(fh.read(8))
                whole = at + 8 + n <= size
            end = offsets[-1] if offsets else size
            if packets >= len(offsets) - 1 and not whole:
                self.report.truncated_bytes = size - (at if at is not None else end)
                return
            if at is None and "fill whole buffer" in str(exc):
                self.report.truncated_bytes = max(0, size - end)
                return
            raise CameraError(self.path, self._reason(exc), offset=at) from None

    def _plain_events(self, faery: Any, size: int) -> Iterator[npt.NDArray[Any]]:
        dec = self._decoder(faery)
        done = 0
        try:
            for ev in dec:
                done += len(ev)
                yield ev
        except Exception as exc:
            offset = None
            where = f"after {done} complete events"
            if self.kind == "dat":
                offset = _header_size(self.path) + 2 + 8 * done
                where = "in the block starting at"
            raise CameraError(self.path, self._reason(exc), offset=offset, where=where) from None
        if self.kind == "dat":
            body = size - _header_size(self.path) - 2
            self.report.truncated_bytes = body % 8 if body > 0 else 0
        elif self.kind == "evt":
            word = self.evt_word
            body = size - _header_size(self.path)
            self.report.truncated_bytes = body % word if body > 0 else 0

    # -- frames -----------------------------------------------------------------------------

    def frames(self, window_us: int | None = None) -> Iterator[tuple[int, SpikeFrame]]:
        """(t_ns since the first event, frame) in file order, one frame per time window."""
        w = self.options.window_us if window_us is None else window_us
        geo = self.geometry
        pend_t: list[npt.NDArray[Any]] = []
        pend_ids: list[npt.NDArray[Any]] = []
        pend_key: int | None = None
        t0: int | None = None
        for ev in self.events():
            t = ev["t"].astype(np.int64)
            if t0 is None:
                t0 = int(t[0])
            try:
                ids = geo.ids(ev["x"], ev["y"], ev["on"])
            except DecodeError as exc:
                raise CameraError(self.path, f"{exc.detail} (check width/height/layout)",
                                  where=f"after {self.report.events} events") from None
            key = (t - t0) // w if w else t
            cuts = np.flatnonzero(np.diff(key)) + 1
            starts = [0, *cuts.tolist()]
            ends = [*cuts.tolist(), len(t)]
            for a, b in zip(starts, ends, strict=True):
                k = int(key[a])
                if pend_key is not None and k != pend_key:
                    yield from _emit(pend_t, pend_ids, t0)
                    pend_t, pend_ids = [], []
                pend_key = k
                pend_t.append(t[a:b])
                pend_ids.append(ids[a:b])
        if pend_t and t0 is not None:
            yield from _emit(pend_t, pend_ids, t0)

    def table(self, window_us: int = 0, name: str = "camera") -> SpikeTable:
        """The whole file as a SpikeTable (for convert); window 0 keeps every timestamp."""
        t_parts, id_parts, fr_parts = [], [], []
        n = 0
        for t_ns, frame in self.frames(window_us):
            k = len(frame.ids)
            t_parts.append(np.full(k, t_ns, dtype=np.int64))
            id_parts.append(frame.ids)
            fr_parts.append(np.full(k, n, dtype=np.int64))
            n += 1

        def cat(parts: list[Any], dtype: Any) -> Any:
            return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

        ids = cat(id_parts, np.uint32)
        zeros = np.zeros(len(ids), dtype=np.int64)
        return SpikeTable(
            header=self.header(name), t_ns=cat(t_parts, np.int64),
            endpoint=zeros.astype(np.uint16), source=zeros.astype(np.uint32),
            seq=zeros - 1, ids=ids, frame=cat(fr_parts, np.int64), frames=n, gaps=[],
            reports=[self.report], paths=[self.path],
        )

    def header(self, name: str = "camera") -> Header:
        """An .sbr header for this file: one input endpoint, the geometry in ``extra``."""
        g = self.geometry
        url = (f"file:{self.path}?width={g.width}&height={g.height}&layout={g.layout}"
               f"&polarity={g.polarity}")
        return Header(
            endpoints=(EndpointInfo(name, url, "in", "native", self.options.neurons or g.size),),
            start_wall_ns=0, start_mono_ns=0, run=uuid.uuid4().hex,
            software=f"spikebridge {__version__}",
            extra={"converted_from": str(self.path), "camera": {
                "format": self.kind, "width": g.width, "height": g.height,
                "layout": g.layout, "polarity": g.polarity,
                "t0_us": self.t0_us if self.t0_us is not None else 0,
            }},
        )


def _emit(ts: list[npt.NDArray[Any]], idss: list[npt.NDArray[Any]],
          t0: int) -> Iterator[tuple[int, SpikeFrame]]:
    t = np.concatenate(ts) if len(ts) > 1 else ts[0]
    ids = np.concatenate(idss) if len(idss) > 1 else idss[0]
    t_ns = (int(t.max()) - t0) * 1000
    for a in range(0, len(ids), MAX_FRAME_EVENTS):
        yield t_ns, SpikeFrame(0, NO_SEQ, 0, ids[a:a + MAX_FRAME_EVENTS].astype(np.uint32))


class CameraRecording:
    """A camera file with the interface the replay schedule reads (``schedule.Recording``)."""

    def __init__(self, path: str | os.PathLike[str], options: CameraOptions | None = None,
                 ) -> None:
        self.file = CameraFile(path, options)
        self.readers = [self.file]
        self.end_ns: int | None = None
        self._header = self.file.header()

    @property
    def header(self) -> Header:
        """A synthetic header: one endpoint named ``camera``."""
        return self._header

    def frames(self, sel: Any) -> Iterator[tuple[int, int, SpikeFrame]]:
        """(t_ns, 0, frame) from ``sel.skip_ns`` on; a full pass sets ``end_ns``."""
        if sel.endpoints and set(sel.endpoints) != {"camera"}:
            raise KeyError("a camera file has one endpoint, named camera")
        end = 0
        for t_ns, frame in self.file.frames():
            end = t_ns
            if t_ns < sel.skip_ns:
                continue
            yield t_ns, 0, frame
        # A loop's next lap starts one window (at least 1 µs) after the last frame.
        self.end_ns = end + max(self.file.options.window_us, 1) * 1000

    def reports(self) -> list[ReadReport]:
        """The file's read report (events read, bytes cut off)."""
        return [self.file.report]


def open_recording(paths: Sequence[str | os.PathLike[str]],
                   options: CameraOptions | None = None) -> Any:
    """A schedule.Recording for .sbr files, a CameraRecording for one camera file."""
    if any(is_camera_path(p) for p in paths):
        if len(paths) != 1:
            raise CameraError(paths[0], "replay one camera file at a time")
        return CameraRecording(paths[0], options)
    from bridge.record.schedule import Recording

    return Recording(paths)


# --- writing ------------------------------------------------------------------------------


@dataclass
class CameraTarget:
    """Where and how to write events: file, sensor geometry, first timestamp (µs)."""

    path: Path
    geometry: Geometry
    t0_us: int = 0
    evt_version: str = "evt3"
    compression: bool = True  # AEDAT4: LZ4 (as DV writes by default)
    csv_events: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def geometry_for(header: Header, options: CameraOptions, fmt: str = "camera") -> Geometry:
    """The geometry to write a recording with: explicit options, else the header's camera."""
    cam = header.extra.get("camera") if isinstance(header.extra, Mapping) else None
    width, height = options.width, options.height
    layout, polarity = options.layout, options.polarity
    if (width is None or height is None) and isinstance(cam, Mapping):
        width, height = int(cam["width"]), int(cam["height"])
        layout, polarity = str(cam.get("layout", layout)), int(cam.get("polarity", polarity))
    if width is None or height is None:
        for ep in header.endpoints:
            params = _url_params(ep.url)
            if "width" in params and "height" in params:
                width, height = int(params["width"]), int(params["height"])
                layout = params.get("layout", layout)
                polarity = int(params.get("polarity", polarity))
                break
    return Geometry(fmt, options.neurons, width, height, layout, polarity)


def _url_params(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    _, _, query = url.partition("?")
    return dict(parse_qsl(query))


def events_of(t_us: npt.NDArray[Any], ids: npt.NDArray[Any], geo: Geometry,
              faery: Any) -> npt.NDArray[Any]:
    """Faery events (t, x, y, on) for ids at times ``t_us``; ValueError for ids off-sensor."""
    x, y, p = geo.pixels(np.asarray(ids))
    ev = np.empty(len(x), dtype=faery.EVENTS_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["on"] = t_us, x, y, p.astype(bool)
    return ev


def write_events(target: CameraTarget, chunks: Iterator[npt.NDArray[Any]]) -> None:
    """Write Faery event arrays to ``target.path`` (never overwrites; timestamps kept as is)."""
    faery = faery_module()
    path = target.path
    if path.exists():
        raise FileExistsError(f"{path} exists; a recording is never overwritten")
    kind = SUFFIXES[path.suffix.lower()]
    g = target.geometry
    kw: dict[str, Any] = {"dimensions": (g.width, g.height), "zero_t0": False}
    if kind == "evt":
        kw["version"] = target.evt_version
    if kind == "dat":
        kw["version"] = "dat2"
    if kind == "aedat":
        kw["compression"] = faery.aedat.LZ4_DEFAULT if target.compression else None
    try:
        faery.file_encoder.events_to_file(chunks, path, file_type=kind, **kw)
    except (OSError, ValueError):
        raise
    except Exception as exc:
        raise CameraError(path, f"cannot write: {exc}") from None


def write_table(table: SpikeTable, target: CameraTarget, *, local_ids: bool = True) -> int:
    """Write a SpikeTable's spikes as camera events; returns the events written."""
    faery = faery_module()
    ids = table.ids
    if not local_ids:
        offsets = np.array([e.offset for e in table.header.endpoints] or [0], dtype=np.int64)
        ids = (ids.astype(np.int64) + offsets[table.endpoint]).astype(np.uint32)
    t_us = target.t0_us + table.t_ns // 1000
    order = np.argsort(t_us, kind="stable")
    t_us, ids = t_us[order], ids[order]
    step = 1 << 18

    def chunks() -> Iterator[npt.NDArray[Any]]:
        for a in range(0, len(ids), step):
            yield events_of(t_us[a:a + step], ids[a:a + step], target.geometry, faery)

    write_events(target, chunks())
    return len(ids)


class CameraRecorder:
    """Records live frames straight into a camera file: a writer thread off the loop.

    ``record`` appends to a bounded queue (the oldest frame is dropped and counted when the
    writer falls behind) and never blocks; the writer thread feeds Faery's encoder.
    """

    def __init__(self, target: CameraTarget, *, max_frames: int = 65536) -> None:
        self.target = target
        self.max_frames = max_frames
        self._q: deque[tuple[int, npt.NDArray[Any]]] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._start_ns: int | None = None
        self.frames_written = 0
        self.spikes_written = 0
        self.dropped_frames = 0
        self.lost_frames = 0
        self.write_errors = 0
        self.error: str | None = None

    def start(self) -> None:
        """Check the target and start the writer thread (before any real-time priority)."""
        faery_module()
        if self.target.path.exists():
            raise FileExistsError(f"{self.target.path} exists; a recording is never overwritten")
        self._thread = threading.Thread(target=self._run, name="camera-writer", daemon=True)
        self._thread.start()

    def record(self, now_ns: int, endpoint: int, source: int, seq: int,
               ids: npt.NDArray[Any], t_sent_ns: int = 0) -> bool:
        """Queue one frame received at monotonic ``now_ns``; False if it could not be kept."""
        if self._start_ns is None:
            self._start_ns = now_ns
        if self.error is not None:
            self.lost_frames += 1
            return False
        with self._cv:
            if len(self._q) >= self.max_frames:
                self._q.popleft()
                self.dropped_frames += 1
            self._q.append((now_ns - self._start_ns, ids))
            self._cv.notify()
        return True

    def _chunks(self, faery: Any) -> Iterator[npt.NDArray[Any]]:
        geo = self.target.geometry
        last_t = -1
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait(0.2)
                batch = list(self._q)
                self._q.clear()
                if not batch and self._closing:
                    return
            t_parts, id_parts = [], []
            for rel_ns, ids in batch:
                t_us = max(self.target.t0_us + rel_ns // 1000, last_t)
                last_t = t_us
                if len(ids):
                    ok = np.asarray(ids, dtype=np.int64) < geo.limit
                    if not ok.all():
                        self.lost_frames += 1
                        ids = np.asarray(ids)[ok]
                    t_parts.append(np.full(len(ids), t_us, dtype=np.uint64))
                    id_parts.append(np.asarray(ids))
                self.frames_written += 1
                self.spikes_written += len(ids)
            if id_parts:
                yield events_of(np.concatenate(t_parts), np.concatenate(id_parts), geo, faery)

    def _run(self) -> None:
        faery = faery_module()
        try:
            write_events(self.target, self._chunks(faery))
        except Exception as exc:  # reported by close(); the loop never sees it
            self.error = f"{exc}"
            self.write_errors += 1

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, finish the file (Faery renames it into place); idempotent."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


# --- command-line options shared by replay, convert and record ----------------------------


def add_camera_arguments(parser: Any, *, window_default: int | None = DEFAULT_WINDOW_US,
                         window: bool = True) -> None:
    """The camera options: geometry fallback and id layout, frame window, EVT version."""
    group = parser.add_argument_group(
        "event-camera files (.aedat4, .raw, .dat, .es, camera .csv; need spikebridge[events])")
    group.add_argument("--width", type=int, default=None,
                       help="sensor width, for files whose header has none (CSV, some EVT/DAT)")
    group.add_argument("--height", type=int, default=None, help="sensor height (likewise)")
    group.add_argument("--layout", default="pyx",
                       help="how (x, y, p) make a neuron id, most significant first (default pyx: "
                            "id = (p*height + y)*width + x); the spif format's keys")
    group.add_argument("--polarity", type=int, default=1, choices=(0, 1),
                       help="polarity written for layouts without p (default 1)")
    shown = "one frame per timestamp" if not window_default else f"{window_default}"
    if window:
        group.add_argument("--window-us", type=int, default=window_default, metavar="US",
                           help=f"group events into frames of US µs; 0: one frame per distinct "
                                f"timestamp, exact (default {shown})")
    else:
        parser.set_defaults(window_us=0)
    group.add_argument("--evt", default=None, choices=EVT_VERSIONS,
                       help="EVT version of a .raw without a version line (reading), or the "
                            "version to write (default evt3)")


def recorder_for(path: str | os.PathLike[str], codec: Any, neurons: int,
                 options: CameraOptions) -> CameraRecorder:
    """A CameraRecorder for ``path``: geometry from options, else the URL's event format."""
    if options.width is None and hasattr(codec, "geometry"):
        geo = codec.geometry
    else:
        try:
            geo = Geometry("camera", neurons, options.width, options.height, options.layout,
                           options.polarity)
        except ValueError as exc:
            raise ValueError(f"{exc}: give --width and --height, or record from an event "
                             "format that has them (format=spif&width=...&height=...)") from None
    return CameraRecorder(CameraTarget(Path(path), geo,
                                       evt_version=options.evt_version or "evt3"))


def camera_options(args: Any, neurons: int = 0) -> CameraOptions:
    """CameraOptions from the parsed arguments of ``add_camera_arguments``; ValueError."""
    from bridge.codecs.geometry import LAYOUTS

    if args.layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {args.layout!r}")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    return CameraOptions(width=args.width, height=args.height, layout=args.layout,
                         polarity=args.polarity, window_us=args.window_us or 0,
                         neurons=neurons, evt_version=args.evt)


def target_for(table: SpikeTable, path: str | os.PathLike[str], options: CameraOptions,
               *, csv_events: bool = True) -> CameraTarget:
    """Where and how to write ``table`` as camera events (geometry: options, else header)."""
    cam = table.header.extra.get("camera") if isinstance(table.header.extra, Mapping) else None
    try:
        geo = geometry_for(table.header, options)
    except ValueError as exc:
        raise CameraError(path, f"{exc}: give --width and --height") from None
    t0 = int(cam.get("t0_us", 0)) if isinstance(cam, Mapping) else 0
    return CameraTarget(Path(path), geo, t0_us=t0, evt_version=options.evt_version or "evt3",
                        csv_events=csv_events)


def convert(src: Path, dst: Path, options: CameraOptions, *, prog: str,
            local_ids: bool = False, csv_events: bool = False) -> int:
    """``spikebridge convert`` when either side is a camera file; returns the exit code."""
    import sys

    from bridge.record import convert as conv

    def fail(message: str, code: int = 2) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code

    try:
        if is_camera_path(src):
            cf = CameraFile(src, options)
            table = cf.table(options.window_us)
        else:
            table = conv.read_any(src)
    except CameraError as exc:
        return fail(str(exc))
    except (RecordingError, conv.ConvertError) as exc:
        return fail(str(exc), 1)
    except OSError as exc:
        return fail(f"cannot read {src}: {exc.strerror or exc}")
    for path, report in zip(table.paths, table.reports, strict=False):
        if report.truncated_bytes or report.damaged:
            print(f"{prog}: warning: {path}: {report.problems()}", file=sys.stderr)
    try:
        if is_camera_path(dst, writing=True, csv_events=csv_events):
            write_table(table, target_for(table, dst, options, csv_events=csv_events),
                        local_ids=local_ids or len(table.header.endpoints) == 1)
        else:
            extra: dict[str, Any] = {"local_ids": local_ids} if dst.suffix == ".npz" else {}
            conv.write_any(table, dst, **extra)
    except CameraError as exc:
        return fail(str(exc))
    except (OSError, ValueError) as exc:
        return fail(f"cannot write {dst}: {exc}", 1)
    return 0
