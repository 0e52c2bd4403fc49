"""``spikebridge convert IN OUT``: recordings to and from CSV and NumPy .npz (Brian2's arrays).

Every format is read into one SpikeTable (a row per spike) and written from it, so any of
.sbr, .csv and .npz converts to any other. The .npz holds Brian2's ``indices`` and ``times``
(seconds) for ``SpikeGeneratorGroup(N, indices, times * second)``, plus the exact columns
(t_ns, endpoint, source, seq, frame, ids) and the header, so .sbr -> .npz -> .sbr loses
nothing but frames without spikes. A plain ``(indices, times)`` pair, such as a SpikeMonitor's
``i`` and ``t / second``, becomes one frame per distinct time. Library users call
``brian2_arrays`` and ``write_spikes`` directly.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge import __version__
from bridge.record import camera
from bridge.record.format import (
    EndpointInfo,
    Header,
    RecordingError,
    encode_end,
    encode_spikes,
    header_from_meta,
    header_meta,
)
from bridge.record.output import add_output_arguments, prepare
from bridge.record.sbrfile import SbrWriter, SpikeTable, load_table
from bridge.tools import ArgumentParser, add_dt, error

PROG = "spikebridge convert"
CSV_COLUMNS = ("time_s", "endpoint", "source", "seq", "neuron")
SUFFIXES = (".sbr", ".csv", ".npz", *(k for k in camera.SUFFIXES if k != ".csv"))


class ConvertError(Exception):
    """Input that cannot be converted: a missing column, an unreadable value."""


def seconds_to_ns(text: str) -> int:
    """Parse decimal seconds to integer ns exactly (no float rounding for plain decimals)."""
    s = text.strip()
    if "e" in s.lower() or not s:
        return round(float(s) * 1e9)
    neg = s.startswith("-")
    whole, _, frac = s.lstrip("+-").partition(".")
    if not (whole or frac) or not (whole + frac).isdigit():
        raise ValueError(f"not a number of seconds: {text!r}")
    ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9])
    if len(frac) > 9 and int(frac[9]) >= 5:
        ns += 1
    return -ns if neg else ns


def _ns_to_seconds(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    q, r = divmod(abs(ns), 1_000_000_000)
    return f"{sign}{q}.{r:09d}"


# --- reading ------------------------------------------------------------------------------


def _synthetic_header(names: Sequence[str], neurons: Sequence[int], origin: str,
                      wall_ns: int) -> Header:
    return Header(
        endpoints=tuple(
            EndpointInfo(name, f"file:{origin}", "in", "native", n)
            for name, n in zip(names, neurons, strict=True)
        ),
        start_wall_ns=wall_ns, start_mono_ns=0, run=uuid.uuid4().hex,
        software=f"spikebridge {__version__}", extra={"converted_from": origin},
    )


def _frames_by_change(*columns: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Frame numbers for rows: a new frame wherever any column changes from the row before."""
    n = len(columns[0])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    for col in columns:
        change[1:] |= col[1:] != col[:-1]
    return np.cumsum(change).astype(np.int64)


def _table(header: Header, t_ns: Any, endpoint: Any, source: Any, seq: Any, ids: Any,
           frame: Any, origin: Path) -> SpikeTable:
    order = np.lexsort((frame, t_ns))  # time order; a frame's spikes stay together
    frame = np.asarray(frame, dtype=np.int64)[order]
    return SpikeTable(
        header=header,
        t_ns=np.asarray(t_ns, dtype=np.int64)[order],
        endpoint=np.asarray(endpoint, dtype=np.uint16)[order],
        source=np.asarray(source, dtype=np.uint32)[order],
        seq=np.asarray(seq, dtype=np.int64)[order],
        ids=np.asarray(ids, dtype=np.uint32)[order],
        frame=frame,
        frames=len(np.unique(frame)),
        gaps=[], reports=[], paths=[origin],
    )


def _check_ids(ids: npt.NDArray[Any], what: str) -> None:
    if len(ids) and (ids.min() < 0 or ids.max() > 0xFFFFFFFF):
        raise ConvertError(f"{what}: neuron ids must lie in 0..2**32-1")


def read_csv(path: str | os.PathLike[str], *, name: str = "in0", neurons: int = 0,
             source: int = 0, wall_ns: int = 0) -> SpikeTable:
    """Read a CSV with ``time_s`` and ``neuron`` columns (``endpoint``, ``source``, ``seq``
    optional); consecutive rows with the same time, endpoint, source and seq form a frame."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for need in ("time_s", "neuron"):
            if need not in cols:
                raise ConvertError(f"{path}: no {need!r} column (columns: {', '.join(cols)})")
        t_ns: list[int] = []
        neuron: list[int] = []
        ep_names: list[str] = []
        sources: list[int] = []
        seqs: list[int] = []
        for line, row in enumerate(reader, start=2):
            try:
                t_ns.append(seconds_to_ns(row["time_s"]))
                neuron.append(int(row["neuron"]))
                ep_names.append(row.get("endpoint") or name)
                sources.append(int(row["source"]) if row.get("source") else source)
                seqs.append(int(row["seq"]) if row.get("seq") not in (None, "") else -1)
            except (ValueError, TypeError) as exc:
                raise ConvertError(f"{path}, line {line}: {exc}") from None
    names = list(dict.fromkeys(ep_names))
    index = {n: i for i, n in enumerate(names)}
    endpoint = np.array([index[n] for n in ep_names], dtype=np.int64)
    ids = np.array(neuron, dtype=np.int64)
    _check_ids(ids, str(path))
    sizes = [neurons or (int(ids[endpoint == i].max()) + 1) for i in range(len(names))]
    header = _synthetic_header(names, sizes, str(path), wall_ns)
    t = np.array(t_ns, dtype=np.int64)
    src = np.array(sources, dtype=np.int64)
    sq = np.array(seqs, dtype=np.int64)
    frame = _frames_by_change(t, endpoint, src, sq)
    return _table(header, t, endpoint, src, sq, ids, frame, Path(path))


def read_npz(path: str | os.PathLike[str], *, name: str = "in0", neurons: int = 0,
             source: int = 0, wall_ns: int = 0) -> SpikeTable:
    """Read an .npz written by ``convert`` (exact), or any with ``indices`` and ``times`` (s)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConvertError(f"{path}: not a NumPy .npz file: {exc}") from None
    with data:
        keys = set(data.files)
        if {"indices", "times"} - keys:
            raise ConvertError(f"{path}: needs 'indices' and 'times' arrays "
                               f"(it has {', '.join(sorted(keys))})")
        if {"t_ns", "endpoint", "source", "seq", "ids", "frame", "header"} <= keys:
            try:
                header = header_from_meta(json.loads(str(data["header"])))
            except (ValueError, RecordingError) as exc:
                raise ConvertError(f"{path}: bad 'header': {exc}") from None
            endpoint = data["endpoint"]
            cols = [data[k] for k in ("t_ns", "source", "seq", "ids", "frame")]
            if any(c.shape != endpoint.shape or c.ndim != 1 for c in cols):
                raise ConvertError(f"{path}: the spike columns differ in length")
            if len(endpoint) and int(endpoint.max()) >= len(header.endpoints):
                raise ConvertError(f"{path}: 'endpoint' indexes beyond the header's endpoints")
            return _table(header, data["t_ns"], endpoint, data["source"], data["seq"],
                          data["ids"], data["frame"], Path(path))
        indices = np.asarray(data["indices"])
        times = np.asarray(data["times"], dtype=np.float64)
    if indices.shape != times.shape or indices.ndim != 1:
        raise ConvertError(f"{path}: 'indices' and 'times' must be 1-D and of equal length")
    if indices.dtype.kind not in "iu":
        raise ConvertError(f"{path}: 'indices' must be integers, got {indices.dtype}")
    _check_ids(indices, str(path))
    t = np.round(times * 1e9).astype(np.int64)
    order = np.argsort(t, kind="stable")
    t, ids = t[order], indices[order].astype(np.int64)
    frame = _frames_by_change(t)
    size = neurons or (int(ids.max()) + 1 if len(ids) else 0)
    header = _synthetic_header([name], [size], str(path), wall_ns)
    zeros = np.zeros(len(t), dtype=np.int64)
    return _table(header, t, zeros, zeros + source, frame, ids, frame, Path(path))


def read_any(path: str | os.PathLike[str], **kw: Any) -> SpikeTable:
    """Read .sbr, .csv or .npz by suffix (keywords apply to CSV and plain .npz input)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".sbr":
        return load_table([path])
    if suffix == ".csv":
        return read_csv(path, **kw)
    if suffix == ".npz":
        return read_npz(path, **kw)
    raise ConvertError(f"{path}: unknown suffix; expected one of {', '.join(SUFFIXES)}")


# --- writing ------------------------------------------------------------------------------


def population_ids(table: SpikeTable) -> npt.NDArray[np.int64]:
    """Each spike's index in its population: the endpoint's offset plus the id."""
    offsets = np.array([e.offset for e in table.header.endpoints] or [0], dtype=np.int64)
    return table.ids.astype(np.int64) + offsets[table.endpoint]


def brian2_arrays(
    table: SpikeTable | str | os.PathLike[str], *, local_ids: bool = False,
    dt_s: float | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(indices, times in s) for ``SpikeGeneratorGroup(N, indices, times * second)``.

    With ``dt_s``, times snap to multiples of dt and repeats of one neuron within one step are
    removed (SpikeGeneratorGroup refuses them).
    """
    if not isinstance(table, SpikeTable):
        table = read_any(table)
    indices = table.ids.astype(np.int64) if local_ids else population_ids(table)
    times = table.t_ns / 1e9
    if dt_s is not None:
        if not dt_s > 0:
            raise ValueError(f"dt must be > 0 s, got {dt_s}")
        steps = np.round(times / dt_s).astype(np.int64)
        _, first = np.unique(np.stack([steps, indices]), axis=1, return_index=True)
        first.sort()
        indices, times = indices[first], (steps[first] * dt_s).astype(np.float64)
    return indices, times


def write_csv(table: SpikeTable, path: str | os.PathLike[str]) -> int:
    """One row per spike: time_s (9 decimals, exact), endpoint name, source, seq, neuron."""
    names = [e.name for e in table.header.endpoints]
    with open(path, "x", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        for t, ep, src, sq, i in zip(
            table.t_ns.tolist(), table.endpoint.tolist(), table.source.tolist(),
            table.seq.tolist(), table.ids.tolist(), strict=True,
        ):
            out.writerow((_ns_to_seconds(t), names[ep], src, "" if sq < 0 else sq, i))
    return len(table.t_ns)


def write_npz(table: SpikeTable, path: str | os.PathLike[str], *, local_ids: bool = False,
              dt_s: float | None = None) -> int:
    """Brian2's ``indices``/``times`` plus the exact columns and the header."""
    indices, times = brian2_arrays(table, local_ids=local_ids, dt_s=dt_s)
    with open(path, "xb") as fh:
        np.savez_compressed(
            fh, indices=indices, times=times, t_ns=table.t_ns, endpoint=table.endpoint,
            endpoint_names=np.array([e.name for e in table.header.endpoints], dtype=str),
            source=table.source, seq=table.seq, ids=table.ids, frame=table.frame,
            header=np.array(json.dumps(header_meta(table.header))),
        )
    return len(indices)


def write_sbr(table: SpikeTable, path: str | os.PathLike[str]) -> int:
    """A recording with one record per frame of ``table``; returns the frames written."""
    writer = SbrWriter(path, table.header)
    try:
        cuts = np.flatnonzero(np.diff(table.frame)) + 1
        starts = [0, *cuts.tolist()]
        ends = [*cuts.tolist(), len(table.frame)]
        chunk = bytearray()
        frames = 0
        for a, b in zip(starts, ends, strict=True):
            if a == b:
                continue
            chunk += encode_spikes(
                int(table.t_ns[a]), int(table.endpoint[a]), int(table.source[a]),
                int(table.seq[a]), 0, table.ids[a:b],
            )
            frames += 1
            if len(chunk) > 1 << 20:
                writer.write(chunk)
                chunk = bytearray()
        end_t = int(table.t_ns.max()) if len(table.t_ns) else 0
        chunk += encode_end(end_t, frames, len(table.ids), 0, 0)
        writer.write(chunk)
    finally:
        writer.close()
    return frames


def write_spikes(path: str | os.PathLike[str], indices: Any, times_s: Any, *,
                 name: str = "in0", neurons: int = 0, source: int = 0) -> int:
    """Write Brian2-style ``(indices, times in s)`` as a recording (.sbr, .csv or .npz)."""
    tmp = Path(path).with_suffix(".npz.tmp")
    try:
        with open(tmp, "xb") as fh:
            np.savez(fh, indices=np.asarray(indices), times=np.asarray(times_s, dtype=float))
        table = read_npz(tmp, name=name, neurons=neurons, source=source,
                         wall_ns=time.time_ns())
    finally:
        tmp.unlink(missing_ok=True)
    return write_any(table, path)


def write_any(table: SpikeTable, path: str | os.PathLike[str], **kw: Any) -> int:
    """Write by suffix; returns spikes (CSV, .npz) or frames (.sbr) written."""
    suffix = Path(path).suffix.lower()
    if suffix == ".sbr":
        return write_sbr(table, path)
    if suffix == ".csv":
        return write_csv(table, path)
    if suffix == ".npz":
        return write_npz(table, path, **kw)
    raise ConvertError(f"{path}: unknown suffix; expected one of {', '.join(SUFFIXES)}")


def main(argv: Sequence[str]) -> int:
    """Convert IN to OUT by their suffixes; exit 0, 1 when writing fails, 2 on a bad argument
    or a bad input file."""
    parser = ArgumentParser(
        prog=PROG, description=__doc__,
        epilog="examples: spikebridge convert run.sbr run.npz --dt 0.1 | "
               "spikebridge convert monitor.npz stimulus.sbr --neurons 100",
    )
    parser.add_argument("input", help="a .sbr, .csv or .npz file, or an event-camera file "
                                      "(.aedat4, .raw, .dat, .es)")
    parser.add_argument("output", help="the file to create; its suffix picks the format "
                                       "(the same suffixes)")
    parser.add_argument("--local-ids", action="store_true",
                        help=".npz indices as received, without each endpoint's offset")
    add_dt(parser, ".npz: snap times to a dt grid and drop repeats within a step "
                   "(what SpikeGeneratorGroup needs)", dest="dt_ms")
    parser.add_argument("--name", default="in0",
                        help="endpoint name for input without one")
    parser.add_argument("--neurons", type=int, default=0,
                        help="population size for input without one (default: max id + 1)")
    parser.add_argument("--source", type=int, default=0,
                        help="source node for input without one")
    parser.add_argument("--camera-csv", action="store_true",
                        help="a .csv output holds camera events (t,x,y,on, as Faery writes) "
                             "instead of one row per spike")
    add_output_arguments(parser)
    camera.add_camera_arguments(parser, window_default=0)
    args = parser.parse_args(argv)
    src, dst = Path(args.input), Path(args.output)
    for p in (src, dst):
        if p.suffix.lower() not in SUFFIXES:
            return error(PROG, f"{p}: unknown suffix; expected one of {', '.join(SUFFIXES)}")
    if args.neurons < 0 or not 0 <= args.source <= 0xFFFFFFFF:
        return error(PROG, "--neurons must be >= 0 and --source in 0..2**32-1")
    if args.dt_ms is not None and (not args.dt_ms > 0 or dst.suffix.lower() != ".npz"):
        return error(PROG, "--dt must be > 0 and applies to .npz output")
    try:
        cam = camera.camera_options(args, args.neurons)
    except ValueError as exc:
        return error(PROG, str(exc))
    if not src.is_file():
        return error(PROG, f"cannot read {src}: no such file")
    problem = prepare(dst, parents=args.parents, force=args.force)
    if problem is not None:
        return error(PROG, problem)
    if camera.is_camera_path(src) or camera.is_camera_path(dst, writing=True,
                                                           csv_events=args.camera_csv):
        code = camera.convert(src, dst, cam, prog=PROG, local_ids=args.local_ids,
                              csv_events=args.camera_csv)
        if code == 0 and not args.quiet:
            print(f"{src} -> {dst}", flush=True)
        return code
    kw: dict[str, Any] = {}
    if src.suffix.lower() != ".sbr":
        kw = {"name": args.name, "neurons": args.neurons, "source": args.source,
              "wall_ns": time.time_ns()}
    try:
        table = read_any(src, **kw)
    except OSError as exc:
        return error(PROG, f"cannot read {src}: {exc.strerror}")
    except (RecordingError, ConvertError) as exc:  # a bad input file: exit 2
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    for path, report in zip(table.paths, table.reports, strict=False):
        if report.truncated_bytes or report.damaged:
            print(f"{PROG}: warning: {path}: {report.problems()}", file=sys.stderr)
    out_kw: dict[str, Any] = {}
    if dst.suffix.lower() == ".npz":
        out_kw = {"local_ids": args.local_ids,
                  "dt_s": args.dt_ms / 1000 if args.dt_ms is not None else None}
    try:
        written = write_any(table, dst, **out_kw)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: cannot write {dst}: {exc}", file=sys.stderr)
        return 1
    if args.dt_ms is not None and written < len(table.ids):
        print(f"{PROG}: {len(table.ids) - written} repeated spike(s) within one "
              f"{args.dt_ms:g} ms step removed", file=sys.stderr)
    if not args.quiet:  # on stdout, piped or not
        unit = "frames" if dst.suffix.lower() == ".sbr" else "spikes"
        print(f"{src} -> {dst}: {written} {unit}", flush=True)
    return 0
