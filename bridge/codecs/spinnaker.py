"""SpiNNaker live I/O, sans-IO: the toolchain's notification commands, SCP IP-tag requests
and replies, and the per-atom key tables that sPyNNaker's database defines.

This is not a registered wire format: a ``spinnaker://`` endpoint binds a ``SpinnakerCodec``
in place of the plain ``eieio`` codec, and fills its key table when the toolchain's database
has been read. Frames on the wire are EIEIO data messages (bridge/codecs/eieio.py decodes
them); what this module adds is the mapping between routing keys and atoms, which sPyNNaker
keeps per atom (``label_event_atom_view``) and which is not ``base + i`` in general.

Everything here follows spinnman and spinn_front_end_common 7.4.1 (the byte layouts are
cross-checked against their own classes in tests/endpoints/test_spinnaker.py). It never
imports socket, select or time, never reads a clock and never opens a file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bridge.codecs.base import Codec
from bridge.codecs.eieio import (
    SDP_HEADER,
    SDP_PAD,
    SDP_REPLY_NOT_EXPECTED,
    EieioCodec,
)
from bridge.errors import DecodeError
from bridge.frame import NO_SEQ, SpikeFrame

# EIEIO command messages: one little-endian u16, 0b01 in the top two bits, the command below.
COMMAND_FLAGS = 0x4000
COMMAND_MASK = 0xC000
DATABASE = 1           # EIEIO_COMMAND_IDS.DATABASE: path follows (notification) or nothing (ack)
STOP_PAUSE = 10        # EIEIO_COMMAND_IDS.STOP_PAUSE_NOTIFICATION
START_RESUME = 11      # EIEIO_COMMAND_IDS.START_RESUME_NOTIFICATION
DATABASE_ACK = struct.pack("<H", COMMAND_FLAGS | DATABASE)  # b"\x01\x40", as DatabaseConnection
NOTIFY_PORT = 19999    # spinn_front_end_common.utilities.constants.NOTIFY_PORT
SCAMP_PORT = 17893     # spinnman.constants.SCP_SCAMP_PORT
LPG_LABEL = "LiveSpikeReceiver"  # the label sPyNNaker gives its Live Packet Gatherers

# SCP (SDP port 0 to the monitor core): CMD_IPTAG = 26, IPTAG_SET = 1 (spinnman).
_SCP_IPTAG = 26
_IPTAG_SET = 1
_SDP_REPLY_EXPECTED = 0x87
_SCP_REQUEST = struct.Struct("<2x8BHH3I")
_SCP_REPLY = struct.Struct("<2x8BHH")
SCP_RC_OK = 0x80
SCP_OK_SIZE = 18  # LiveEventConnection's _SCP_OK_SIZE: pad, SDP header, rc, seq, 4 more bytes

_U16 = struct.Struct("<H")
_SMALL = 16  # keys per message below which dict lookups beat numpy (as in eieio.py)
DICT_MAX = 1 << 17  # atoms up to which a table also keeps a dict for small messages


@dataclass(frozen=True)
class Command:
    """A toolchain command: ``code`` (DATABASE, START_RESUME, STOP_PAUSE, ...) and its path."""

    code: int
    path: str | None = None


def parse_command(data: bytes | bytearray | memoryview) -> Command:
    """Parse a datagram from the toolchain's notification protocol; DecodeError otherwise.

    A DATABASE command carries the database path in UTF-8 after the header, with no length
    and no terminator (spinnman's NotificationProtocolDatabaseLocation); an empty path means
    the toolchain wrote no database.
    """
    if len(data) < 2:
        raise DecodeError("truncated", f"{len(data)} bytes cannot hold an EIEIO command")
    header = _U16.unpack_from(data)[0]
    if header & COMMAND_MASK != COMMAND_FLAGS:
        raise DecodeError("malformed", f"header 0x{header:04x} is not an EIEIO command")
    code = header & 0x3FFF
    if code == DATABASE:
        if len(data) == 2:
            return Command(code, "")
        try:
            path = bytes(data[2:]).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("malformed", "the database path is not UTF-8") from None
        if "\0" in path:
            raise DecodeError("malformed", "the database path holds a NUL byte")
        return Command(code, path)
    if code in (START_RESUME, STOP_PAUSE):
        if len(data) != 2:
            raise DecodeError("oversized", f"command {code} takes no data, got {len(data)} bytes")
        return Command(code)
    raise DecodeError("malformed", f"EIEIO command {code} is not part of the notification "
                      "protocol (1 database, 11 start/resume, 10 stop/pause)")


def iptag_set_request(x: int, y: int, tag: int, *, strip: bool = True) -> bytes:
    """The UDP payload of SCP IPTagSet(use_sender) to chip (x, y), as spinnman builds it.

    ``use_sender`` makes SCAMP point the tag at the address and port the request came from,
    so it must be sent from the socket that is to receive the tag's traffic
    (spinnman.utilities.utility_functions.reprogram_tag_to_listener).
    """
    if not (0 <= x <= 255 and 0 <= y <= 255 and 0 <= tag <= 255):
        raise ValueError(f"chip ({x}, {y}) and tag {tag} must each fit a byte")
    arg1 = int(strip) << 28 | 1 << 30 | _IPTAG_SET << 16 | tag
    # SDP: flags, tag 0xff, dest port/cpu 0, src port/cpu 0xff, dest y, x, src y, x.
    return _SCP_REQUEST.pack(_SDP_REPLY_EXPECTED, 0xFF, 0, 0xFF, y, x, y, x,
                             _SCP_IPTAG, 0, arg1, 0, 0)


def scp_reply_ok(data: bytes | bytearray | memoryview) -> bool | None:
    """None when ``data`` is not an SCP reply; else whether SCAMP answered OK.

    Recognised as LiveEventConnection does (18 bytes, SDP flags 0x07, destination 0xFF).
    """
    if len(data) != SCP_OK_SIZE or data[2] != SDP_REPLY_NOT_EXPECTED or data[4] != 0xFF:
        return None
    rc = _SCP_REPLY.unpack_from(data)[8]
    return bool(rc == SCP_RC_OK)


class KeyTable:
    """A population's atom <-> routing-key table, as the database lists it."""

    __slots__ = ("atoms", "by_atom", "keys", "lookup", "n_atoms")

    def __init__(self, atoms: np.ndarray, keys: np.ndarray) -> None:
        if atoms.shape != keys.shape:
            raise ValueError("atoms and keys must pair up")
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order].astype(np.int64)
        self.atoms = atoms[order].astype(np.uint32)
        if self.keys.size and np.any(self.keys[1:] == self.keys[:-1]):
            raise ValueError("two atoms share a routing key")
        self.n_atoms = int(atoms.max()) + 1 if atoms.size else 0
        by_atom = np.full(self.n_atoms, -1, dtype=np.int64)
        by_atom[atoms.astype(np.int64)] = keys
        self.by_atom = by_atom
        # Small messages look keys up in a dict: a few numpy calls cost more than the lookups.
        # Not for huge tables, where the dict would cost ~100 bytes an atom and seconds to build.
        self.lookup: dict[int, int] | None = None
        if self.keys.size <= DICT_MAX:
            self.lookup = dict(zip(self.keys.tolist(), self.atoms.tolist(), strict=True))

    def __len__(self) -> int:
        return int(self.keys.size)

    def atoms_of(self, keys: np.ndarray) -> np.ndarray:
        """The atoms of ``keys``; DecodeError naming the first key not in the table."""
        idx = np.searchsorted(self.keys, keys)
        idx[idx >= self.keys.size] = 0
        hit = self.keys[idx] == keys if self.keys.size else np.zeros(keys.shape, dtype=bool)
        if not hit.all():
            bad = int(keys[~hit][0])
            raise DecodeError("id_out_of_range", f"key 0x{bad:08x} is not in the label's table")
        out: np.ndarray = self.atoms[idx]
        return out

    def keys_of(self, atoms: np.ndarray) -> np.ndarray:
        """The routing keys of ``atoms`` (ValueError for an atom the table lacks)."""
        if atoms.size and int(atoms.max()) >= self.n_atoms:
            raise ValueError(f"atom {int(atoms.max())} is not below {self.n_atoms}")
        keys = self.by_atom[atoms.astype(np.int64)]
        if keys.size and int(keys.min()) < 0:
            raise ValueError("an atom has no routing key in the database")
        return keys.astype(np.uint32)


class SpinnakerCodec(Codec):
    """EIEIO to and from one population's atoms, gated by the simulation's run state.

    Input: a Live Packet Gatherer message's keys map to atoms through the table; a frame
    while the simulation is not running (before START, after STOP/PAUSE, or with no usable
    database) is a ``not_running`` drop. Output: atom ids go to a SpikeInjector as 16-bit
    EIEIO keys (LiveEventConnection's default) or as full 32-bit keys, SDP-wrapped to its core.
    """

    name: ClassVar[str] = "spinnaker"
    summary: ClassVar[str] = "EIEIO mapped through a sPyNNaker database (bound by spinnaker://)"
    needs_neurons: ClassVar[bool] = True
    has_seq: ClassVar[bool] = False

    def __init__(self, neurons: int, *, full_keys: bool = False, raw: bool = False) -> None:
        super().__init__(neurons)
        self.full_keys = full_keys
        self.raw = raw  # SPIF output: bare little-endian 32-bit keys, no EIEIO header
        self.table: KeyTable | None = None
        self.running = False
        self.why = "no database yet"  # why frames are refused while not running
        self._wire = EieioCodec(0)  # decodes any data variant to raw keys
        self._out: EieioCodec | None = None

    def bind(self, table: KeyTable, sdp: tuple[int, int, int] | None = None) -> None:
        """Use ``table`` (and, for an output, the injector core ``sdp``) from now on."""
        self.table = table
        self.why = "the simulation has not started (no START/RESUME from the toolchain yet)"
        if sdp is not None:
            keybits = 32 if self.full_keys else 16
            self._out = EieioCodec(0 if self.full_keys else self.neurons, keybits=keybits,
                                   sdp=sdp)

    def unbind(self, why: str) -> None:
        """Refuse frames until the next ``bind``: ``why`` says why (for the drop's detail)."""
        self.table = None
        self._out = None
        self.running = False
        self.why = why

    def decode(self, data: bytes | bytearray | memoryview) -> SpikeFrame:
        """Keys of one data message to atoms; not_running or id_out_of_range drops."""
        table = self.table
        if not self.running or table is None:
            raise DecodeError("not_running", self.why)
        keys: tuple[int, ...] | np.ndarray
        if self.raw:
            if len(data) % 4:
                raise DecodeError("truncated", f"{len(data)} bytes are not whole 32-bit keys")
            keys = np.frombuffer(data, dtype="<u4")
            if keys.size <= _SMALL:
                keys = tuple(keys.tolist())
        else:
            keys = self._wire.keys(data)
        if isinstance(keys, tuple):
            if not keys:
                return SpikeFrame(0, NO_SEQ, 0, np.empty(0, dtype=np.uint32))
            if table.lookup is not None:
                return self._decode_small(table.lookup, keys)
            keys = np.array(keys, dtype=np.int64)
        atoms = table.atoms_of(keys.astype(np.int64))
        if int(atoms.max()) >= self.neurons:
            raise DecodeError("id_out_of_range",
                              f"atom {int(atoms.max())} is not below neurons={self.neurons}")
        return SpikeFrame(0, NO_SEQ, 0, atoms)

    def _decode_small(self, lookup: dict[int, int], keys: tuple[int, ...]) -> SpikeFrame:
        try:
            found = [lookup[k] for k in keys]
        except KeyError as exc:
            raise DecodeError("id_out_of_range",
                              f"key 0x{exc.args[0]:08x} is not in the label's table") from None
        if max(found) >= self.neurons:
            raise DecodeError("id_out_of_range",
                              f"atom {max(found)} is not below neurons={self.neurons}")
        return SpikeFrame(0, NO_SEQ, 0, np.array(found, dtype=np.uint32))

    def encode(self, frame: SpikeFrame) -> list[bytes]:
        """SDP-wrapped EIEIO for the injector; nothing for an empty frame.

        An injector has no use for an empty message (LiveEventConnection never sends one).
        Before a database is bound there is no core to address: the frame still encodes (as
        bare 32-bit ids) so that the endpoint counts its refusal, and nothing is sent.
        """
        if not frame.ids.size:
            return []
        out = self._out
        if out is None or self.table is None:
            return EieioCodec(0).encode(frame)
        if self.full_keys:
            ids = frame.ids
            if ids.size and int(ids.max()) >= self.neurons:
                raise ValueError(f"id {int(ids.max())} out of range for {self.neurons} neurons")
            keyed = SpikeFrame(frame.source, frame.seq, frame.t_sent_ns,
                               self.table.keys_of(ids))
            return out.encode(keyed)
        return out.encode(frame)

    def same_wire(self, other: Codec) -> bool:
        """Never: the mapping changes with every database."""
        return False


def sdp_header(x: int, y: int, p: int) -> bytes:
    """The pad and SDP header LiveEventConnection puts before EIEIO to a core (for tests)."""
    return SDP_PAD + SDP_HEADER.pack(SDP_REPLY_NOT_EXPECTED, 0, 1 << 5 | p, 0, y, x, 0, 0)
