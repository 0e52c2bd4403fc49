"""A step function that raises is logged with the user's frames, not the engine's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.codecs.native import NativeCodec
from bridge.frame import SpikeFrame
from bridge.testing import wait_for


def test_a_failing_step_function_is_logged_with_the_users_frames_not_ours(
        run_bridge: Any, peers: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mod = tmp_path / "steps.py"
    mod.write_text("def lookup(ids):\n    return {}[int(ids[0])]\n\n"
                   "def step(ids):\n    return lookup(ids)\n")
    tx = peers()
    rb = run_bridge({"bridge": {"processor": f"python:{mod}:step"},
                     "input": ["udp://127.0.0.1:0?format=native&neurons=8"]})
    [data] = NativeCodec(8).encode(SpikeFrame.of([3], seq=0))
    tx.send(rb.in_port(), data)
    assert wait_for(lambda: rb.bridge.stats.processor_errors == 1)
    assert wait_for(lambda: "KeyError: 3" in caplog.text)
    assert f'File "{mod}", line 5, in step' in caplog.text
    assert f'File "{mod}", line 2, in lookup' in caplog.text
    assert "bridge/engine" not in caplog.text and "bridge/processors" not in caplog.text
