"""``spikebridge bench fuzz``: coverage-guided fuzzing of every decoder, with a corpus.

Each target hands one input to a decoder under several configurations and checks the decoder
contract: only DecodeError (RecordingError for .sbr headers) comes out of a decoder, decoded ids
are a 1-D uint32 array inside the population, ``peek`` gives ``decode``'s verdict, accepted
frames survive a re-encode, stream decoders give the same frames however the bytes are chunked
and hold a bounded amount of buffered input. "Sealed" variants repair checksums, auth tags and
COBS stuffing so the fuzzer reaches the parsing behind them. A broken check raises, the engine
stops and keeps the input. Engines: atheris (libFuzzer, coverage-guided; ``pip install
atheris``) or ``mutate``, a plain random mutator over the corpus for machines without atheris.
The corpus lives in tests/corpus/TARGET/.

A tool for tests and CI: never imported by the daemon. Decoder modules are imported only
inside the fuzzing process, after atheris starts instrumenting them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Target = Callable[[bytes], None]

# Longest input per target: datagrams up to a jumbo-ish frame; serial and file streams need
# no more than a frame or two to reach every state (and cost more per byte to check).
MAX_LEN: dict[str, int] = {"legacy": 4096, "native": 4096, "eieio": 1024, "spif": 4096,
                           "board": 1024, "edvs": 1024, "sbr": 1024,
                           "t64_x16_y16_on8": 4096, "t32_x16_y15_on1": 4096}
TARGETS: dict[str, str] = {
    "legacy": "legacy datagrams (dense 0/1 frames)",
    "native": "native datagrams, plain and HMAC-keyed, plus a sealed (validly tagged) variant",
    "eieio": "EIEIO data messages, 16/32-bit keys, prefixes, SDP wrap",
    "spif": "SPIF event words, against an independent reference reading",
    "board": "board serial stream, raw and sealed (valid CRC and COBS), chunked",
    "edvs": "eDVS serial stream, 2- and 6-byte events, chunked",
    "sbr": ".sbr recordings: header, records, and sealed (valid CRC) records and headers",
    "t64_x16_y16_on8": "Faery 13-byte events, against an independent reference reading",
    "t32_x16_y15_on1": "Faery 8-byte events, against an independent reference reading",
}
FULL_RUNS = 1_000_000  # the per-decoder figure the reliability docs promise
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
ARGV0 = "SPIKEBRIDGE_FUZZ_ARGV0"  # the command libFuzzer re-runs for a merge


class ContractError(AssertionError):
    """A decoder broke its contract on one input."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ContractError(what)


def _pick(data: bytes, i: int, default: int = 0) -> int:
    return data[i] if i < len(data) else default


def _chunks(data: bytes, sizes: bytes) -> Iterator[bytes]:
    """``data`` cut into pieces whose lengths come from ``sizes`` (1..128, cycling)."""
    pos, k = 0, 0
    while pos < len(data):
        step = (sizes[k % len(sizes)] % 128) + 1 if sizes else len(data)
        yield data[pos:pos + step]
        pos += step
        k += 1


# -- datagram codecs ------------------------------------------------------------------------


def _check_ids(ids: Any, limit: int, where: str) -> None:
    import numpy as np

    _require(isinstance(ids, np.ndarray), f"{where}: ids are {type(ids).__name__}")
    _require(ids.dtype == np.uint32 and ids.ndim == 1, f"{where}: ids {ids.dtype} {ids.shape}")
    if limit and ids.size:
        _require(int(ids.max()) < limit, f"{where}: id {int(ids.max())} >= {limit}")


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    from bridge.errors import DecodeError

    try:
        return "ok", fn()
    except DecodeError as exc:
        return "drop", exc.reason


def _verdict(codec: Any, data: bytes) -> tuple[str, Any]:
    """("ok", ids as a list) or ("drop", reason)."""
    verdict, got = _outcome(lambda: codec.decode(data))
    return (verdict, got.ids.tolist()) if verdict == "ok" else (verdict, got)


def check_datagram(codec: Any, data: bytes, *, roundtrip: bool = True) -> Any:
    """Decode ``data`` with ``codec`` and check the contract; the frame or None (a drop)."""
    from bridge.frame import SpikeFrame

    name = f"{codec.name}({codec.neurons})"
    verdict, got = _outcome(lambda: codec.decode(data))
    peeked = _outcome(lambda: codec.peek(data))
    # decode must not depend on the buffer type the endpoint hands it (a reused memoryview).
    again = _outcome(lambda: codec.decode(memoryview(bytearray(data))))
    if verdict == "drop":
        _require(peeked == (verdict, got), f"{name}: decode drops ({got}), peek says {peeked}")
        _require(again == (verdict, got), f"{name}: memoryview verdict {again} != {got}")
        return None
    frame = got
    _require(isinstance(frame, SpikeFrame), f"{name}: decode returned {type(frame).__name__}")
    _check_ids(frame.ids, codec.neurons, name)
    _require(peeked == ("ok", (frame.source, frame.seq, frame.t_sent_ns, len(frame.ids))),
             f"{name}: peek {peeked} disagrees with decode")
    _require(again[0] == "ok" and again[1] == frame, f"{name}: memoryview decode differs")
    if roundtrip:
        import numpy as np

        try:
            datagrams = codec.encode(frame)
        except ValueError as exc:
            raise ContractError(f"{name}: cannot re-encode a frame it accepted: {exc}") from None
        back = [codec.decode(d).ids for d in datagrams]
        ids = np.concatenate(back) if back else np.empty(0, dtype=np.uint32)
        _require(np.array_equal(np.sort(ids), np.sort(frame.ids)),
                 f"{name}: re-encoded frame decodes to other ids")
    return frame


def _legacy_target() -> Target:
    from bridge.codecs.legacy import LegacyCodec

    codecs = [LegacyCodec(1), LegacyCodec(16), LegacyCodec(100)]

    def run(data: bytes) -> None:
        for codec in codecs:
            frame = check_datagram(codec, data)
            # The format's whole reading, independently: 8 address bits, then one 0/1 per id.
            ok = len(data) == 8 + codec.neurons and all(b in (0, 1) for b in data)
            _require((frame is not None) == ok, f"legacy({codec.neurons}): verdict on {ok=}")
            if frame is not None:
                want = [i for i, b in enumerate(data[8:]) if b]
                _require(frame.ids.tolist() == want, "legacy: ids differ from the reading")
                _require(frame.source == int("".join(str(b) for b in data[:8]), 2),
                         "legacy: source differs from the address bits")

    return run


def _native_target() -> Target:
    from bridge.codecs.native import FLAG_AUTH, HEADER_SIZE, TAG_SIZE, NativeCodec

    plain = [NativeCodec(0), NativeCodec(1000), NativeCodec(70000, mtu=200)]
    keyed = NativeCodec(1000, keys=(KEY_A, KEY_B))
    only_b = NativeCodec(1000, keys=(KEY_B,))

    def run(data: bytes) -> None:
        for codec in plain:
            check_datagram(codec, data)
        frame = check_datagram(keyed, data)
        _require(frame is None or len(data) >= HEADER_SIZE + TAG_SIZE,
                 "native: keyed codec accepted a datagram too short for a tag")
        if len(data) < HEADER_SIZE:
            return
        # Sealed: set the auth flag and append a valid tag under the second (older) key, so
        # the checks behind authentication get fuzzed too. Both key sets must accept it alike.
        body = bytearray(data)
        body[3] |= FLAG_AUTH
        tag = hmac.new(KEY_B, bytes(body), hashlib.sha256).digest()[:TAG_SIZE]
        sealed = bytes(body) + tag
        a = check_datagram(keyed, sealed)
        b = check_datagram(only_b, sealed)
        _require((a is None) == (b is None) and (a is None or a == b),
                 "native: rotation key set and single key disagree on a sealed datagram")
        if a is not None:
            forged = sealed[:-1] + bytes([sealed[-1] ^ 1])
            _require(_outcome(lambda: keyed.decode(forged)) == ("drop", "bad_auth"),
                     "native: a tag with one bit changed is not a bad_auth drop")

    return run


def _eieio_target() -> Target:
    from bridge.codecs.eieio import EieioCodec

    codecs = [
        EieioCodec(0),
        EieioCodec(1000, keybits=16),
        EieioCodec(1000, base=0x10000, keybits=16, prefix=1, prefix_upper=True, timestamp=True),
        EieioCodec(64, base=0x800, sdp=(0, 0, 1)),
    ]

    def run(data: bytes) -> None:
        for codec in codecs:
            # A decoded 32-bit key may be unsendable as a 16-bit key: no round trip for those.
            check_datagram(codec, data, roundtrip=codec.keybits == 32)

    return run


def _spif_reference(data: bytes, width: int, height: int, strides: tuple[int, int, int],
                    limit: int) -> tuple[str, Any]:
    """The SPIF datagram as docs/wire-formats.md describes it, read word by word."""
    if len(data) % 4:
        return "drop", "truncated"
    words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    events, i = [], 0
    while i < len(words):
        events.append(words[i])
        i += 1 if words[i] >> 31 else 2
    if i > len(words):
        return "drop", "truncated"
    ids = []
    for w in events:
        x, p, y = (w >> 16) & 0x7FFF, (w >> 15) & 1, w & 0x7FFF
        if x >= width or y >= height:
            return "drop", "id_out_of_range"
        ids.append(x * strides[0] + y * strides[1] + p * strides[2])
    if ids and max(ids) >= limit:
        return "drop", "id_out_of_range"
    return "ok", ids


def _spif_target() -> Target:
    from bridge.codecs.spif import SpifCodec

    cases = [
        (SpifCodec(0, width=128, height=128), (1, 128, 128 * 128)),
        (SpifCodec(100, width=10, height=10, layout="xy"), (10, 1, 0)),
        (SpifCodec(0, width=3, height=2000, layout="pxy", timestamp=True), (2000, 1, 6000)),
    ]

    def run(data: bytes) -> None:
        for codec, strides in cases:
            check_datagram(codec, data)
            limit = min(codec.neurons, codec.size) if codec.neurons else codec.size
            want = _spif_reference(data, codec.width, codec.height, strides, limit)
            got = _verdict(codec, data)
            _require(got == want, f"spif {codec.layout}: decoded {got[0]} but the format "
                                  f"reads {want[0]} ({got[1]!r:.60} vs {want[1]!r:.60})")

    return run


def _faery_reference(data: bytes, compact: bool, width: int, height: int,
                     strides: tuple[int, int, int], limit: int) -> tuple[str, Any]:
    """A Faery UDP datagram as docs/wire-formats.md describes it, read event by event."""
    import struct

    size = 8 if compact else 13
    if len(data) % size:
        return "drop", "truncated"
    if not compact and any(data[i + 12] > 1 for i in range(0, len(data), size)):
        return "drop", "malformed"  # checked before any coordinate
    ids = []
    for i in range(0, len(data), size):
        if compact:
            _t, x, yon = struct.unpack_from("<IHH", data, i)
            y, p = yon >> 1, yon & 1
        else:
            _t, x, y, p = struct.unpack_from("<QHHB", data, i)
        if x >= width or y >= height:
            return "drop", "id_out_of_range"
        ids.append(x * strides[0] + y * strides[1] + p * strides[2])
    if ids and max(ids) >= limit:
        return "drop", "id_out_of_range"
    return "ok", ids


def _faery_target(compact: bool) -> Callable[[], Target]:
    def build() -> Target:
        from bridge.codecs.faery_udp import T32X16Y15On1Codec, T64X16Y16On8Codec

        cls = T32X16Y15On1Codec if compact else T64X16Y16On8Codec
        cases = [
            (cls(0, width=640, height=480), (1, 640, 640 * 480)),
            (cls(100, width=10, height=10, layout="xy"), (10, 1, 0)),
            (cls(0, width=3, height=2000, layout="pxy", events=7), (2000, 1, 6000)),
        ]

        def run(data: bytes) -> None:
            for codec, strides in cases:
                check_datagram(codec, data)
                geo = codec.geometry
                want = _faery_reference(data, compact, geo.width, geo.height, strides,
                                        geo.limit)
                got = _verdict(codec, data)
                _require(got == want, f"{codec.name} {geo.layout}: decoded {got[0]} but the "
                                      f"format reads {want[0]} ({got[1]!r:.60} vs "
                                      f"{want[1]!r:.60})")
                if got[0] == "ok":  # the times ride along unchanged (t32: as sent, 32 bits)
                    _, times = codec.decode_times(data)
                    tsize, size = (4, 8) if compact else (8, 13)
                    ref = [int.from_bytes(data[i:i + tsize], "little")
                           for i in range(0, len(data), size)]
                    _require(times.tolist() == ref, f"{codec.name}: event times differ")

        return run

    return build


# -- stream codecs --------------------------------------------------------------------------


@dataclass
class StreamRun:
    """What a stream decoder made of one byte stream."""

    ids: list[int] = field(default_factory=list)
    frames: int = 0
    errors: list[str] = field(default_factory=list)
    controls: int = 0
    max_buffered: int = 0
    codec: Any = None


def drain_stream(codec: Any, pieces: Sequence[bytes], now: Sequence[int] | None = None,
                 limit: int = 0) -> StreamRun:
    """Feed ``pieces`` one by one, taking every frame and control after each; check them."""
    from bridge.errors import DecodeError
    from bridge.frame import SpikeFrame

    out = StreamRun(codec=codec)
    for k, piece in enumerate(pieces):
        codec.feed(piece, None if now is None else now[k])
        # Every call consumes input, raises for consumed input, or waits: bounded calls.
        for _ in range(codec.buffered() + 4):
            try:
                frame = codec.next_frame()
            except DecodeError as exc:
                out.errors.append(exc.reason)
                continue
            if frame is None:
                break
            _require(isinstance(frame, SpikeFrame), f"{codec.name}: not a SpikeFrame")
            _check_ids(frame.ids, limit, codec.name)
            out.ids += frame.ids.tolist()
            out.frames += 1
        else:
            raise ContractError(f"{codec.name}: next_frame keeps returning without input")
        while codec.next_control() is not None:
            out.controls += 1
        out.max_buffered = max(out.max_buffered, codec.buffered())
    return out


def _stream_check(make: Callable[[], Any], data: bytes, sizes: bytes, bound: int,
                  limit: int, same_errors: bool = True) -> StreamRun:
    """Whole and chunked feeding must agree; the buffer must stay under ``bound``.

    With ``same_errors`` the errors must agree one for one too. The edvs decoder raises
    id_out_of_range once per returned batch (whose size depends on the chunking) and checks
    for reply lines only where a hunt for alignment stops (which depends on the chunking too),
    so for it the ids and the per-event out-of-range count are compared instead.
    """
    whole = drain_stream(make(), [data], limit=limit)
    cut = drain_stream(make(), list(_chunks(data, sizes)), limit=limit)
    name = whole.codec.name
    _require(whole.ids == cut.ids, f"{name}: chunking changed the decoded ids")
    if same_errors:
        _require(sorted(whole.errors) == sorted(cut.errors),
                 f"{name}: chunking changed the errors {whole.errors} vs {cut.errors}")
    else:
        _require(whole.codec.out_of_range == cut.codec.out_of_range,
                 f"{name}: chunking changed the out-of-range event count")
    _require(cut.max_buffered <= bound, f"{name}: {cut.max_buffered} bytes held, bound {bound}")
    return whole


def _board_target() -> Target:
    from bridge.codecs.board import MAX_ENCODED, BoardCodec, cobs_encode, crc16

    def make(neurons: int) -> Callable[[], Any]:
        return lambda: BoardCodec(neurons)

    def run(data: bytes) -> None:
        sizes = data[:8]
        _stream_check(make(300), data, sizes, MAX_ENCODED + 1, 300)
        # Sealed: every 0xFE-separated piece becomes a frame with a valid CRC and stuffing, so
        # the header, type and payload checks behind them get fuzzed. Each sealed frame must
        # come out as exactly one spike frame, one control message or one counted error.
        pieces = data.split(b"\xfe")
        sealed = b"".join(
            b"\x00" + cobs_encode(raw + crc16(raw).to_bytes(2, "little")) + b"\x00"
            for raw in pieces
        )
        got = _stream_check(make(300), sealed, sizes, MAX_ENCODED + 1, 300)
        codec = got.codec
        _require(got.frames + codec.controls + len(got.errors) == len(pieces),
                 f"board: {len(pieces)} sealed frames gave {got.frames} frames, "
                 f"{codec.controls} controls, {len(got.errors)} errors")
        _require(codec.crc_errors == 0 and codec.cobs_errors == 0,
                 "board: a sealed frame failed its CRC or stuffing")

    return run


def _edvs_target() -> Target:
    from bridge.codecs.edvs import MAX_LINE, EdvsCodec

    def make(neurons: int, evsize: int, lock: int) -> Callable[[], Any]:
        return lambda: EdvsCodec(neurons, evsize=evsize, lock=lock)

    def run(data: bytes) -> None:
        sizes = data[:8]
        for neurons, evsize, lock in ((0, 2, 8), (1000, 6, 4)):
            limit = neurons or make(0, evsize, lock)().population
            _stream_check(make(neurons, evsize, lock), data, sizes,
                          max(MAX_LINE + 1, evsize * lock) + evsize, limit, same_errors=False)
        # Arrival times (idle-gap timestamp unwrapping) chosen by the input itself.
        pieces = list(_chunks(data, sizes))
        now, t = [], 0
        for k in range(len(pieces)):
            t += _pick(data, k + 8) * 1_000_000_000 // 16
            now.append(t)
        codec = EdvsCodec(0, evsize=4, lock=2)
        drain_stream(codec, pieces, now, limit=codec.population)

    return run


# -- .sbr recordings --------------------------------------------------------------------------


def _sbr_target() -> Target:
    import json
    import zlib

    from bridge.record import format as sbr

    def records(data: bytes, pieces: Sequence[bytes]) -> tuple[list[Any], Any]:
        dec = sbr.RecordDecoder()
        got: list[Any] = []
        for piece in pieces:
            dec.feed(piece)
            while (rec := dec.next_record()) is not None:
                got.append(rec)
        dec.close()
        while (rec := dec.next_record()) is not None:
            got.append(rec)
        _require(dec.pending == 0, f"sbr: {dec.pending} bytes left after close")
        return got, dec

    def check(data: bytes) -> None:
        whole, dec = records(data, [data])
        cut, _ = records(data, list(_chunks(data, data[:8])))
        _require(whole == cut, "sbr: chunking changed the records")
        for rec in whole:
            if isinstance(rec, sbr.SpikeRecord):
                _check_ids(rec.frame.ids, 0, "sbr")
        _require(dec.skipped_bytes + dec.truncated_bytes <= len(data), "sbr: overcounted bytes")

    def run(data: bytes) -> None:
        check(data)
        with contextlib.suppress(sbr.RecordingError):
            sbr.decode_header(data)
        # Sealed records: each 0xFE-separated piece becomes a record with a valid checksum.
        sealed = bytearray()
        for k, body in enumerate(data.split(b"\xfe")):
            prefix = sbr._PREFIX.pack(sbr.SYNC, 1 + k % 4, k, len(body))
            sealed += prefix + body + sbr._CRC.pack(zlib.crc32(body, zlib.crc32(prefix)))
        check(bytes(sealed))
        # Sealed header: the input as metadata (raw, and as a JSON string inside an object).
        for blob in (data, json.dumps({"endpoints": [], "extra": data.hex()}).encode(),
                     json.dumps(_json_from(data)).encode()):
            head = sbr._HEAD.pack(sbr.MAGIC, sbr.VERSION, 0, len(blob)) + blob
            with contextlib.suppress(sbr.RecordingError):
                sbr.decode_header(head + sbr._CRC.pack(zlib.crc32(head)))

    return run


def _json_from(data: bytes) -> Any:
    """A header-shaped JSON value whose fields and types the input chooses."""
    values: list[Any] = [None, True, -1, 0, 2**70, 1.5, "", "in", "out", [], {}, "x" * 3]
    keys = ["endpoints", "start_wall_ns", "start_mono_ns", "node", "segment", "run",
            "software", "extra", "name", "url", "direction", "format", "neurons", "offset"]
    doc: dict[str, Any] = {}
    ep: dict[str, Any] = {}
    for i in range(0, len(data) - 1, 2):
        key, val = keys[data[i] % len(keys)], values[data[i + 1] % len(values)]
        (ep if data[i] & 0x80 else doc)[key] = val
    if ep:
        doc["endpoints"] = [ep]
    return doc


BUILDERS: dict[str, Callable[[], Target]] = {
    "legacy": _legacy_target,
    "native": _native_target,
    "eieio": _eieio_target,
    "spif": _spif_target,
    "board": _board_target,
    "edvs": _edvs_target,
    "sbr": _sbr_target,
    "t64_x16_y16_on8": _faery_target(compact=False),
    "t32_x16_y15_on1": _faery_target(compact=True),
}


def build_target(name: str) -> Target:
    """The check function of target ``name`` (imports the decoder modules it needs)."""
    return BUILDERS[name]()


# -- seeds ------------------------------------------------------------------------------------


def seed_inputs(name: str) -> list[bytes]:
    """Valid encodings (and near misses) to start target ``name``'s corpus from."""
    import numpy as np

    from bridge.frame import SpikeFrame

    f = SpikeFrame.of
    if name == "legacy":
        from bridge.codecs.legacy import LegacyCodec

        return [LegacyCodec(n).encode(f(ids, source=3))[0]
                for n, ids in ((1, [0]), (16, [1, 7]), (100, [1, 7, 50, 99]), (100, []))]
    if name == "native":
        from bridge.codecs.native import NativeCodec

        out: list[bytes] = []
        native: NativeCodec
        for native in (NativeCodec(0), NativeCodec(1000, keys=(KEY_A,)), NativeCodec(0, mtu=64)):
            for ids in ([1, 7, 42], list(range(0, 900, 3)), list(range(200)), [999], []):
                out += native.encode(f(ids, source=2, seq=5, t_sent_ns=123456789))
        return out
    if name == "eieio":
        from bridge.codecs.eieio import EieioCodec

        out = []
        for eieio in (EieioCodec(0), EieioCodec(1000, keybits=16),
                      EieioCodec(1000, base=0x10000, keybits=16, prefix=1, prefix_upper=True,
                                 timestamp=True),
                      EieioCodec(64, base=0x800, sdp=(0, 0, 1))):
            for ids in ([1, 7, 42], list(range(0, 60)), []):
                out += eieio.encode(f(ids, t_sent_ns=5_000_000))
        return out
    if name == "spif":
        from bridge.codecs.spif import SpifCodec

        out = []
        for spif in (SpifCodec(0, width=128, height=128),
                      SpifCodec(0, width=3, height=2000, layout="pxy", timestamp=True)):
            for ids in ([1, 7, 42], list(range(0, 5000, 97)), []):
                out += spif.encode(f(ids, t_sent_ns=77_000))
        return out
    if name in ("t64_x16_y16_on8", "t32_x16_y15_on1"):
        from bridge.codecs import codec_class

        out = []
        for kw in ({"width": 640, "height": 480}, {"width": 3, "height": 2000, "layout": "pxy",
                                                   "events": 7}):
            faery = codec_class(name)(0, **kw)
            for ids in ([1, 7, 42], list(range(0, 5000, 97)), []):
                out += faery.encode(f(ids, t_sent_ns=(1 << 33) + 77_000))
        return out
    if name == "board":
        from bridge.codecs.board import CMD_PING, BoardCodec

        b = BoardCodec(300)
        return [b.encode_spikes(np.array([1, 2, 299])) + b.encode_command(CMD_PING)
                + b.encode_heartbeat(1, 2, 3) + b.encode_ack(0, CMD_PING),
                b"\x17\x42" + b.encode_spikes(np.arange(300)) + b"\x00\x00"]
    if name == "edvs":
        from bridge.codecs.edvs import event_bytes

        xs = np.arange(40) % 128
        ys = (np.arange(40) * 7) % 128
        ps = np.arange(40) % 2
        return [b"E+\n" + event_bytes(xs, ys, ps, evsize=2),
                b"\x01\x02garbage\n" + event_bytes(xs, ys, ps, evsize=6,
                                                    ts_us=np.arange(40) * 1000)]
    if name == "sbr":
        from bridge.record import format as sbr

        header = sbr.Header(
            endpoints=(sbr.EndpointInfo("in0", "udp://127.0.0.1:1?neurons=10", "in", "native",
                                        10),),
            start_wall_ns=1, start_mono_ns=2, node=1)
        body = (sbr.encode_spikes(10, 0, 1, 5, 9, np.array([1, 2, 3], dtype=np.uint32))
                + sbr.encode_gap(11, "overflow", 2, 3) + sbr.encode_end(12, 1, 3, 2, 3))
        return [sbr.encode_header(header) + body, body, body[:-3]]
    raise KeyError(name)


def corpus_dir(name: str, root: Path | None = None) -> Path:
    """tests/corpus/NAME beside this checkout (or under ``root``)."""
    if root is None:
        root = Path(__file__).resolve().parents[2] / "tests" / "corpus"
    return root / name


def corpus_files(name: str, root: Path | None = None) -> list[Path]:
    """The corpus files of target ``name``, sorted."""
    d = corpus_dir(name, root)
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


# -- engines ------------------------------------------------------------------------------------


@dataclass
class FuzzResult:
    """One target's run: inputs tried, seconds, coverage (atheris only), and the verdict."""

    target: str
    engine: str
    runs: int = 0
    seconds: float = 0.0
    coverage: str = ""
    ok: bool = False
    detail: str = ""
    work: Path | None = None  # atheris: the inputs found in this run (merged, then removed)


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STATS = re.compile(r"#(\d+)\s+DONE\s+(cov: \d+ ft: \d+ corp: \S+)")


def mutate(seed: bytes, rng: random.Random, pool: Sequence[bytes], max_len: int = 4096) -> bytes:
    """A random edit of ``seed``: flips, sets, inserts, deletes, splices (not coverage-guided)."""
    buf = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF,
                                                       rng.randrange(256)))
        elif op == 2:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            i = rng.randrange(len(buf))
            del buf[i:i + rng.randint(1, 16)]
        elif op == 4 and pool:
            other = rng.choice(pool)
            i, j = rng.randrange(len(buf) + 1), rng.randrange(len(other) + 1)
            buf = buf[:i] + other[j:]
        elif op == 5 and buf:
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i:i + rng.randint(1, 32)]
        elif op == 6:
            buf = buf[:rng.randrange(len(buf) + 1)]
    return bytes(buf[:max_len])


def run_mutate(name: str, runs: int, seconds: float, corpus: Path, artifacts: Path,
               seed: int = 0) -> FuzzResult:
    """The fallback engine, in this process: ``runs`` mutated inputs (or until ``seconds``)."""
    target = build_target(name)
    pool = [p.read_bytes() for p in corpus_files(name, corpus.parent)] or seed_inputs(name)
    rng = random.Random(seed)
    res = FuzzResult(name, "mutate")
    t0 = time.monotonic()
    end = t0 + seconds if seconds > 0 else float("inf")
    for i in range(runs):
        data = mutate(rng.choice(pool), rng, pool, MAX_LEN[name]) if i >= len(pool) else pool[i]
        try:
            target(data)
        except Exception as exc:
            artifacts.mkdir(parents=True, exist_ok=True)
            path = artifacts / f"crash-{name}-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            res.runs, res.seconds = i + 1, time.monotonic() - t0
            res.detail = f"{type(exc).__name__}: {exc}; input kept in {path}"
            return res
        if (i & 1023) == 0 and time.monotonic() > end:
            res.runs = i + 1
            break
    else:
        res.runs = runs
    res.seconds = time.monotonic() - t0
    res.ok = True
    return res


def run_atheris(name: str, runs: int, seconds: float, corpus: Path, artifacts: Path,
                seed: int = 0) -> FuzzResult:
    """libFuzzer through atheris in a child process; the repository corpus seeds it."""
    work = Path(tempfile.mkdtemp(prefix=f"spikebridge-fuzz-{name}-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [f"-runs={runs}", f"-max_len={MAX_LEN[name]}", "-timeout=10", "-rss_limit_mb=1536",
            f"-seed={seed or 1}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
            str(work)]
    if seconds > 0:
        args.insert(1, f"-max_total_time={int(max(1, seconds))}")
    if corpus.is_dir():
        args.append(str(corpus))
    cmd = [sys.executable, "-m", "bridge.bench.fuzz", name, *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    res = FuzzResult(name, "atheris", seconds=time.monotonic() - t0)
    log = proc.stderr
    done = _DONE.search(log)
    stats = _STATS.findall(log)
    if done:
        res.runs = int(done.group(1))
    elif stats:
        res.runs = int(stats[-1][0])
    if stats:
        res.coverage = stats[-1][1]
    res.ok = proc.returncode == 0
    if not res.ok:
        tail = "\n".join(log.strip().splitlines()[-25:])
        res.detail = f"exit {proc.returncode}:\n{tail}"
    res.work = work
    return res


def merge_corpus(name: str, work: Path, corpus: Path) -> int:
    """Add the inputs of ``work`` that reach new coverage to ``corpus`` (libFuzzer -merge=1)."""
    corpus.mkdir(parents=True, exist_ok=True)
    before = len(list(corpus.iterdir()))
    # A merge re-runs argv[0] as a command: give it an executable that starts this target.
    launcher = work.parent / f"{work.name}-run"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bridge.bench.fuzz {name} "$@"\n')
    launcher.chmod(0o700)
    try:
        subprocess.run([str(launcher), "-merge=1", f"-max_len={MAX_LEN[name]}", str(corpus),
                        str(work)], capture_output=True, text=True, check=False,
                       env={**os.environ, ARGV0: str(launcher)})
    finally:
        launcher.unlink()
    return len(list(corpus.iterdir())) - before


def have_atheris() -> bool:
    """True when the atheris engine can be used here."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def child(argv: Sequence[str]) -> int:
    """Inside the fuzzing process: instrument the decoders, then hand over to libFuzzer."""
    import atheris

    name, *libfuzzer_args = argv
    with _instrumenting(name):
        target = build_target(name)
    atheris.Setup([os.environ.get(ARGV0, sys.argv[0]), *libfuzzer_args], target)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits the process


# atheris' comparison tracing (dataflow) leaks about 20 KB per input on the edvs decoder's
# NumPy comparisons, which exhausts memory long before a million inputs: that target is
# guided by edge coverage alone.
NO_DATAFLOW = frozenset({"edvs"})


def _instrumenting(name: str) -> Any:
    """atheris' import hook for the ``bridge`` package (with dataflow unless NO_DATAFLOW)."""
    import atheris

    try:
        from atheris.import_hook import HookManager
    except ImportError:  # another atheris layout: its public hook, always with dataflow
        return atheris.instrument_imports(include=["bridge"])
    return HookManager({"bridge"}, set(), True, trace_dataflow=name not in NO_DATAFLOW)


def write_seeds(root: Path | None = None) -> int:
    """Write every target's seed inputs into its corpus directory; the number written."""
    n = 0
    for name in TARGETS:
        d = corpus_dir(name, root)
        d.mkdir(parents=True, exist_ok=True)
        for data in seed_inputs(name):
            path = d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}"
            if not path.exists():
                path.write_bytes(data)
                n += 1
    return n


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    from bridge.tools import ArgumentParser, add_duration

    parser = ArgumentParser(
        prog="spikebridge bench fuzz", description=__doc__,
        epilog="targets:\n" + "\n".join(f"  {k:<7} {v}" for k, v in TARGETS.items())
        + "\n\nexample: spikebridge bench fuzz native --runs 10000")
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="default: every target")
    parser.add_argument("--runs", type=int, default=FULL_RUNS, help="inputs per target")
    add_duration(parser, "stop a target after this long (default: no limit)", dest="seconds",
                 default=0.0)
    parser.add_argument("--engine", choices=["auto", "atheris", "mutate"], default="auto")
    parser.add_argument("--corpus", type=Path, help="corpus root (default tests/corpus)")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"),
                        help="where failing inputs are kept")
    parser.add_argument("--update-corpus", action="store_true",
                        help="merge inputs that reach new coverage into the corpus (atheris)")
    parser.add_argument("--write-seeds", action="store_true",
                        help="only write the seed inputs into the corpus and exit")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0: fixed default)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Fuzz the named targets (default: all) and print runs, time and coverage for each."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.write_seeds:
        print(f"wrote {write_seeds(args.corpus)} seed inputs")
        return 0
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "mutate"
    elif engine == "atheris" and not have_atheris():
        print("spikebridge bench fuzz: atheris is not installed (pip install atheris)",
              file=sys.stderr)
        return 1
    print(f"spikebridge bench fuzz: engine {engine}, {args.runs} runs per target, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    failed = 0
    for name in names:
        corpus = corpus_dir(name, args.corpus)
        runner = run_atheris if engine == "atheris" else run_mutate
        res = runner(name, args.runs, args.seconds, corpus, args.artifacts, args.seed)
        rate = res.runs / res.seconds if res.seconds else 0.0
        print(f"  {name:<7} {res.runs:>9} inputs in {res.seconds:7.1f} s ({rate:8.0f}/s)  "
              f"{res.coverage:<40} {'ok' if res.ok else 'FAILED'}", flush=True)
        if not res.ok:
            failed += 1
            print(res.detail, file=sys.stderr)
        work = res.work
        if work is not None:
            if args.update_corpus and res.ok:
                added = merge_corpus(name, work, corpus)
                print(f"          {added} new corpus inputs kept in {corpus}")
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
