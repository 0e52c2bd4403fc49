"""``spikebridge top URL|CONFIG``: a live terminal view of an endpoint or of a running daemon.

With a URL it receives on that endpoint itself and shows, per source node, frame and spike
rates, sequence gaps and undecodable input, and the most active neurons. With a daemon's
config (or ``--metrics URL``) it scrapes the daemon's Prometheus endpoint and shows per-endpoint
rates and drops by reason, and the step-lateness and latency quantiles. On a terminal the view
is redrawn in place; piped, one plain snapshot per interval is printed. It only reads: it never
sends to an endpoint and only GETs the metrics page.
"""

from __future__ import annotations

import math
import selectors
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bridge.endpoints import endpoint_spec, make_codec, open_endpoint
from bridge.endpoints.url import SCHEMES
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.errors import ConfigError, EndpointError
from bridge.frame import NO_SEQ, IdArray
from bridge.record.intake import Intake
from bridge.tools import ArgumentParser, error
from bridge.tools import metrics_url as tools_metrics_url

PROG = "spikebridge top"
P = "spikebridge_"
CLEAR = "\x1b[H\x1b[J"

Labels = tuple[tuple[str, str], ...]


# --- the daemon's metrics -------------------------------------------------------------------


@dataclass
class Scrape:
    """One parsed exposition: samples by (name, labels), histograms as cumulative buckets."""

    values: dict[tuple[str, Labels], float] = field(default_factory=dict)
    buckets: dict[tuple[str, Labels], list[tuple[float, float]]] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent)."""
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def label_values(self, name: str, label: str) -> list[str]:
        """The values ``label`` takes among the samples of ``name``, in first-seen order."""
        seen: dict[str, None] = {}
        for (n, labels), _ in self.values.items():
            if n == name:
                for k, v in labels:
                    if k == label:
                        seen[v] = None
        return list(seen)


def parse_exposition(text: str) -> Scrape:
    """Parse Prometheus text exposition; ValueError when it is not valid."""
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket") and "le" in s.labels:
                rest = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                le = float(s.labels["le"])
                scrape.buckets.setdefault((s.name[: -len("_bucket")], rest), []).append(
                    (le, float(s.value))
                )
                continue
            scrape.values[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    for series in scrape.buckets.values():
        series.sort()
    return scrape


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile: linear within the bucket; nan without observations.

    ``buckets`` are (upper edge, cumulative count) sorted by edge, the last one +Inf. A
    quantile in the +Inf bucket returns the highest finite edge (a lower bound).
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_edge, prev_count = 0.0, 0.0
    for edge, count in buckets:
        if count >= rank and count > prev_count:
            if math.isinf(edge):
                return prev_edge
            return prev_edge + (edge - prev_edge) * (rank - prev_count) / (count - prev_count)
        prev_edge, prev_count = (edge if not math.isinf(edge) else prev_edge), count
    return prev_edge


def bucket_delta(
    now: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]] | None
) -> list[tuple[float, float]]:
    """The buckets of the observations made between two scrapes (a counter reset: all)."""
    if not before or len(before) != len(now):
        return list(now)
    delta = [(e, c - b) for (e, c), (_, b) in zip(now, before, strict=True)]
    return list(now) if any(d < 0 for _, d in delta) else delta


def fmt_seconds(s: float) -> str:
    """A latency for humans: µs or ms."""
    if math.isnan(s):
        return "-"
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def render_metrics(now: Scrape, before: Scrape | None, dt_s: float, source: str) -> list[str]:
    """The daemon view: per-endpoint rates and drops, then timing quantiles."""
    lines = [f"daemon metrics from {source}"]
    rf = now.get(P + "realtime_factor")
    lines.append(
        f"steps {now.get(P + 'steps_total'):.0f}  deadline misses "
        f"{now.get(P + 'deadline_misses_total'):.0f}  realtime factor {rf:.3f}"
    )

    def rate(name: str, **labels: str) -> str:
        if before is None or dt_s <= 0:
            return "-"
        d = now.get(name, **labels) - before.get(name, **labels)
        return f"{max(d, 0.0) / dt_s:.1f}"

    lines.append("")
    lines.append(f"{'ENDPOINT':<14}{'FRAMES/S':>10}{'SPIKES/S':>11}{'FRAMES':>12}{'DROPS':>9}"
                 "  DROP REASONS")
    names = [*now.label_values(P + "frames_received_total", "endpoint"),
             *now.label_values(P + "frames_sent_total", "endpoint")]
    for name in dict.fromkeys(names):
        is_in = (P + "frames_received_total", (("endpoint", name),)) in now.values
        frames_name = P + ("frames_received_total" if is_in else "frames_sent_total")
        spikes_name = P + ("spikes_received_total" if is_in else "spikes_sent_total")
        reasons = {
            r: now.get(P + "frames_dropped_total", endpoint=name, reason=r)
            for r in now.label_values(P + "frames_dropped_total", "reason")
        }
        drops = {r: n for r, n in reasons.items() if n}
        text = ", ".join(f"{r}={n:.0f}" for r, n in sorted(drops.items()))
        lines.append(
            f"{name:<14}{rate(frames_name, endpoint=name):>10}"
            f"{rate(spikes_name, endpoint=name):>11}{now.get(frames_name, endpoint=name):>12.0f}"
            f"{sum(drops.values()):>9.0f}  {text}"
        )
    lines.append("")
    lines.append(f"{'TIMING':<34}{'p50':>10}{'p99':>10}{'p99.9':>10}{'count':>10}  window")
    for (name, labels), buckets in sorted(now.buckets.items()):
        if not name.startswith(P):
            continue
        prev = before.buckets.get((name, labels)) if before is not None else None
        window = bucket_delta(buckets, prev)
        scope = "interval"
        if prev is None or window[-1][1] <= 0:
            window, scope = list(buckets), "since start"
        tag = name[len(P):].removesuffix("_seconds")
        if labels:
            tag += "{" + ",".join(v for _, v in labels) + "}"
        qs = [fmt_seconds(histogram_quantile(q, window)) for q in (0.5, 0.99, 0.999)]
        lines.append(f"{tag:<34}{qs[0]:>10}{qs[1]:>10}{qs[2]:>10}{window[-1][1]:>10.0f}  {scope}")
    return lines


def check_metrics_url(url: str) -> str:
    """``url`` when it is an http(s)://HOST[:PORT]/PATH URL; ConfigError naming it otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        raise ConfigError(f"not a URL: {exc}", key=f"--metrics {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("expected http://HOST:PORT/metrics", key=f"--metrics {url!r}")
    return url


def scrape(url: str, timeout: float = 2.0) -> Scrape:
    """GET and parse ``url``; OSError or ValueError when it fails."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"metrics URLs are http:// or https://, got {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse_exposition(resp.read().decode("utf-8", "replace"))


# --- an endpoint we receive on ourselves -----------------------------------------------------


class EndpointWatch:
    """Counts what arrives at one endpoint, per source node, between two ``render`` calls."""

    def __init__(self, intake: Intake, top: int = 10) -> None:
        self.intake = intake
        self.top = top
        self.frames: Counter[int] = Counter()
        self.spikes: Counter[int] = Counter()
        self.window_frames: Counter[int] = Counter()
        self.window_spikes: Counter[int] = Counter()
        self.gaps: Counter[int] = Counter()
        self._last_seq: dict[int, int] = {}
        self._ids: list[IdArray] = []

    def drain(self) -> None:
        """Take every pending frame."""
        for f in self.intake.frames():
            n = len(f.ids)
            self.frames[f.source] += 1
            self.spikes[f.source] += n
            self.window_frames[f.source] += 1
            self.window_spikes[f.source] += n
            if f.seq != NO_SEQ:
                last = self._last_seq.get(f.source)
                if last is not None and f.seq > last + 1:
                    self.gaps[f.source] += f.seq - last - 1
                if last is None or f.seq > last:
                    self._last_seq[f.source] = f.seq
            if n:
                self._ids.append(f.ids)

    def render(self, dt_s: float) -> list[str]:
        """The per-source table and the most active neurons of the last ``dt_s`` seconds."""
        dt = max(dt_s, 1e-9)
        lines = [f"{'SOURCE':<10}{'FRAMES/S':>10}{'SPIKES/S':>11}{'FRAMES':>12}{'SEQ GAPS':>10}"]
        for src in sorted(self.frames):
            lines.append(
                f"{src:<10}{self.window_frames[src] / dt:>10.1f}"
                f"{self.window_spikes[src] / dt:>11.1f}{self.frames[src]:>12}{self.gaps[src]:>10}"
            )
        if not self.frames:
            lines.append("(nothing received yet)")
        drops = self.intake.drops
        kernel = self.intake.ep.overflow_drops()
        text = ", ".join(f"{r}={n}" for r, n in sorted(drops.items()))
        lines.append(f"dropped: {sum(drops.values()) + kernel}"
                     f"{'  (' + text + ')' if text else ''}"
                     f"{f'  kernel {kernel}' if kernel else ''}")
        lines.append("")
        if self._ids:
            ids, counts = np.unique(np.concatenate(self._ids), return_counts=True)
            order = np.argsort(-counts, kind="stable")[: self.top]
            lines.append(f"most active neurons (spikes/s over {dt_s:.1f} s):")
            lines.extend(f"  {int(ids[i]):>8}  {counts[i] / dt:>10.1f}" for i in order)
        else:
            lines.append("most active neurons: none in this interval")
        self._ids = []
        self.window_frames.clear()
        self.window_spikes.clear()
        return lines


# --- the command ---------------------------------------------------------------------------


def _metrics_url_from_config(path: str) -> str:
    from bridge.config import load_config

    cfg = load_config(path)
    if cfg.metrics.listen is None:
        raise ConfigError("the config has no [metrics] listen address; give --metrics URL",
                          key="metrics.listen")
    host, port = cfg.metrics.listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def _draw(out: TextIO, lines: list[str], tty: bool) -> None:
    if tty:
        out.write(CLEAR + "\n".join(lines) + "\n")
    else:
        out.write("\n".join(lines) + "\n\n")
    out.flush()


def main(argv: Sequence[str], *, clock: Clock = SYSTEM_CLOCK,
         out: TextIO | None = None) -> int:
    """Show the view until Ctrl-C or --iterations; returns the exit code."""
    parser = ArgumentParser(
        prog=PROG, description=__doc__,
        epilog="examples: spikebridge top 'udp://0.0.0.0:5000?format=native' | "
               "spikebridge top /etc/spikebridge/spikebridge.toml",
    )
    parser.add_argument("target", nargs="?", help="an endpoint URL, or a daemon's config file")
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT",
                        help="scrape this metrics page, HOST:PORT or a URL (default: from the "
                             "config's [metrics])")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    parser.add_argument("--iterations", type=int, default=0,
                        help="stop after N redraws (default: until Ctrl-C)")
    parser.add_argument("--top", type=int, default=10, help="most active neurons shown")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    if not args.interval > 0 or args.iterations < 0 or args.top < 0:
        return error(PROG, "--interval must be > 0, --iterations and --top >= 0")
    if args.target is None and args.metrics is None:
        return error(PROG, "give an endpoint URL, a config file or --metrics URL")
    metrics_url: str | None = None
    watch: EndpointWatch | None = None
    sel = selectors.DefaultSelector()
    try:
        if args.metrics is not None:  # HOST:PORT or a URL, as --metrics takes everywhere
            metrics_url = tools_metrics_url(args.metrics)
            check_metrics_url(metrics_url)
        if args.target is not None:
            is_url = args.target.partition(":")[0] in SCHEMES
            if is_url:
                spec = endpoint_spec(args.target, "in")
                ep = open_endpoint(spec)
                watch = EndpointWatch(Intake(ep, make_codec(spec), spec.stream), args.top)
                sel.register(ep.fileno(), selectors.EVENT_READ)
            elif metrics_url is None:
                metrics_url = _metrics_url_from_config(args.target)
    except ConfigError as exc:
        return error(PROG, str(exc))
    except EndpointError as exc:  # a port in use, a missing device: exit 2 like run
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    stop = False

    def on_signal(_sig: int, _frm: object) -> None:
        nonlocal stop
        stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = out.isatty()
    interval_ns = int(args.interval * 1e9)
    last_scrape: Scrape | None = None
    last_ns = clock.monotonic_ns()
    next_ns = last_ns + interval_ns
    shown = 0
    failed = False  # the last scrape failed: the exit code is 1
    get: Callable[[str], Scrape] = scrape
    try:
        while not stop:
            wait = max(0.0, (next_ns - clock.monotonic_ns()) / 1e9)
            if watch is not None:
                if sel.select(wait):
                    watch.drain()
                if clock.monotonic_ns() < next_ns:
                    continue
            else:
                clock.sleep_ns(int(wait * 1e9))
            now = clock.monotonic_ns()
            dt_s = (now - last_ns) / 1e9
            last_ns, next_ns = now, max(next_ns + interval_ns, now)
            lines = [f"{PROG}  {time.strftime('%H:%M:%S')}  every {args.interval:g} s"
                     f"{'  (Ctrl-C quits)' if tty else ''}", ""]
            if watch is not None:
                lines += [f"endpoint {watch.intake.ep.describe()}", *watch.render(dt_s), ""]
            if metrics_url is not None:
                try:
                    current = get(metrics_url)
                    lines += render_metrics(current, last_scrape, dt_s, metrics_url)
                    last_scrape = current
                    failed = False
                except (OSError, ValueError, urllib.error.URLError) as exc:
                    failed = True
                    if last_scrape is None:  # never reached: no daemon there, or not its page
                        print(f"{PROG}: cannot read {metrics_url}: {exc} (is the daemon "
                              "running with [metrics] listen?)", file=sys.stderr)
                        return 1
                    lines.append(f"cannot read {metrics_url}: {exc}")
            _draw(out, lines, tty)
            shown += 1
            if args.iterations and shown >= args.iterations:
                break
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        sel.close()
        if watch is not None:
            watch.intake.ep.close()
    return 1 if failed else 0
