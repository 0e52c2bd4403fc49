"""The nir processor without torch: graphs built with the nir package, step semantics, errors.

The agreement with snnTorch's own NIR import is in test_nir_snntorch.py (torch marker).
"""

from __future__ import annotations

import socket
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.codecs.native import NativeCodec
from bridge.errors import ConfigError
from bridge.frame import SpikeFrame
from bridge.processors import processor_from_spec
from bridge.processors.nir import NirProcessor
from bridge.processors.nir_exec import compile_graph
from bridge.testing import free_udp_port

nir = pytest.importorskip("nir")

DT_NS = 1_000_000  # 1 ms
DT = DT_NS * 1e-9


def relay_lif(n: int, dt: float = DT) -> Any:
    """Input -> LIF that fires on one input spike, in the same step (g = r*dt/tau = 1)."""
    tau = np.full(n, 2 * dt)
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])),
               "lif": nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(n),
                              v_threshold=np.full(n, 0.5)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "lif"), ("lif", "output")])


def write(graph: Any, tmp_path: Path, name: str = "g.nir") -> str:
    path = tmp_path / name
    nir.write(str(path), graph)
    return str(path)


def proc_for(graph: Any, tmp_path: Path, inputs: int, **params: Any) -> NirProcessor:
    proc = processor_from_spec(f"nir:{write(graph, tmp_path)}")
    assert isinstance(proc, NirProcessor)
    proc.setup(inputs=inputs, dt_ns=DT_NS, params=params)
    return proc


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


# -- step semantics ------------------------------------------------------------------------------


def test_input_fires_in_the_step_it_is_given_and_output_is_read_the_same_step(
        tmp_path: Path) -> None:
    proc = proc_for(relay_lif(8), tmp_path, 8)
    assert proc.output_size == 8
    assert proc.step(ids(1, 5), 0).tolist() == [1, 5]
    assert proc.step(ids(), 0).tolist() == []  # reset to 0 after the spike: nothing left over
    assert proc.step(ids(7), 0).tolist() == [7]


def test_an_empty_step_returns_the_empty_id_array_the_other_processors_return(
        tmp_path: Path) -> None:
    # The loop sends no frame for a step whose output is empty, whatever the processor: the
    # nir processor must hand it the same empty uint32 array the python processor does.
    from bridge.processors.python import PythonProcessor

    proc = proc_for(relay_lif(4), tmp_path, 4)
    out = proc.step(ids(), 0)
    py = PythonProcessor(lambda _ids: [], __import__("types").ModuleType("m"), "m:f")
    ref = py.step(ids(), 0)
    assert (out.dtype, out.shape) == (ref.dtype, ref.shape) == (np.dtype(np.uint32), (0,))


def test_out_of_range_input_id_raises_and_the_next_step_is_clean(tmp_path: Path) -> None:
    proc = proc_for(relay_lif(4), tmp_path, 4)
    with pytest.raises(ValueError, match="input id 4 >= input size 4"):
        proc.step(ids(4), 0)
    assert proc.step(ids(2), 0).tolist() == [2]


def test_several_outputs_concatenate_by_name_and_delay_counts_steps(
        tmp_path: Path) -> None:
    n = 4
    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])),
               "now": nir.Output(np.array([n])),
               "delay": nir.Delay(np.full(n, 3 * DT)),
               "later": nir.Output(np.array([n]))},
        edges=[("input", "now"), ("input", "delay"), ("delay", "later")])
    proc = proc_for(g, tmp_path, n)
    assert proc.output_size == 2 * n
    got = [proc.step(ids(2) if k == 0 else ids(), 0).tolist() for k in range(5)]
    assert got == [[n + 2], [], [], [2], []]  # "later" before "now"


def test_nested_graph_runs_as_its_flattened_equivalent(tmp_path: Path) -> None:
    n = 6
    rng = np.random.default_rng(3)
    w = rng.normal(0.6, 0.5, (n, n)).astype(np.float32)
    tau = np.full(n, 5 * DT)
    inner = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([n])), "fc": nir.Linear(w),
               "lif": nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(n),
                              v_threshold=np.ones(n)),
               "out": nir.Output(np.array([n]))},
        edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    nested = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])), "block": inner,
               "output": nir.Output(np.array([n]))},
        edges=[("input", "block"), ("block", "output")])
    flat = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])), "fc": nir.Linear(w),
               "lif": nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(n),
                              v_threshold=np.ones(n)),
               "output": nir.Output(np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    a = proc_for(nested, tmp_path, n)
    b = proc_for(flat, tmp_path, n)  # the file is read when the spec is: a's is done with
    pattern = rng.random((200, n)) < 0.3
    total = 0
    for row in pattern:
        x = np.flatnonzero(row).astype(np.uint32)
        ya, yb = a.step(x, 0), b.step(x, 0)
        assert ya.tolist() == yb.tolist()
        total += ya.size
    assert total > 20  # the comparison saw spikes


def test_hwc_layout_maps_edvs_ids_onto_channel_height_width(tmp_path: Path) -> None:
    c, h, w = 2, 3, 4
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([c, h, w])),
                            "output": nir.Output(np.array([c, h, w]))},
                     edges=[("input", "output")])
    proc = proc_for(g, tmp_path, c * h * w, input_layout="hwc")
    x, y, p = 3, 1, 1
    edvs_id = (y * w + x) * 2 + p  # the edvs codec's id with polarity=both
    assert proc.step(ids(edvs_id), 0).tolist() == [(p * h + y) * w + x]
    chw = proc_for(g, tmp_path, c * h * w)  # default: ids are already C order (spif pyx)
    assert chw.step(ids((p * h + y) * w + x), 0).tolist() == [(p * h + y) * w + x]


def test_step_allocates_no_array_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shape = (4, 32, 32)
    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2, 32, 32])),
               "conv": nir.Conv2d(input_shape=(32, 32),
                                  weight=rng.random((4, 2, 3, 3)).astype(np.float32),
                                  stride=1, padding=1, dilation=1, groups=1,
                                  bias=np.full(4, 0.1, np.float32)),
               "lif": nir.LIF(tau=np.full(shape, 4 * DT), r=np.full(shape, 4.0),
                              v_leak=np.zeros(shape), v_threshold=np.ones(shape)),
               "pool": nir.AvgPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])),
               "flat": nir.Flatten(input_type={"input": np.array([4, 16, 16])}, start_dim=0),
               "fc": nir.Affine(rng.random((3, 1024)).astype(np.float32),
                                np.zeros(3, np.float32)),
               "cuba": nir.CubaLIF(tau_syn=np.full(3, 2 * DT), tau_mem=np.full(3, 4 * DT),
                                   r=np.full(3, 4.0), v_leak=np.zeros(3),
                                   v_threshold=np.ones(3), w_in=np.full(3, 2.0)),
               "delay": nir.Delay(np.full(3, 2 * DT)),
               "output": nir.Output(np.array([3]))},
        edges=[("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"),
               ("flat", "fc"), ("fc", "cuba"), ("cuba", "delay"), ("delay", "output")])
    prog = compile_graph(g, DT)
    prog.input[:] = rng.random(prog.input.size) < 0.2
    prog.step()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(50):
            prog.step()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # What remains is numpy's call overhead (< 1.5 kB per call, freed at once). A copy of
    # any state would show: the conv output and LIF state are 16 kB each, im2col 72 kB.
    assert peak < 8192, peak


# -- errors --------------------------------------------------------------------------------------


def test_unsupported_node_is_a_config_error_naming_node_type_and_the_supported_list(
        tmp_path: Path) -> None:
    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([1, 8])),
               "c1": nir.Conv1d(input_shape=8, weight=np.ones((1, 1, 3)), stride=1, padding=0,
                                dilation=1, groups=1, bias=np.zeros(1)),
               "output": nir.Output(np.array([1, 6]))},
        edges=[("input", "c1"), ("c1", "output")])
    proc = processor_from_spec(f"nir:{write(g, tmp_path)}")
    # check calls preflight (the preflight branch); this branch's check does not yet, so the
    # call is made here directly: it must find what setup would refuse without opening anything
    with pytest.raises(ConfigError) as err:
        proc.preflight(inputs=8, dt_ns=DT_NS, params={})
    text = str(err.value)
    assert "'c1'" in text and "Conv1d" in text
    assert "supported: Input, Output, Affine, Linear" in text and "AvgPool2d" in text
    with pytest.raises(ConfigError, match="Conv1d"):
        proc.setup(inputs=8, dt_ns=DT_NS, params={})


def test_a_config_naming_an_unsupported_graph_fails_preflight_as_check_calls_it(
        tmp_path: Path) -> None:
    # What check does in the preflight branch: load the config, build the processor from its
    # spec, configure it, preflight it with the config's inputs, dt and params.
    from bridge.config import load_config

    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([1, 8])),
               "odd": nir.Conv1d(input_shape=8, weight=np.ones((1, 1, 3)), stride=1, padding=0,
                                 dilation=1, groups=1, bias=np.zeros(1)),
               "output": nir.Output(np.array([1, 6]))},
        edges=[("input", "odd"), ("odd", "output")])
    write(g, tmp_path, "model.nir")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[bridge]\nprocessor = "nir:model.nir"\ndt_ms = 1.0\n'
                        '[[input]]\nurl = "udp://127.0.0.1:9?format=native&neurons=8"\n'
                        "[processor.params]\nmodel_dt_ms = 0.5\n")
    cfg = load_config(str(cfg_path))
    assert cfg.processor == f"nir:{tmp_path / 'model.nir'}"  # relative to the config file
    proc = processor_from_spec(cfg.processor)
    proc.configure(cfg.section("nir"))
    with pytest.raises(ConfigError, match=r"node 'odd' is a Conv1d"):
        proc.preflight(inputs=8, dt_ns=cfg.dt_ns, params=cfg.params)


def test_preflight_gives_the_output_size_and_refuses_what_setup_refuses(tmp_path: Path) -> None:
    proc = processor_from_spec(f"nir:{write(relay_lif(5), tmp_path)}")
    assert proc.preflight(inputs=5, dt_ns=DT_NS, params={}) == 5
    with pytest.raises(ConfigError, match=r"takes 5 input neurons .*the inputs give 4"):
        proc.preflight(inputs=4, dt_ns=DT_NS, params={})
    with pytest.raises(ConfigError, match="stepped mode"):
        proc.preflight(inputs=5, dt_ns=None, params={})
    with pytest.raises(ConfigError) as err:
        proc.preflight(inputs=5, dt_ns=DT_NS, params={"weight": 1})
    assert err.value.key == "processor.params.weight"
    with pytest.raises(ConfigError, match="positive number of ms"):
        proc.preflight(inputs=5, dt_ns=DT_NS, params={"model_dt_ms": 0})
    with pytest.raises(ConfigError, match="chw, hwc"):
        proc.preflight(inputs=5, dt_ns=DT_NS, params={"input_layout": "xyz"})


def test_a_time_constant_below_dt_is_refused(tmp_path: Path) -> None:
    proc = processor_from_spec(f"nir:{write(relay_lif(2, dt=DT / 4), tmp_path)}")
    with pytest.raises(ConfigError, match="shorter than the step dt"):
        proc.preflight(inputs=2, dt_ns=DT_NS, params={})
    assert proc.preflight(inputs=2, dt_ns=DT_NS, params={"model_dt_ms": 0.25}) == 2


def test_relay_mode_is_refused_in_the_config() -> None:
    from bridge.config import build_config

    doc = {"bridge": {"processor": "nir:m.nir", "mode": "relay"},
           "input": ["udp://127.0.0.1:9?format=native&neurons=4"]}
    with pytest.raises(ConfigError, match="nir processor runs in stepped mode only"):
        build_config(doc)
    doc["bridge"] = {"processor": "nir:m.nir"}
    assert build_config(doc).mode == "stepped"  # the default for nir:


def test_missing_or_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        processor_from_spec(f"nir:{tmp_path / 'none.nir'}")
    bad = tmp_path / "bad.nir"
    bad.write_text("not hdf5")
    with pytest.raises(ConfigError, match="not a readable NIR graph"):
        processor_from_spec(f"nir:{bad}")
    with pytest.raises(ConfigError, match=r"nir:PATH/TO/MODEL\.nir"):
        processor_from_spec("nope:x")


# -- through the daemon over UDP -----------------------------------------------------------------


@pytest.mark.integration
def test_udp_through_the_daemon_same_step_and_delayed_outputs(tmp_path: Path,
                                                              daemon: Any) -> None:
    n, dt_ms, delay = 8, 20.0, 3
    dt = dt_ms / 1e3
    tau = np.full(n, 2 * dt)
    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([n])),
               "lif": nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(n),
                              v_threshold=np.full(n, 0.5)),
               "now": nir.Output(np.array([n])),
               "delay": nir.Delay(np.full(n, delay * dt)),
               "later": nir.Output(np.array([n]))},
        edges=[("input", "lif"), ("lif", "now"), ("lif", "delay"), ("delay", "later")])
    path = write(g, tmp_path)
    pin, pout = free_udp_port(), free_udp_port()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", pout))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out_codec, in_codec = NativeCodec(2 * n), NativeCodec(n)
    try:
        d = daemon("--in", f"udp://127.0.0.1:{pin}?format=native&neurons={n}",
                   "--out", f"udp://127.0.0.1:{pout}?format=native&neurons={2 * n}",
                   "--processor", f"nir:{path}", "--dt", str(dt_ms))
        rx.settimeout(0.5)
        frames: list[SpikeFrame] = []
        for attempt in range(120):  # start-up: until the first answer comes back
            tx.sendto(in_codec.encode(SpikeFrame.of([1], source=4, seq=attempt))[0],
                      ("127.0.0.1", pin))
            try:
                frames.append(out_codec.decode(rx.recv(65536)))
                break
            except TimeoutError:
                continue
        assert frames, d.stop() or d.output
        rx.settimeout(delay * dt + 1.0)
        while True:  # drain the start-up probes: each comes back now, then delayed
            try:
                rx.settimeout(delay * dt * 2 + 0.3)
                rx.recv(65536)
            except TimeoutError:
                break
        sent = [0, 3, 7]
        tx.sendto(in_codec.encode(SpikeFrame.of(sent, source=4, seq=500))[0], ("127.0.0.1", pin))
        rx.settimeout(2.0)
        first = out_codec.decode(rx.recv(65536))
        second = out_codec.decode(rx.recv(65536))
        assert first.ids.tolist() == [i + n for i in sent]  # the same step: 'now' (2nd)
        assert second.ids.tolist() == sent                   # 3 steps later: 'later' (1st)
        gap_ns = second.t_sent_ns - first.t_sent_ns
        assert gap_ns == pytest.approx(delay * dt * 1e9, abs=dt * 1e9 / 2)
        rx.settimeout(delay * dt * 3)
        with pytest.raises(TimeoutError):  # empty steps send nothing, as for every processor
            rx.recv(65536)
        assert d.stop() == 0, d.output
    finally:
        rx.close()
        tx.close()


def test_blas_runs_single_threaded_while_the_processor_lives(tmp_path: Path) -> None:
    # BLAS worker threads would compete with the pinned loop thread for its CPU (nir_exec).
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]

    before = blas_threads()
    proc = proc_for(relay_lif(4), tmp_path, 4)
    assert blas_threads() and all(n == 1 for n in blas_threads())
    proc.close()
    assert blas_threads() == before
