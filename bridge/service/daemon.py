"""``spikebridge run``: the daemon's life cycle around the engine, as a systemd service.

Config -> logging (journald or stderr) -> metrics server -> open every endpoint and build the
processor (EXTEND_TIMEOUT_USEC while that takes long) -> run the loop in this thread. The
loop raises itself to real time; its tick then sends READY=1, pings the watchdog and keeps
STATUS fresh. SIGTERM/SIGINT: STOPPING=1, drain, flush recordings, post-run hook, exit 0.
SIGHUP: RELOADING=1, re-read the config file, apply what can change while running, READY=1.

Exit codes: 0 after a clean stop, 1 when the loop failed, 2 for a bad config or argument, an
endpoint that cannot be opened, or a [realtime] setting marked required that the system
refuses (no READY=1 has been sent then). Signal handlers only set flags and send one
notification; threads (log writer, metrics server) are started before the loop runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from types import FrameType, MappingProxyType

from prometheus_client.registry import REGISTRY, CollectorRegistry

from bridge.config import (
    CLI_SOURCE,
    BridgeConfig,
    config_from_flags,
    describe_change,
    load_config,
)
from bridge.engine.clock import SYSTEM_CLOCK, Clock
from bridge.engine.loop import Bridge
from bridge.engine.realtime import RealtimeRefused
from bridge.engine.stats import BridgeStats
from bridge.errors import ConfigError, EndpointError
from bridge.preflight import preflight
from bridge.processors import SPEC_GRAMMAR
from bridge.service import logs, metrics
from bridge.service.heartbeat import Heartbeat
from bridge.service.metrics_process import MetricsProcess
from bridge.service.notify import Notifier
from bridge.service.status import StatusLine
from bridge.service.watchdog import WatchdogConfig, watchdog_usec
from bridge.tools import ArgumentParser, RawHelpFormatter, error

log = logging.getLogger("spikebridge")

# Each progress report during start-up (Brian2 code generation and compilation) asks the
# service manager for this much more time, so TimeoutStartSec only has to cover a silent gap.
EXTEND_TIMEOUT_NS = 60_000_000_000
EXTEND_EVERY_NS = 1_000_000_000


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(
        prog="spikebridge run",
        description="Run the bridge: from a TOML config, or from --in/--out URLs with no file. "
                    "With a config file, --node, --dt, --duration, --repetitions and --metrics "
                    "override the file's keys (each override is logged).",
        epilog="examples:\n"
        "  spikebridge run /etc/spikebridge/spikebridge.toml\n"
        "  spikebridge run examples/cuba.toml --duration 10 --repetitions 3\n"
        "  spikebridge run --in 'udp://0.0.0.0:50001?format=legacy&neurons=100' \\\n"
        "                  --out 'udp://10.0.0.2:50002?format=legacy'\n"
        "  spikebridge run --in 'udp://127.0.0.1:50001?neurons=100' --out ... \\\n"
        "                  --processor brian2:examples/reflex.py --dt 1 --duration 10\n"
        "\n"
        "signals: SIGTERM/SIGINT stop cleanly (drain, flush, post-run hook, exit 0).\n"
        "SIGHUP re-reads the config file (with the same command-line overrides) and applies\n"
        "the [watchdog] section and, per input, allow=, key=, source= and the [bridge] keys\n"
        "max_age_ms and on_error; anything else that changed is named in a warning and\n"
        "waits for a restart.",
        formatter_class=RawHelpFormatter,
    )
    parser.add_argument("config", nargs="?", help="TOML config file")
    parser.add_argument("--in", dest="inputs", action="append", default=[], metavar="URL",
                        help="input endpoint URL (repeat for several)")
    parser.add_argument("--out", dest="outputs", action="append", default=[], metavar="URL",
                        help="output endpoint URL (repeat for several)")
    parser.add_argument("--processor", default="relay", metavar="SPEC",
                        help=f"{SPEC_GRAMMAR} (with --in/--out; a file sets [bridge] processor)")
    parser.add_argument("--node", type=int,
                        help="this node's address (default: the file's [bridge] node, else 1)")
    parser.add_argument("--dt", type=float, metavar="MS",
                        help="step in ms, implies stepped mode (default: the file's dt_ms, "
                             "else 1 ms when stepped)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="seconds per run (default: the file's duration_s, else run "
                             "until stopped)")
    parser.add_argument("--repetitions", type=int, metavar="N",
                        help="runs, needs a duration (default: the file's repetitions, else 1)")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics here, HOST:PORT or a URL such as "
                             "http://127.0.0.1:9877/metrics "
                             "(default: the file's [metrics] listen, else off)")
    parser.sets_logging = False  # type: ignore[attr-defined]  # logs.configure does it
    return parser


def parse_args(argv: Sequence[str]) -> tuple[BridgeConfig | None, str | None, str]:
    """Build the config from ``CONFIG.toml`` or from --in/--out flags: (config, error, level).

    With a file, --node, --dt, --duration, --repetitions and --metrics override its keys;
    ``overridden(cfg)`` then names them for the log.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (args.log_level or ("warning" if args.quiet else "info")).upper()
    try:
        if args.config:
            if args.inputs or args.outputs:
                return None, "give a CONFIG file or --in/--out URLs, not both", level
            if args.processor != "relay":
                return None, ("--processor goes with --in/--out; set [bridge] processor in "
                              "the config file"), level
            cfg = load_config(args.config, overrides=_overrides(args))
        else:
            if not args.inputs:
                return None, "give a CONFIG file, or at least one --in URL", level
            cfg = config_from_flags(
                args.inputs, args.outputs, processor=args.processor, node=args.node,
                dt_ms=args.dt, duration_s=args.duration, repetitions=args.repetitions,
                metrics=args.metrics,
            )
    except ConfigError as exc:
        return None, str(exc), level
    return cfg, None, level


# --flag -> the [bridge] key it overrides (--metrics overrides [metrics] listen).
OVERRIDES = {"node": "node", "dt": "dt_ms", "duration": "duration_s",
             "repetitions": "repetitions"}


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The file keys the command line sets: {"bridge.dt_ms": 0.5, "metrics.listen": ...}."""
    got: dict[str, object] = {f"bridge.{key}": getattr(args, flag)
                              for flag, key in OVERRIDES.items() if getattr(args, flag) is not None}
    if args.metrics is not None:
        got["metrics.listen"] = args.metrics
    return got


class StartupProgress:
    """``on_progress`` for Bridge.open: logs each step and extends the start-up timeout."""

    def __init__(self, notifier: Notifier, clock: Clock) -> None:
        self._notifier = notifier
        self._clock = clock
        self._next_ns: int | None = None

    def __call__(self, message: str) -> None:
        log.info("%s", message)
        now = self._clock.monotonic_ns()
        if self._next_ns is None or now >= self._next_ns:
            self._next_ns = now + EXTEND_EVERY_NS
            self._notifier.extend_timeout(EXTEND_TIMEOUT_NS // 1000, f"starting: {message}")


class Reloader:
    """``on_reload`` for Bridge.run (loop thread): RELOADING=1, re-read, apply, READY=1.

    What can change while running is the [watchdog] section. Anything else that differs is
    named in a warning and waits for a restart: endpoints and the processor are open, and the
    metrics server cannot be rebound from the real-time thread.
    """

    def __init__(self, cfg: BridgeConfig, heartbeat: Heartbeat, notifier: Notifier,
                 clock: Clock, usec: int, bridge: Bridge | None = None) -> None:
        self.cfg = cfg
        self._bridge = bridge
        self._heartbeat = heartbeat
        self._notifier = notifier
        self._clock = clock
        self._usec = usec

    def __call__(self) -> None:
        self._notifier.reloading(self._clock.monotonic_ns())
        try:
            self._apply()
        finally:
            self._notifier.ready(self._heartbeat.status_line(self._clock.monotonic_ns()))

    def _apply(self) -> None:
        old = self.cfg
        if old.source == CLI_SOURCE:
            log.info("reload: started from --in/--out, there is no config file to re-read")
            return
        try:
            new = load_config(old.source, overrides={k: v for k, (_, v) in old.overridden.items()})
        except ConfigError as exc:
            log.error("reload: %s; keeping the running config", exc)
            return
        watchdog = _watchdog_config(new)
        self._heartbeat.watchdog = watchdog.policy(self._usec) if self._usec else None
        self.cfg = replace(old, sections=MappingProxyType({**old.sections, "watchdog": watchdog}))
        log.info("reload: applied [watchdog] %s", describe_watchdog(watchdog))
        if self._bridge is not None:
            changed = self._bridge.reconfigure(new)
            log.info("reload: applied allow-lists, auth keys, source filters, max_age_ms, "
                     "on_error")
        else:
            changed = [f.name for f in fields(BridgeConfig)
                       if f.name not in ("sections", "source") and getattr(new, f.name) != getattr(
                           old, f.name)]
        changed += [f"[{name}]" for name in sorted(set(new.sections) | set(old.sections))
                    if name != "watchdog" and new.section(name) != old.section(name)]
        changed = [describe_change(name, old, new) for name in changed]
        if changed:
            log.warning("reload: restart the service to apply: %s", "; ".join(changed))


def describe_watchdog(w: WatchdogConfig) -> str:
    """A [watchdog] section as its config keys: ``stall_ms = 50, max_misses = 3, ...``."""
    window = "the watchdog period" if w.window_ns is None else f"{w.window_ns / 1e9:g}"
    return f"stall_ms = {w.stall_ns / 1e6:g}, max_misses = {w.max_misses}, window_s = {window}"


def _watchdog_config(cfg: BridgeConfig) -> WatchdogConfig:
    section = cfg.section("watchdog")
    return section if isinstance(section, WatchdogConfig) else WatchdogConfig()


def _describe(cfg: BridgeConfig) -> str:
    return (f"{len(cfg.inputs)} in, {len(cfg.outputs)} out, {cfg.mode}, "
            f"processor {cfg.processor}")


class Shutdown:
    """Sends STOPPING=1 once, whichever comes first: a stop signal or the end of the run."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self.begun = False

    def begin(self, why: str) -> None:
        if not self.begun:
            self.begun = True
            self._notifier.stopping(f"stopping ({why}): draining, flushing, post-run hook")


def run(
    cfg: BridgeConfig,
    *,
    environ: Mapping[str, str] | None = None,
    registry: CollectorRegistry = REGISTRY,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Open, run and close one bridge as a service; the process exit code.

    ``environ`` None means the process environment (NOTIFY_SOCKET, WATCHDOG_USEC/_PID).
    """
    try:
        preflight(cfg)  # what check refuses, refused before a socket is opened or code compiled
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    env = os.environ if environ is None else environ
    notifier = Notifier(environ)
    stats = BridgeStats(cfg.miss_ns)
    usec = watchdog_usec(env, os.getpid())
    stats.watchdog_usec = usec
    heartbeat = Heartbeat(stats, notifier, _watchdog_config(cfg).policy(usec) if usec else None,
                          ready=f"ready: {_describe(cfg)}")

    server = None
    if cfg.metrics.listen is not None:
        metrics.register(stats, registry)
        server = MetricsProcess(*cfg.metrics.listen, stats=stats)  # scrapes off the loop's GIL
        try:
            server.start()  # before the loop raises itself: this thread stays SCHED_OTHER
        except EndpointError as exc:
            log.error("%s", exc)
            return 2
    try:
        bridge = Bridge(cfg, clock=clock, stats=stats)
        # A reload asked for during start-up (SIGHUP's default would kill) waits for the loop.
        signal.signal(signal.SIGHUP, lambda _s, _f: bridge.request_reload())
        try:
            bridge.open(on_progress=StartupProgress(notifier, clock))
        except (ConfigError, EndpointError) as exc:
            log.error("%s", exc)
            return 2
        except Exception:
            log.exception("building the processor failed")
            return 1
        for port in bridge.inputs:
            log.info("input  %-10s %s", port.spec.name, port.ep.describe())
        for out in bridge.outputs:
            log.info("output %-10s %s", out.spec.name, out.ep.describe())
        shutdown = Shutdown(notifier)
        _install_signals(bridge, shutdown)
        reloader = Reloader(cfg, heartbeat, notifier, clock, usec, bridge)
        log.info("running (%s)%s", _describe(cfg),
                 f"; watchdog ping every {usec / 2e6:g} s" if usec else "")
        code = 0
        try:
            bridge.run(tick=heartbeat, on_reload=reloader)  # READY=1 on its first tick
        except RealtimeRefused as exc:
            log.error("%s", exc)  # required by [realtime]: a restart cannot help
            code = 2
        except Exception:
            log.exception("the loop failed")
            code = 1
        finally:
            if code == 0 and bridge.failure is not None:
                log.error("stopped: %s", bridge.failure)  # [bridge] on_error = "stop"
                code = 1
            shutdown.begin("run over" if code == 0 else "loop failed")
            bridge.close()
        log.info("stopped: %s", StatusLine.totals(stats))
        return code
    finally:
        if server is not None:
            server.close()


def _install_signals(bridge: Bridge, shutdown: Shutdown) -> None:
    """SIGTERM/SIGINT: STOPPING=1 at once, then stop the loop (SIGHUP is set up earlier)."""

    def on_stop(sig: int, _frame: FrameType | None) -> None:
        shutdown.begin(signal.Signals(sig).name)
        bridge.request_stop()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)


def main(argv: Sequence[str]) -> int:
    """``spikebridge run``: exit 0 after a clean stop, 2 on bad config or arguments."""
    cfg, problem, level = parse_args(argv)
    if cfg is None:
        return error("spikebridge run", problem or "bad arguments")
    setup = logs.configure(level)
    for key, (was, now) in cfg.overridden.items():
        log.info("command line overrides %s: %s -> %s", key,
                 "(not set)" if was is None else was, now)
    try:
        return run(cfg)
    finally:
        setup.close()
