"""The examples a new user starts from: their configs validate and their networks behave.

The networks run on Brian's numpy target here (no compiler), small where they have a size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.config import load_config
from bridge.processors import processor_from_spec
from bridge.processors.brian2 import Brian2Processor, Brian2Settings

pytest.importorskip("brian2")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NONE = np.empty(0, dtype=np.uint32)


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


@pytest.mark.parametrize("name", ["cuba.toml", "reflex.toml"])
def test_example_configs_validate(name: str) -> None:
    cfg = load_config(str(EXAMPLES / name))
    assert cfg.mode == "stepped" and cfg.processor.startswith(f"brian2:{EXAMPLES}/")
    assert (EXAMPLES.parent / cfg.processor.partition(":")[2]).is_file()


def example(name: str, inputs: int, params: dict[str, Any], dt_ns: int = 1_000_000
            ) -> Brian2Processor:
    proc = processor_from_spec(f"brian2:{EXAMPLES / name}")
    assert isinstance(proc, Brian2Processor)
    proc.configure(Brian2Settings(target="numpy"))
    proc.setup(inputs=inputs, dt_ns=dt_ns, params=params)
    return proc


def test_reflex_answers_on_the_opposite_side_in_the_same_step() -> None:
    proc = example("reflex.py", 64, {"weight": 0.35})
    try:
        assert proc.output_size == 2
        assert proc.step(ids(0, 1), 0).tolist() == []      # 0.7: below threshold
        proc.step(NONE, 0)
        for _ in range(100):                               # let it decay
            proc.step(NONE, 0)
        assert proc.step(ids(0, 1, 2), 0).tolist() == [1]  # left volley -> right motor, now
        # The right motor's spike reaches the left one in the next step and holds it down.
        assert proc.step(ids(40, 41, 42), 0).tolist() == []
        assert proc.step(ids(40, 41, 42), 0).tolist() == [0]
        assert proc.step(ids(3, 4, 5), 0).tolist() == []   # right motor still refractory
        for _ in range(10):
            proc.step(NONE, 0)
        assert proc.step(ids(3, 4, 5), 0).tolist() == [1]
    finally:
        proc.post_run()
        proc.close()


def test_cuba_builds_small_and_spikes() -> None:
    proc = example("cuba.py", 20, {"n": 400, "p_in": 0.5, "n_out": 30, "seed": 3},
                   dt_ns=100_000)
    try:
        assert proc.output_size == 30
        fired = sum(proc.step(ids(*range(20)) if k % 5 == 0 else NONE, 0).size
                    for k in range(300))
        assert fired > 0
    finally:
        proc.post_run()
        proc.close()
