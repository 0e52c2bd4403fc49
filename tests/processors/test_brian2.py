"""Brian2 processor: step semantics, outputs, post-run hook, errors, quiet logging.

These run on Brian's numpy target (no compiler, no cache); the Cython path and its cache are
tested through ``spikebridge prebuild`` in tests/test_prebuild.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("brian2")

from bridge.errors import ConfigError
from bridge.processors import processor_from_spec
from bridge.processors.brian2 import (
    Brian2Processor,
    Brian2Settings,
    RunInfo,
    import_brian,
    parse_config,
)

NETS = Path(__file__).parent / "nets"
DT_NS = 1_000_000
NUMPY = Brian2Settings(target="numpy")


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


NONE = ids()


def make(net: str, *, inputs: int = 8, params: dict[str, Any] | None = None,
         dt_ns: int = DT_NS) -> Brian2Processor:
    proc = processor_from_spec(f"brian2:{NETS / net}")
    assert isinstance(proc, Brian2Processor)
    proc.configure(NUMPY)
    proc.setup(inputs=inputs, dt_ns=dt_ns, params=params or {})
    return proc


@pytest.fixture
def opened() -> Iterator[list[Brian2Processor]]:
    procs: list[Brian2Processor] = []
    yield procs
    for p in procs:
        p.close()


def test_input_fires_in_the_step_it_is_given(opened: list[Brian2Processor]) -> None:
    proc = make("echo.py")
    opened.append(proc)
    assert proc.output_size == 8
    assert proc.step(ids(3, 5), 0).tolist() == [3, 5]
    assert proc.step(NONE, 0).tolist() == []  # reset: an input spike is one spike
    assert proc.step(ids(0, 7), 0).tolist() == [0, 7]
    assert proc.step(ids(7), 0).dtype == np.uint32


def test_unsorted_and_repeated_input_ids_fire_once_each(opened: list[Brian2Processor]) -> None:
    proc = make("echo.py")
    opened.append(proc)
    assert proc.step(ids(6, 2, 6, 0, 2), 0).tolist() == [0, 2, 6]


def test_input_id_beyond_the_input_group_is_refused(opened: list[Brian2Processor]) -> None:
    proc = make("echo.py")
    opened.append(proc)
    with pytest.raises(ValueError, match="input id 8"):
        proc.step(ids(1, 8), 0)
    assert proc.step(ids(1), 0).tolist() == [1]  # the processor is still usable


def test_default_schedule_answers_one_step_later(opened: list[Brian2Processor]) -> None:
    proc = make("relay.py", inputs=4)
    opened.append(proc)
    assert proc.step(ids(1, 2), 0).tolist() == []
    assert proc.step(NONE, 0).tolist() == [1, 2]
    assert proc.step(NONE, 0).tolist() == []


def test_threshold_after_synapses_answers_in_the_same_step(opened: list[Brian2Processor]) -> None:
    proc = make("relay.py", inputs=4, params={"same_step": True})
    opened.append(proc)
    assert proc.step(ids(0, 3), 0).tolist() == [0, 3]
    assert proc.step(NONE, 0).tolist() == []


def test_outputs_concatenate_in_order_with_subgroups(opened: list[Brian2Processor]) -> None:
    # outputs: out (4 neurons) | silent[2:] (2) | the input group (4)
    proc = make("relay.py", inputs=4, params={"three_outputs": True})
    opened.append(proc)
    assert proc.output_size == 4 + 2 + 4
    assert proc.step(ids(2), 0).tolist() == [6 + 2]      # the input group, at offset 6
    assert proc.step(NONE, 0).tolist() == [2]            # out[2], at offset 0
    proc.net["silent"].v[3] = 5.0                        # silent[3] = tail[1], at offset 5
    proc.net["silent"].v[1] = 5.0                        # not part of the output slice
    assert proc.step(ids(0), 0).tolist() == [5, 6]


def test_stepping_matches_brian_network_run(opened: list[Brian2Processor]) -> None:
    """Same network, same input times: the spikes of step() equal those of net.run()."""
    b2 = import_brian()
    steps = 150
    pattern = {k: sorted({k % 20, (3 * k + 1) % 20}) for k in range(0, steps, 4)}
    proc = make("cuba_small.py", inputs=20)
    opened.append(proc)
    stepped = [proc.step(ids(*pattern.get(k, [])), 0).tolist() for k in range(steps)]
    proc.post_run()

    # Bare Brian: the same builder, the same input times from a SpikeGeneratorGroup.
    import importlib.util

    spec = importlib.util.spec_from_file_location("cuba_small_bare", NETS / "cuba_small.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    b2.defaultclock.dt = DT_NS * 1e-9 * b2.second
    k_idx = [(k, i) for k, row in pattern.items() for i in row]
    gen = b2.SpikeGeneratorGroup(20, [i for _, i in k_idx],
                                 [k for k, _ in k_idx] * b2.defaultclock.dt)
    built = mod.build(gen, b2.defaultclock.dt, {})
    mon = b2.SpikeMonitor(built.outputs[0].source)
    net = b2.Network(gen, *built.objects, mon)
    net.run(steps * b2.defaultclock.dt, namespace=vars(mod))
    bare: list[list[int]] = [[] for _ in range(steps)]
    for i, t in zip(mon.i[:], mon.t[:], strict=True):
        if i < 50:
            bare[round(float(t / b2.defaultclock.dt))].append(int(i))
    assert sum(map(len, bare)) > 20  # the comparison has spikes to compare
    assert stepped == [sorted(b) for b in bare]


def test_post_run_gets_the_network_and_the_run(opened: list[Brian2Processor]) -> None:
    proc = make("echo.py")
    opened.append(proc)
    runs: list[tuple[Any, RunInfo]] = proc.module.RUNS
    for _ in range(5):
        proc.step(NONE, 0)
    proc.post_run()
    proc.post_run()  # nothing ran since: no second call
    assert len(runs) == 1
    net, info = runs[0]
    assert net["spikebridge_input"] is proc.input_group
    assert info == RunInfo(repetition=0, steps=5, t_start=0.0, t_end=pytest.approx(0.005))
    proc.begin_run()
    proc.step(ids(1), 0)
    proc.post_run()
    assert [r.repetition for _, r in runs] == [0, 1]
    assert runs[1][1].t_start == pytest.approx(0.005)  # Brian time continues across runs
    assert runs[1][1].steps == 1


def test_step_without_begin_run_starts_the_next_run(opened: list[Brian2Processor]) -> None:
    proc = make("echo.py")
    opened.append(proc)
    proc.step(NONE, 0)
    proc.post_run()
    assert proc.step(ids(4), 0).tolist() == [4]
    assert proc.repetition == 1


def test_dt_is_the_networks_clock(opened: list[Brian2Processor]) -> None:
    proc = make("echo.py", dt_ns=250_000)
    opened.append(proc)
    assert float(proc.input_group.clock.dt) == pytest.approx(250e-6)
    for _ in range(4):
        proc.step(NONE, 0)
    proc.post_run()
    assert float(proc.net.t_) == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ("two_clocks", "clocks"),
        ("no_spikes", "does not spike"),
        ("wrong_type", "returned list"),
        ("unknown_name", "no object named 'nope'"),
        ("raises", "bug in the builder"),
        ("undefined_name", "tau_nowhere"),
        ("orphan_subgroup", "put that group in objects"),
        ("own_dt", "do not set dt in the network file"),
    ],
)
def test_builder_mistakes_are_config_errors(builder: str, message: str) -> None:
    proc = processor_from_spec(f"brian2:{NETS / 'broken.py'}:{builder}")
    proc.configure(NUMPY)
    with pytest.raises(ConfigError, match=message):
        proc.setup(inputs=4, dt_ns=DT_NS, params={})
    proc.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("brian2:", "expected brian2:PATH"),
        ("brian2:net.txt", "expected brian2:PATH"),
        (f"brian2:{NETS / 'missing.py'}", "no such file"),
        (f"brian2:{NETS / 'echo.py'}:nothing", "defines no function nothing"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        processor_from_spec(spec)


def test_needs_stepped_mode() -> None:
    proc = processor_from_spec(f"brian2:{NETS / 'echo.py'}")
    assert proc.stepped_only
    with pytest.raises(ConfigError, match="stepped"):
        proc.setup(inputs=4, dt_ns=None, params={})


def test_parse_config() -> None:
    assert parse_config({}) == Brian2Settings()
    got = parse_config({"cache_dir": "~/x", "target": "numpy"})
    assert got.target == "numpy"
    assert got.resolved_cache_dir() == str(Path("~/x").expanduser())
    with pytest.raises(ConfigError, match=r"brian2\.target"):
        parse_config({"target": "cpp_standalone"})
    with pytest.raises(ConfigError, match=r"brian2\.cachedir"):
        parse_config({"cachedir": "/tmp"})
    with pytest.raises(ConfigError, match=r"brian2\.cache_dir"):
        parse_config({"cache_dir": 3})


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Brian2Settings().resolved_cache_dir() == str(tmp_path / "spikebridge" / "brian2")


def test_brian_logs_into_our_logging_and_writes_no_files(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b2 = import_brian()
    from brian2.utils.logger import BrianLogger

    assert BrianLogger.file_handler is None and BrianLogger.tmp_log is None
    assert BrianLogger.tmp_script is None
    assert not b2.prefs.logging.std_redirection
    assert BrianLogger.console_handler not in logging.getLogger("brian2").handlers
    assert logging.getLogger("brian2").propagate
    with caplog.at_level(logging.WARNING):
        b2.get_logger("brian2.test").warn("hello from brian", "probe")
    assert any(r.name.startswith("brian2.test") and "hello from brian" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize(("weight", "fires"), [(0.5, [2]), (0.2, [])])
def test_equations_see_builder_locals_and_module_globals(
    opened: list[Brian2Processor], weight: float, fires: list[int]
) -> None:
    proc = make("local_names.py", inputs=4, params={"weight": weight})
    opened.append(proc)
    proc.step(ids(2), 0)
    assert proc.step(NONE, 0).tolist() == fires  # 0.5 * 3 > 1 fires, 0.2 * 3 does not


def test_network_operations_run_every_step(opened: list[Brian2Processor]) -> None:
    proc = make("with_operation.py")
    opened.append(proc)
    for _ in range(3):
        proc.step(NONE, 0)
    assert pytest.approx([0.0, 0.001, 0.002]) == proc.module.CALLS


def test_post_run_can_restore_a_snapshot_for_identical_trials(
    opened: list[Brian2Processor],
) -> None:
    proc = make("trials.py")
    opened.append(proc)
    proc.net.store("trial_start")
    first = [proc.step(NONE, 0).tolist() for _ in range(25)]
    proc.post_run()
    proc.begin_run()
    second = [proc.step(NONE, 0).tolist() for _ in range(25)]
    assert [k for k, s in enumerate(first) if s] == [10, 21]
    assert second == first


def test_brian_leaves_sigint_to_us() -> None:
    import signal

    b2 = import_brian()
    assert signal.getsignal(signal.SIGINT) is not getattr(b2, "_int_handler", None)
