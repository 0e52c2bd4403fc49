"""``spikebridge bench events``: its datagrams are valid and its books add up at a low rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.bench import events
from bridge.codecs.faery_udp import T64X16Y16On8Codec
from bridge.codecs.spif import SpifCodec

pytestmark = pytest.mark.integration


def test_the_blasted_datagrams_are_full_valid_packets() -> None:
    rng = np.random.default_rng(0)
    spif, n = events.spif_datagram(rng)
    assert (len(spif), n) == (512, 128)
    assert len(SpifCodec(0, width=events.W, height=events.H).decode(spif).ids) == 128
    t64, n = events.t64_datagram(rng)
    assert (len(t64), n) == (1300, 100)
    assert len(T64X16Y16On8Codec(0, width=events.W, height=events.H).decode(t64).ids) == 100


@pytest.mark.parametrize("path", ["spif", "t64"])
def test_books_balance_at_a_low_rate(tmp_path: Path, path: str) -> None:
    rng = np.random.default_rng(0)
    geo = f"width={events.W}&height={events.H}&neurons={events.NEURONS}"
    if path == "spif":
        msg, per = events.spif_datagram(rng)
        target = events.Spikebridge("sb", f"format=spif&{geo}", f"format=spif&{geo}", msg, per,
                                    tmp_path / "sb.log")
    else:
        msg, per = events.t64_datagram(rng)
        target = events.Spikebridge("sb", f"format=t64_x16_y16_on8&{geo}",
                                    f"format=native&neurons={events.NEURONS}", msg, per,
                                    tmp_path / "sb.log")
    port = events.free_port()
    target.start(port)
    try:
        got = events.blast(target, port, msg, per, 50 * per, 0.4)  # 50 datagrams/s
    finally:
        target.stop()
    assert got["sent"] > 0
    assert got["received"] == got["sent"]  # every datagram reached spikebridge's books
    assert got["uncounted"] == 0
    assert got["delivered"] + got["counted_drops"] == got["sent"]


def test_unknown_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert events.main(["--paths", "nope"]) == 2
    assert "unknown path" in capsys.readouterr().err
