"""Shared fixtures: a small recording with inputs, an output, offsets and a gap record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.record.format import EndpointInfo, Header, encode_end, encode_gap, encode_spikes
from bridge.record.sbrfile import SbrWriter

MS = 1_000_000
ENDPOINTS = (
    EndpointInfo("in0", "udp://0.0.0.0:5000", "in", "native", 200),
    EndpointInfo("in1", "udp://0.0.0.0:5001", "in", "native", 100, offset=200),
    EndpointInfo("out0", "udp://127.0.0.1:6000", "out", "native", 300),
)


@pytest.fixture
def sample_sbr(tmp_path: Path) -> Path:
    """2 s at 1 kHz frames per endpoint, random spikes (seeded), one gap record at 1.2 s."""
    rng = np.random.default_rng(1)
    path = tmp_path / "sample.sbr"
    w = SbrWriter(path, Header(ENDPOINTS, start_wall_ns=1_700_000_000 * 10**9,
                               start_mono_ns=0, run="sample"))
    for k in range(2000):
        for ep, info in enumerate(ENDPOINTS):
            ids = np.flatnonzero(rng.random(info.neurons) < 0.01).astype(np.uint32)
            w.write(encode_spikes(k * MS + ep * 1000, ep, 3, k, 0, ids))
        if k == 1200:
            w.write(encode_gap(k * MS, "overflow", 40, 100))
    w.write(encode_end(2000 * MS, 6000, 0, 0, 0))
    w.close()
    return path
