"""The codec registry: a format name maps to a Codec class, imported on first use.

Lookups by name are how config, CLI and URLs pick a wire format (``format=native``).
"""

from __future__ import annotations

import importlib

from bridge.codecs.base import Codec, Option

__all__ = ["CODECS", "STREAM_CODECS", "Codec", "Option", "codec_class", "format_names"]

# name -> "module:Class"; stream formats for serial links (board, edvs) live beside these.
CODECS: dict[str, str] = {
    "legacy": "bridge.codecs.legacy:LegacyCodec",
    "native": "bridge.codecs.native:NativeCodec",
    "eieio": "bridge.codecs.eieio:EieioCodec",
    "spif": "bridge.codecs.spif:SpifCodec",
    "t64_x16_y16_on8": "bridge.codecs.faery_udp:T64X16Y16On8Codec",
    "t32_x16_y15_on1": "bridge.codecs.faery_udp:T32X16Y15On1Codec",
}


# name -> "module:Class" of stream decoders/encoders for byte-stream links (serial).
STREAM_CODECS: dict[str, str] = {
    "board": "bridge.codecs.board:BoardCodec",
    "edvs": "bridge.codecs.edvs:EdvsCodec",
}


def format_names() -> list[str]:
    """The registered datagram format names, sorted."""
    return sorted(CODECS)


def codec_class(name: str) -> type[Codec]:
    """Return the Codec class registered as ``name``; KeyError when there is none."""
    target = CODECS[name]
    module, _, attr = target.partition(":")
    cls: type[Codec] = getattr(importlib.import_module(module), attr)
    return cls
