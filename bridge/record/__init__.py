"""Recordings: the .sbr format, the recorder the daemon writes with, replay and inspection.

The real-time loop touches only ``Recorder.record``; everything else here runs off the loop.
"""

from __future__ import annotations

from bridge.record.format import (
    EndpointInfo,
    EndRecord,
    GapRecord,
    Header,
    Record,
    RecordDecoder,
    RecordingError,
    SpikeRecord,
)
from bridge.record.recorder import Recorder
from bridge.record.sbrfile import ReadReport, SbrReader, SbrWriter, SpikeTable, load_table

__all__ = [
    "EndRecord",
    "EndpointInfo",
    "GapRecord",
    "Header",
    "ReadReport",
    "Record",
    "RecordDecoder",
    "Recorder",
    "RecordingError",
    "SbrReader",
    "SbrWriter",
    "SpikeRecord",
    "SpikeTable",
    "load_table",
]
