"""``spikebridge plot FILE -o raster.png``: a raster plot of a recording with a rate panel.

Neuron index (the endpoint's offset plus the id, i.e. the population index) against time,
one colour per endpoint; inputs and outputs get separate raster panels because they index
different populations. Under them, each endpoint's population rate (spikes/s) in time bins,
with the recorder's gap records (frames it could not write) marked in red. matplotlib's Agg
backend only: it never opens a window and needs no display.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.record.format import RecordingError
from bridge.record.sbrfile import SpikeTable, load_table
from bridge.tools import ArgumentParser, error

PROG = "spikebridge plot"
EXTRA_HINT = "pip install 'spikebridge[plot]'"
MAX_MARKERS = 2_000_000  # beyond this the raster is thinned evenly (and the title says so)
MAX_BINS = 1_000_000  # rate bins: far more than any image has pixels across


class PlotRangeError(ValueError):
    """The options ask for a plot that cannot be drawn (a bad argument, not a failure)."""


def image_formats() -> list[str]:
    """The image suffixes matplotlib writes; ImportError naming the extra when it is absent."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        raise ImportError(f"plotting needs matplotlib, which is not installed ({exc}); "
                          f"{EXTRA_HINT}") from None
    return sorted(FigureCanvasBase.get_supported_filetypes())


def plot_table(
    table: SpikeTable,
    out: str | os.PathLike[str],
    *,
    bin_s: float = 0.01,
    start_s: float | None = None,
    end_s: float | None = None,
    endpoints: Sequence[str] = (),
    local_ids: bool = False,
    size: tuple[float, float] = (10.0, 6.0),
    dpi: int = 100,
    title: str | None = None,
) -> int:
    """Draw ``table`` to ``out`` (PNG, SVG or PDF by suffix); returns the spikes drawn."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not bin_s > 0:
        raise ValueError(f"the bin width must be > 0 s, got {bin_s}")
    infos = table.header.endpoints
    names = [ep.name for ep in infos]
    unknown = [n for n in endpoints if n not in names]
    if unknown:
        raise KeyError(f"no endpoint {', '.join(unknown)} in the recording "
                       f"(it has {', '.join(names)})")
    wanted = [i for i, n in enumerate(names) if not endpoints or n in endpoints]
    t = table.t_ns / 1e9
    keep = np.isin(table.endpoint, wanted)
    if start_s is not None:
        keep &= t >= start_s
    if end_s is not None:
        keep &= t <= end_s
    t, ep, ids = t[keep], table.endpoint[keep], table.ids[keep].astype(np.int64)
    if not local_ids:
        offsets = np.array([e.offset for e in infos], dtype=np.int64)
        ids = ids + offsets[ep]
    lo = start_s if start_s is not None else (float(t.min()) if len(t) else 0.0)
    hi = end_s if end_s is not None else (float(t.max()) if len(t) else 1.0)
    if hi <= lo:
        hi = lo + bin_s

    directions = [d for d in ("in", "out") if any(infos[i].direction == d for i in wanted)]
    rows = len(directions) + 1
    fig, axes = plt.subplots(
        rows, 1, sharex=True, figsize=size, dpi=dpi,
        gridspec_kw={"height_ratios": [3] * (rows - 1) + [1.2]},
        squeeze=False,
    )
    axs = [a[0] for a in axes]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    step = max(1, int(np.ceil(len(t) / MAX_MARKERS)))
    for ax, direction in zip(axs, directions, strict=False):
        for i in wanted:
            if infos[i].direction != direction:
                continue
            sel = np.flatnonzero(ep == i)[::step]
            ax.plot(t[sel], ids[sel], linestyle="none", marker="|", markersize=3,
                    markeredgewidth=0.8, color=colours[i % len(colours)],
                    label=f"{names[i]} ({len(np.flatnonzero(ep == i))} spikes)", rasterized=True)
        ax.set_ylabel(("input" if direction == "in" else "output") + " neuron")
        ax.margins(y=0.02)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                      markerscale=3, frameon=False)

    rate_ax: Any = axs[-1]
    if (hi - lo) / bin_s > MAX_BINS:
        plt.close(fig)
        raise PlotRangeError(f"--bin-ms {bin_s * 1e3:g} makes {(hi - lo) / bin_s:.3g} rate bins "
                             f"over {hi - lo:g} s; at most {MAX_BINS} are drawn")
    edges = np.arange(lo, hi + bin_s, bin_s)
    if len(edges) < 2:
        edges = np.array([lo, lo + bin_s])
    for i in wanted:
        counts, _ = np.histogram(t[ep == i], bins=edges)
        rate_ax.step(edges[:-1], counts / bin_s, where="post", color=colours[i % len(colours)],
                     label=names[i])
    for gap in table.gaps:
        rate_ax.axvline(gap.t_ns / 1e9, color="red", linewidth=1, alpha=0.7)
    rate_ax.set_ylabel("rate (spikes/s)")
    rate_ax.set_xlabel("time since the recording started (s)")
    rate_ax.set_xlim(lo, hi)
    head = title or f"{len(t)} spikes shown ({table.frames} frames recorded)"
    if table.gaps:
        lost = sum(g.frames for g in table.gaps)
        head += f"; {lost} frames lost by the recorder (red)"
    if step > 1:
        head += f"; raster shows every {step}th spike"
    axs[0].set_title(head, fontsize="medium")
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return len(t)


def main(argv: Sequence[str]) -> int:
    """Draw the plot; exit 0, 1 when drawing fails, 2 for bad arguments or a bad file."""
    parser = ArgumentParser(
        prog=PROG, description=__doc__,
        epilog="example: spikebridge plot run.sbr -o raster.png --bin-ms 5 --start 10 --end 20",
    )
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="the recording (or the rotated segments of one)")
    parser.add_argument("-o", "--output", required=True, help="image file (.png, .svg, .pdf)")
    parser.add_argument("--bin-ms", type=float, default=10.0, help="rate bin width (default 10)")
    parser.add_argument("--start", type=float, default=None, metavar="S", help="from S seconds")
    parser.add_argument("--end", type=float, default=None, metavar="S", help="to S seconds")
    parser.add_argument("--endpoint", action="append", default=[], metavar="NAME",
                        help="only this endpoint (repeatable)")
    parser.add_argument("--local-ids", action="store_true",
                        help="plot ids as received, without the endpoint's offset")
    parser.add_argument("--width", type=float, default=10.0, help="inches (default 10)")
    parser.add_argument("--height", type=float, default=6.0, help="inches (default 6)")
    parser.add_argument("--dpi", type=int, default=100, help="dots per inch (default 100)")
    parser.add_argument("--title", default=None, help="title instead of the spike count")
    args = parser.parse_args(argv)
    if not args.bin_ms > 0 or args.width <= 0 or args.height <= 0 or args.dpi <= 0:
        return error(PROG, "--bin-ms, --width, --height and --dpi must be > 0")
    if args.start is not None and args.end is not None and args.end <= args.start:
        return error(PROG, "--end must be after --start")
    try:
        formats = image_formats()
    except ImportError as exc:
        return error(PROG, str(exc))
    suffix = os.path.splitext(args.output)[1].lower().lstrip(".")
    if suffix not in formats:
        return error(PROG, f"-o {args.output}: unknown image type {suffix or '(no suffix)'!r}; "
                           f"matplotlib writes {', '.join(formats)}")
    try:
        table = load_table(args.files)
    except OSError as exc:
        return error(PROG, f"cannot read {exc.filename}: {exc.strerror}")
    except RecordingError as exc:
        return error(PROG, str(exc))
    try:
        plot_table(
            table, args.output, bin_s=args.bin_ms / 1000, start_s=args.start, end_s=args.end,
            endpoints=args.endpoint, local_ids=args.local_ids, size=(args.width, args.height),
            dpi=args.dpi, title=args.title,
        )
    except KeyError as exc:
        return error(PROG, str(exc.args[0]))
    except PlotRangeError as exc:
        return error(PROG, str(exc))
    except (OSError, ValueError) as exc:
        print(f"{PROG}: cannot draw {args.output}: {exc}", file=sys.stderr)
        return 1
    for path, report in zip(table.paths, table.reports, strict=True):
        if report.truncated_bytes or report.damaged:
            print(f"{PROG}: warning: {path}: {report.problems()}", file=sys.stderr)
    return 0
