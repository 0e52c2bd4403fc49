"""spinnaker://LABEL endpoints: a sPyNNaker population's live output (input) or a
SpikeInjector population (output), set up from the toolchain's own database.

The handshake follows spinn_front_end_common 7.4.1's notification protocol:

1. The toolchain sends ``01 40`` + the database path to the notification port (``notify=``,
   default 127.0.0.1:19999). One ``Listener`` per notification address serves every
   spinnaker endpoint of the daemon.
2. The database is read by a helper thread (bridge/endpoints/spinnaker_db.py), started at
   open, before the loop raises itself; each endpoint maps its label's keys to atoms with
   the database's table and checks ``neurons=`` against the label's atom count.
3. With ``tag=set``, the input reprograms the live-output IP tag to its own socket with SCP
   IPTagSet (use_sender, strip), retried every 2 s until SCAMP answers OK, as
   LiveEventConnection does; with ``tag=db`` it binds where the database's tag points.
4. The acknowledgement ``01 40`` goes back to the toolchain from the notification socket
   itself: the toolchain's socket is connected, a reply from another port is lost.
5. START/RESUME (``0b 40``) opens the gate, STOP/PAUSE (``0a 40``) closes it: frames while
   it is closed are ``not_running`` drops. A new notification (the next ``run()``) re-reads.

All of it runs in the loop thread without blocking: sockets are non-blocking, the database
is read elsewhere, retries are driven by ``service(now)``. Never raises out of recv/send.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote

from bridge.codecs.base import parse_bool
from bridge.codecs.eieio import EieioCodec
from bridge.codecs.spinnaker import (
    DATABASE,
    DATABASE_ACK,
    NOTIFY_PORT,
    SCAMP_PORT,
    START_RESUME,
    STOP_PAUSE,
    SpinnakerCodec,
    iptag_set_request,
    parse_command,
    scp_reply_ok,
)
from bridge.endpoints.base import Address, Endpoint
from bridge.endpoints.spif import SPIF_OUT_PORT, start_command, stop_command
from bridge.endpoints.spinnaker_db import DatabaseReader, OutputTag, Snapshot
from bridge.endpoints.url import EndpointURL
from bridge.errors import REASON_INDEX, DecodeError, EndpointError

log = logging.getLogger("spikebridge.spinnaker")

MAX_DATAGRAM = 65536
TAG_RETRY_NS = 2_000_000_000      # LiveEventConnection waits 2 s for SCAMP's answer, then resends
TAG_REFRESH_NS = 10_000_000_000   # ... and refreshes the tag every 10 s while running
DB_TIMEOUT_NS = 5_000_000_000     # the toolchain gives up after 10 s ([Database] wait_on_...)
NOTIFY_WARN_NS = 30_000_000_000   # say once that no notification came
_NOT_RUNNING = REASON_INDEX["not_running"]
_SEND_FAILED = REASON_INDEX["send_failed"]
_DONTWAIT = socket.MSG_DONTWAIT
SPIF_EVENTS, SPIF_TICK_US = 32, 500  # SPIFLiveSpikesConnection's defaults

# Endpoint states (a small fixed set: they are metric label values).
WAITING, READING, TAGGING, READY, RUNNING, STOPPED, DOWN = (
    "waiting", "reading", "tagging", "ready", "running", "stopped", "down")
STATES = (WAITING, READING, TAGGING, READY, RUNNING, STOPPED, DOWN)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_port(url: EndpointURL, key: str, text: str) -> tuple[str, int]:
    try:
        return EndpointURL("udp", text).host_port()
    except Exception:
        raise ValueError(f"{key} must be HOST:PORT, got {text!r}") from None


def _port(url: EndpointURL, key: str, text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 < value <= 65535:
        raise ValueError(f"{key} must be a port 1..65535, got {text!r}")
    return value


class Listener:
    """The notification listener for one address, shared by the endpoints that name it."""

    def __init__(self, addr: tuple[str, int], allow: tuple[Network, ...]) -> None:
        self.addr = addr
        self.allow = allow
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise EndpointError(
                f"cannot listen for the toolchain's notification on {addr[0]}:{addr[1]}: "
                f"{exc.strerror} (is a LiveEventConnection or another spikebridge using it?)"
            ) from None
        sock.setblocking(False)
        self.sock = sock
        self.reader = DatabaseReader(f"spinnaker-db:{addr[1]}")
        self.endpoints: list[SpinnakerEndpoint] = []
        self.phase = WAITING
        self.toolchain: Any = None
        self.generation = 0
        self.path: str | None = None
        self.start_pending = False
        self.acked = False
        self.read_since_ns: int | None = None
        self.opened_ns: int | None = None
        self.warned_silent = False
        self.warned_db = False
        self.control: dict[str, int] = {}  # control datagrams by result (metrics)
        self._buf = bytearray(MAX_DATAGRAM)
        self._logged: dict[str, int] = {}

    # -- loop side ----------------------------------------------------------------------

    def fds(self) -> tuple[int, int]:
        """The notification socket and the reader's wake socket (for an endpoint's poller)."""
        return self.sock.fileno(), self.reader.wake_r.fileno()

    def _count(self, result: str) -> None:
        self.control[result] = self.control.get(result, 0) + 1

    def _drop(self, reason: str, message: str) -> None:
        self._count(reason)
        n = self._logged.get(reason, 0) + 1
        self._logged[reason] = n
        if n <= 10 or n % 1000 == 0:
            log.warning("spinnaker notify %s:%d: dropped a control message (%s): %s%s",
                        self.addr[0], self.addr[1], reason, message,
                        f" ({n} so far)" if n > 1 else "")

    def pump(self) -> None:
        """Handle pending notifications and database results; never blocks."""
        for _ in range(64):
            try:
                n, addr = self.sock.recvfrom_into(self._buf, 0, _DONTWAIT)
            except OSError:
                break
            self._on_datagram(memoryview(self._buf)[:n], addr)
        if self.reader.results:
            self.reader.drain_wake()
            while self.reader.results:
                self._on_snapshot(self.reader.results.popleft())

    def service(self, now_ns: int) -> None:
        """Timers: the silent-toolchain and silent-database warnings."""
        self.pump()
        if self.opened_ns is None:
            self.opened_ns = now_ns
        if (self.phase == WAITING and not self.warned_silent
                and now_ns - self.opened_ns > NOTIFY_WARN_NS):
            self.warned_silent = True
            log.warning(
                "spinnaker: no notification from the toolchain on %s:%d after %d s; does the "
                "script pass database_notify_host/database_notify_port_num for this address "
                "(activate_live_output_for, SpikeInjector)?", self.addr[0], self.addr[1],
                NOTIFY_WARN_NS // 1_000_000_000)
        if self.phase == READING:
            if self.read_since_ns is None:
                self.read_since_ns = now_ns
            elif not self.warned_db and now_ns - self.read_since_ns > DB_TIMEOUT_NS:
                self.warned_db = True
                self._drop("db_timeout", f"database {self.path} not read after "
                           f"{DB_TIMEOUT_NS // 1_000_000_000} s (locked, or on a slow disk?); "
                           "still waiting: the toolchain times out at 10 s")
        for ep in self.endpoints:
            ep.service_tag(now_ns)

    def _on_datagram(self, data: memoryview, addr: Any) -> None:
        try:
            host = ipaddress.ip_address(addr[0])
        except (ValueError, TypeError, IndexError):
            host = None
        if host is None or not any(host in net for net in self.allow):
            self._drop("not_allowed", f"from {addr[0]}:{addr[1]}, which is not an allowed "
                       "toolchain host (toolchain=CIDR,... to allow it)")
            return
        try:
            cmd = parse_command(data)
        except DecodeError as exc:
            self._drop(exc.reason, f"from {addr[0]}:{addr[1]}: {exc.detail} "
                       f"(bytes {bytes(data[:8]).hex(' ')})")
            return
        if cmd.code == DATABASE:
            self._count("database")
            self._on_database(cmd.path or "", addr)
        elif cmd.code == START_RESUME:
            self._count("start")
            self._on_start()
        elif cmd.code == STOP_PAUSE:
            self._count("stop")
            self._on_stop()

    def _on_database(self, path: str, addr: Any) -> None:
        self.generation += 1
        self.toolchain = addr
        self.path = path
        self.acked = False
        self.start_pending = False
        self.warned_db = False
        self.read_since_ns = None
        if not path:
            log.warning("spinnaker: the toolchain at %s:%d wrote no database (empty path); "
                        "acknowledging as DatabaseConnection does", addr[0], addr[1])
            for ep in self.endpoints:
                ep.mark_down("the toolchain wrote no database")
            self.phase = WAITING
            self._ack()
            return
        log.info("spinnaker: database notification from %s:%d: %s", addr[0], addr[1], path)
        self.phase = READING
        for ep in self.endpoints:
            ep.on_reading()
        labels = tuple(ep.label for ep in self.endpoints)
        self.reader.submit(path, labels, self.generation)

    def _on_snapshot(self, snap: Snapshot) -> None:
        if snap.generation != self.generation:
            return  # a later notification superseded it
        if snap.error is not None:
            self._drop("db_unreadable", f"{snap.error}; not acknowledging, so the toolchain "
                       "times out rather than run without us")
            for ep in self.endpoints:
                ep.mark_down(snap.error)
            self.phase = WAITING
            return
        log.info("spinnaker: read %s (run time %s ms, time step %s us)", snap.path,
                 snap.runtime_ms, snap.timestep_us)
        for ep in self.endpoints:
            ep.apply(snap)
        self.phase = TAGGING
        self.maybe_ack()

    def maybe_ack(self) -> None:
        """Acknowledge once every endpoint is mapped (and its tag set) or down."""
        if self.phase != TAGGING or self.acked:
            return
        if any(ep.state == TAGGING for ep in self.endpoints):
            return
        self._ack()
        self.phase = READY
        if self.start_pending:
            self._on_start()

    def _ack(self) -> None:
        self.acked = True
        try:
            self.sock.sendto(DATABASE_ACK, self.toolchain)
        except OSError as exc:
            log.error("spinnaker: cannot acknowledge the database to %s:%d: %s",
                      self.toolchain[0], self.toolchain[1], exc.strerror)
            return
        log.info("spinnaker: acknowledged the database to %s:%d from %s:%d",
                 self.toolchain[0], self.toolchain[1], *self.sock.getsockname()[:2])

    def _on_start(self) -> None:
        if self.phase in (WAITING, READING, TAGGING):
            # The toolchain only starts after our ack unless [Database] wait_on_confirmation
            # is off; then start as soon as the database is read.
            self.start_pending = True
            log.warning("spinnaker: START before the database was acknowledged; starting "
                        "once it is read")
            return
        self.phase = RUNNING
        log.info("spinnaker: the simulation started (START/RESUME)")
        for ep in self.endpoints:
            ep.on_start()

    def _on_stop(self) -> None:
        self.start_pending = False
        if self.phase == RUNNING:
            self.phase = STOPPED
        log.info("spinnaker: the simulation stopped or paused (STOP/PAUSE)")
        for ep in self.endpoints:
            ep.on_stop()

    def close(self) -> None:
        """Close the socket and stop the reader thread."""
        self.sock.close()
        self.reader.close()


_LISTENERS: dict[tuple[str, int], Listener] = {}


def _listener(addr: tuple[str, int], allow: tuple[Network, ...], ep: SpinnakerEndpoint
              ) -> Listener:
    lis = _LISTENERS.get(addr)
    if lis is None:
        lis = _LISTENERS[addr] = Listener(addr, allow)
    lis.endpoints.append(ep)
    return lis


def _release(lis: Listener, ep: SpinnakerEndpoint) -> None:
    if ep in lis.endpoints:
        lis.endpoints.remove(ep)
    if not lis.endpoints:
        lis.close()
        if _LISTENERS.get(lis.addr) is lis:
            del _LISTENERS[lis.addr]


class SpinnakerEndpoint(Endpoint):
    """spinnaker://LABEL: the live output of population LABEL, or the SpikeInjector LABEL."""

    scheme: ClassVar[str] = "spinnaker"
    default_format: ClassVar[str] = "eieio"
    KEYS: ClassVar[Mapping[str, str]] = {
        "notify": "HOST:PORT the toolchain notifies (default 127.0.0.1:19999; one listener "
                  "per address serves every spinnaker endpoint)",
        "tag": "inputs: db (receive where the database's IP tag points, default) or set "
               "(reprogram the tag to this endpoint's socket with SCP IPTagSet)",
        "bind": "local HOST[:PORT] of this endpoint's socket (default 0.0.0.0:0)",
        "board_port": "the board's SCP/SDP port (default 17893)",
        "full_keys": "outputs: 1 to send 32-bit routing keys, 0 for 16-bit atom ids (default)",
        "toolchain": "CIDRs the notification may come from (default 127.0.0.0/8,::1)",
        "spif": "inputs: HOST[:PORT] of a SPIF board whose output carries this label's keys "
                "(started at START, stopped at STOP; default port 3332)",
    }

    def __init__(self, url: EndpointURL, role: str, options: Mapping[str, str]) -> None:
        super().__init__(url, role, options)
        self.label = unquote(url.target)
        fmt = url.params.get("format", "eieio")
        if fmt != "eieio":
            raise ValueError(f"spinnaker endpoints speak EIEIO; format={fmt} does "
                             "not apply")
        codec_keys = sorted(k for k in url.params if k in EieioCodec.OPTIONS and k not in self.KEYS)
        if codec_keys:
            raise ValueError(f"{', '.join(codec_keys)} do(es) not apply: spinnaker "
                             "endpoints take keys and cores from the toolchain's database")
        for key, applies in (("tag", "in"), ("full_keys", "out"), ("spif", "in")):
            if key in options and role != applies:
                raise ValueError(f"{key}= applies to "
                                 f"{'inputs' if applies == 'in' else 'outputs'} only")
        self.notify = _host_port(url, "notify", options.get(
            "notify", f"127.0.0.1:{NOTIFY_PORT}"))
        self.tag_mode = options.get("tag", "db")
        if self.tag_mode not in ("db", "set"):
            raise ValueError(f"tag must be db or set, got {self.tag_mode!r}")
        bind = options.get("bind", "0.0.0.0:0")
        self.bind_to = _host_port(url, "bind", bind if ":" in bind else f"{bind}:0")
        self.board_port = _port(url, "board_port", options.get("board_port", str(SCAMP_PORT)))
        try:
            self.full_keys = parse_bool(options.get("full_keys", "0"))
        except ValueError as exc:
            raise ValueError(f"full_keys: {exc}") from None
        allow: list[Network] = []
        for part in options.get("toolchain", "127.0.0.0/8,::1").split(","):
            try:
                allow.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"toolchain: not a CIDR network: {part!r}") from None
        self.allow = tuple(allow)
        neurons = url.params.get("neurons", "0")
        self.neurons = int(neurons, 0) if neurons.strip().lstrip("-").isdigit() else 0
        self.spif: tuple[str, int] | None = None
        if "spif" in options:
            if "tag" in options:
                raise ValueError("tag= does not apply with spif=: SPIF streams to "
                                 "whoever sent its start command")
            text = options["spif"]
            if ":" not in text or text.endswith("]"):
                text = f"{text}:{SPIF_OUT_PORT}"
            self.spif = _host_port(url, "spif", text)
        self.codec = SpinnakerCodec(self.neurons, full_keys=self.full_keys,
                                    raw=self.spif is not None)
        self.state = WAITING
        self.control: dict[str, int] = {}
        self.why = ""
        self.refusal_reason = _SEND_FAILED
        self.listener: Listener | None = None
        self._sock: socket.socket | None = None
        self._bound: tuple[str, int] | None = None
        self._poll: Any = None
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._dest: tuple[str, int] | None = None
        self._tag: OutputTag | None = None
        self._tag_next_ns = 0
        self._tag_ok = False
        self._tag_tries = 0

    # -- life cycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Join (or start) the notification listener and open this endpoint's socket."""
        self._poll = select.epoll()
        try:
            self.listener = _listener(self.notify, self.allow, self)
            for fd in self.listener.fds():
                self._poll.register(fd, select.EPOLLIN)
            if self.role == "out" or self.tag_mode == "set" or self.spif is not None:
                err = self._bind(self.bind_to)
                if err is not None:
                    raise EndpointError(f"{self.url}: {err}")
        except BaseException:
            self.close()
            raise
        self.control = self.listener.control
        log.info("spinnaker %s %r: waiting for the toolchain's notification on %s:%d",
                 "input" if self.role == "in" else "output", self.label, *self.notify)

    def _bind(self, addr: tuple[str, int]) -> str | None:
        """(Re)bind this endpoint's socket to ``addr``; an error message, or None."""
        if self._bound == addr and self._sock is not None:
            return None
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self.role == "in":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            return f"cannot bind {addr[0]}:{addr[1]}: {exc.strerror}"
        sock.setblocking(False)
        if self._sock is not None:
            self._unregister_data()
            self._sock.close()
        self._sock = sock
        self._bound = addr
        if self.role == "in" and self._poll is not None:
            self._poll.register(sock.fileno(), select.EPOLLIN)
        return None

    def _unregister_data(self) -> None:
        if self._sock is not None and self._poll is not None and self.role == "in":
            with contextlib.suppress(OSError, ValueError):
                self._poll.unregister(self._sock.fileno())

    def bind_codec(self, codec: Any) -> Any:
        """The loop decodes and encodes through this endpoint's database-driven codec."""
        return self.codec

    def close(self) -> None:
        """Leave the listener (the last one closes it) and close the socket; idempotent."""
        if self.listener is not None:
            _release(self.listener, self)
            self.listener = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._poll is not None:
            self._poll.close()
            self._poll = None

    # -- the handshake (called by the listener, loop thread) ------------------------------

    def _set(self, state: str, why: str = "") -> None:
        self.state = state
        self.why = why

    def mark_down(self, why: str) -> None:
        """Refuse frames until the next database: log ``why`` once."""
        self.codec.unbind(why)
        self._tag = None
        if self.state != DOWN or self.why != why:
            log.error("spinnaker %s %r is down: %s", self.role, self.label, why)
        self._set(DOWN, why)

    def on_reading(self) -> None:
        """A notification came: refuse frames until the new database is applied."""
        self.codec.unbind("the toolchain's database is being read")
        self._tag = None
        self._set(READING)

    def apply(self, snap: Snapshot) -> None:
        """Map this endpoint's label through ``snap``; mark it down when that cannot be done."""
        info = snap.labels.get(self.label)
        if info is None:
            known = ", ".join(repr(k) for k in snap.known[:20]) or "none"
            self.mark_down(f"label {self.label!r} is not in the database {snap.path} "
                           f"(its labels: {known})")
            return
        n = len(info.table)
        if n != self.neurons:
            self.mark_down(f"label {self.label!r} has {n} atoms in the database but "
                           f"neurons={self.neurons}")
            return
        if self.role == "in":
            self._apply_input(info.tag, snap)
        else:
            self._apply_output(info, snap)
        if self.state != DOWN:
            self.codec.bind(info.table, self._sdp)

    _sdp: tuple[int, int, int] | None = None

    def _apply_input(self, tag: OutputTag | None, snap: Snapshot) -> None:
        if self.spif is not None:
            self._set(READY)
            log.info("spinnaker input %r: %d atoms, from SPIF %s:%d", self.label, self.neurons,
                     *self.spif)
            return
        if tag is None:
            self.mark_down(f"label {self.label!r} has no live output in {snap.path}: call "
                           "activate_live_output_for on it in the script")
            return
        if not tag.strip_sdp:
            self.mark_down("its live-output tag keeps SDP headers (strip_sdp=False); "
                           "LiveEventConnection does not support that either")
            return
        if self.tag_mode == "db":
            err = self._bind((tag.ip, tag.port))
            if err is not None:
                self.mark_down(f"the database's IP tag points at {tag.ip}:{tag.port}, but "
                               f"{err}; use tag=set to have the tag follow this socket")
                return
            self._set(READY)
            log.info("spinnaker input %r: %d atoms, receiving at %s:%d (tag %d of board %s)",
                     self.label, self.neurons, tag.ip, tag.port, tag.tag, tag.board)
            return
        self._tag = tag
        self._tag_ok = False
        self._tag_tries = 0
        self._tag_next_ns = 0
        self._set(TAGGING)

    def _apply_output(self, info: Any, snap: Snapshot) -> None:
        if not info.placements or info.board is None:
            self.mark_down(f"label {self.label!r} has no placed core with a board address in "
                           f"{snap.path} (is it a SpikeInjector?)")
            return
        x, y, p = info.placements[0]
        if len(info.placements) > 1:
            log.warning("spinnaker output %r has %d cores; sending to the first, (%d, %d, %d), "
                        "as LiveEventConnection does", self.label, len(info.placements), x, y, p)
        if not self.full_keys and self.neurons > 0xFFFF:
            self.mark_down(f"{self.neurons} atoms do not fit 16-bit atom ids; set full_keys=1")
            return
        self._sdp = (x, y, p)
        self._dest = (info.board, self.board_port)
        self._set(READY)
        log.info("spinnaker output %r: %d atoms, SpikeInjector core (%d, %d, %d) via board "
                 "%s:%d, %s", self.label, self.neurons, x, y, p, info.board, self.board_port,
                 "32-bit keys" if self.full_keys else "16-bit atom ids")

    def on_start(self) -> None:
        """START/RESUME: open the gate if this endpoint is mapped."""
        if self.state in (READY, STOPPED, RUNNING) and self.codec.table is not None:
            self.codec.running = True
            self._set(RUNNING)
            self._spif_send(start_command(SPIF_EVENTS * 4, SPIF_TICK_US))

    def on_stop(self) -> None:
        """STOP/PAUSE: close the gate."""
        self.codec.running = False
        self.codec.why = "the simulation is stopped or paused (STOP/PAUSE)"
        if self.state == RUNNING:
            self._set(STOPPED)
            self._spif_send(stop_command())

    def _spif_send(self, data: bytes) -> None:
        """SPIF output commands go from the receiving socket: SPIF streams to their sender."""
        if self.spif is not None and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendto(data, self.spif)

    def service_tag(self, now_ns: int) -> None:
        """tag=set: send IPTagSet until SCAMP answers OK; refresh it every 10 s while running."""
        tag = self._tag
        if tag is None or self._sock is None:
            return
        if self._tag_next_ns < 0:  # set just now: the first refresh is 10 s from here
            self._tag_next_ns = now_ns + TAG_REFRESH_NS
        if now_ns < self._tag_next_ns or (self._tag_ok and self.state != RUNNING):
            return
        self._tag_next_ns = now_ns + (TAG_REFRESH_NS if self._tag_ok else TAG_RETRY_NS)
        self._tag_tries += 1
        if self._tag_tries in (3, 10) or self._tag_tries % 100 == 0:
            log.warning("spinnaker input %r: no SCP answer from board %s:%d to IPTagSet "
                        "(tag %d) after %d tries", self.label, tag.board, self.board_port,
                        tag.tag, self._tag_tries - 1)
        with contextlib.suppress(OSError):
            self._sock.sendto(iptag_set_request(tag.x, tag.y, tag.tag),
                              (tag.board, self.board_port))

    def _on_scp(self, ok: bool, addr: Any) -> None:
        tag = self._tag
        if tag is None:
            return
        if not ok:
            log.error("spinnaker input %r: board %s refused IPTagSet for tag %d; retrying",
                      self.label, addr[0], tag.tag)
            return
        self._tag_tries = 0
        if not self._tag_ok:
            self._tag_ok = True
            self._tag_next_ns = -1  # the refresh timer starts at the next service call
            log.info("spinnaker input %r: board %s set tag %d to %s:%d", self.label, addr[0],
                     tag.tag, *self._sock.getsockname()[:2] if self._sock else ("?", 0))
            if self.state == TAGGING:
                self._set(READY)
                if self.listener is not None:
                    self.listener.maybe_ack()

    # -- loop side --------------------------------------------------------------------------

    def fileno(self) -> int:
        """A poller over this endpoint's socket and the shared listener's (stable across runs)."""
        if self._poll is None:
            raise RuntimeError(f"{self.url} is not open")
        return self._poll.fileno()

    def recv(self) -> tuple[memoryview, Address] | None:
        """One live-output datagram, or None; control traffic is handled on the way."""
        for attempt in (0, 1):
            sock = self._sock
            while sock is not None:
                try:
                    n, addr = sock.recvfrom_into(self._buf, 0, _DONTWAIT)
                except OSError:
                    break
                view = self._view[:n]
                if self._tag is not None:
                    ok = scp_reply_ok(view)
                    if ok is not None:
                        self._on_scp(ok, addr)
                        continue
                return view, addr
            if attempt == 0 and self.listener is not None:
                self.listener.pump()  # the socket may have changed (tag=db re-bind)
        return None

    def send(self, data: bytes) -> bool:
        """Send one SDP datagram to the injector; False (``refusal_reason`` set) unless running."""
        dest = self._dest
        if not self.codec.running or dest is None or self._sock is None:
            self.refusal_reason = _NOT_RUNNING
            return False
        try:
            self._sock.sendto(data, _DONTWAIT, dest)
        except OSError:
            self.refusal_reason = _SEND_FAILED
            return False
        return True

    def service(self, now_ns: int) -> None:
        """Housekeeping from the loop: the listener's timers and control traffic."""
        if self.listener is not None:
            self.listener.service(now_ns)

    def describe(self) -> str:
        """The URL, the notification address and the state."""
        why = f": {self.why}" if self.why else ""
        return (f"{self.url} (label {self.label!r}, notify {self.notify[0]}:{self.notify[1]}, "
                f"{self.state}{why})")
