"""``nir:PATH/TO/MODEL.nir``: a NIR graph (snnTorch, Norse, Sinabs, ... exports) stepped per dt.

The graph is read with the ``nir`` package and compiled by ``nir_exec`` into preallocated numpy
arrays; each ``step`` advances it by one model step. Step semantics are the Brian2 processor's
(docs/nir.md): the ids passed to ``step`` are this step's input spikes (1.0 in the merged input
population, the graph's Input nodes concatenated by node name, each flattened in C order), and
the ids returned are the nonzero elements of the Output nodes after this same step (the output
population, Output nodes concatenated by node name). An empty step returns an empty array, so
the loop sends no frame, as for every processor.

It must never read the clock, touch a socket or import torch, and never allocate per step
beyond the returned id array.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from bridge.errors import ConfigError
from bridge.frame import IdArray
from bridge.processors.base import Processor
from bridge.processors.nir_exec import Program, compile_graph, single_threaded_blas

log = logging.getLogger("spikebridge.nir")

GRAMMAR = "nir:PATH/TO/MODEL.nir"
PARAMS = ("model_dt_ms", "input_layout")
# How a merged input id addresses a (channel, height, width) Input: "chw" is C order, which
# the spif codec's layout=pyx writes (id = (p*H + y)*W + x); "hwc" is the order of spif's
# layout=yxp and of the edvs codec with polarity=both (id = (y*W + x)*2 + p).
LAYOUTS = ("chw", "hwc")
_EMPTY = np.empty(0, dtype=np.uint32)


def load_graph(path: str) -> Any:
    """Read a .nir file with the nir package; ConfigError naming the file when it cannot."""
    from bridge.processors.nir_exec import _import_nir

    nir = _import_nir()
    if not path:
        raise ConfigError(f"expected {GRAMMAR}, got nir:", key="processor")
    if not os.path.isfile(path):
        raise ConfigError(f"no such file {path!r}", key="processor")
    try:
        return nir.read(path)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable NIR graph: {exc!r}", key="processor") from None


def model_dt(params: Mapping[str, Any], dt_ns: int) -> float:
    """The model step in seconds: ``model_dt_ms`` from the params, else the bridge's dt."""
    for key in params:
        if key not in PARAMS:
            raise ConfigError(f"unknown parameter; a nir processor takes {', '.join(PARAMS)}",
                              key=f"processor.params.{key}")
    value = params.get("model_dt_ms")
    if value is None:
        return dt_ns * 1e-9
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"expected a positive number of ms, got {value!r}",
                          key="processor.params.model_dt_ms")
    return float(value) * 1e-3


class NirProcessor(Processor):
    """Steps a compiled NIR graph once per engine step; inputs set its Input nodes to 1."""

    kind: ClassVar[str] = "nir"
    stepped_only: ClassVar[bool] = True

    def __init__(self, graph: Any, label: str) -> None:
        self.graph = graph
        self.label = label
        self.program: Program | None = None
        self.output_size = 0
        self.repetition = -1
        self.steps = 0           # steps of the current run
        self.out_spikes = 0      # output spikes of the current run
        self._running = False
        self._inp = np.zeros(0, np.float32)
        self._prev: IdArray = _EMPTY
        self._perm: IdArray | None = None
        self._views: list[Any] = []
        self._offsets: list[int] = []
        self._blas: Any = None

    @classmethod
    def from_spec(cls, arg: str) -> NirProcessor:
        """Read the graph file named after ``nir:``."""
        return cls(load_graph(arg), arg)

    def _compile(self, inputs: int, dt_ns: int | None, params: Mapping[str, Any]
                 ) -> tuple[Program, IdArray | None]:
        if dt_ns is None:
            raise ConfigError("a nir processor needs stepped mode (a dt)", key="bridge.mode")
        program = compile_graph(self.graph, model_dt(params, dt_ns))
        layout = params.get("input_layout", "chw")
        if layout not in LAYOUTS:
            raise ConfigError(f"must be one of {', '.join(LAYOUTS)}, got {layout!r}",
                              key="processor.params.input_layout")
        perm = None
        if layout == "hwc":
            if len(program.input_shapes) != 1 or len(program.input_shapes[0]) != 3:
                raise ConfigError("input_layout hwc needs one Input node of shape (channel, "
                                  f"height, width); the graph has {program.input_shapes}",
                                  key="processor.params.input_layout")
            c, h, w = program.input_shapes[0]
            # perm[id of (y, x, p) order] = C-order index of (p, y, x)
            order = np.arange(c * h * w, dtype=np.uint32).reshape(c, h, w).transpose(1, 2, 0)
            perm = np.ascontiguousarray(order).reshape(-1)
        if inputs != program.input_size:
            shapes = ", ".join(f"{n} {tuple(s)}" for n, s in
                               zip(program.input_names, program.input_shapes, strict=True))
            raise ConfigError(f"{self.label}: the graph takes {program.input_size} input neurons "
                              f"({shapes}), the inputs give {inputs}; set neurons= to match",
                              key="input")
        return program, perm

    def preflight(self, *, inputs: int, dt_ns: int | None, params: Mapping[str, Any]) -> int | None:
        """Build without compiling or opening anything and return the output population size,
        or None when it is only known after setup; ConfigError on anything setup would refuse."""
        return self._compile(inputs, dt_ns, params)[0].output_size

    def setup(
        self,
        *,
        inputs: int,
        dt_ns: int | None,
        params: Mapping[str, Any],
        on_progress: Callable[[str], None] = lambda _msg: None,
    ) -> int:
        """Compile the graph into arrays; return the output population size."""
        on_progress(f"building {self.label}")
        program, self._perm = self._compile(inputs, dt_ns, params)
        self.program = program
        if self._blas is None:  # one BLAS thread while this processor lives (nir_exec)
            self._blas = single_threaded_blas()
        self._inp = program.input
        self._views = [v.reshape(-1) for v in program.output_views]
        offsets, acc = [], 0
        for v in self._views:
            offsets.append(acc)
            acc += v.size
        self._offsets = offsets
        self.output_size = program.output_size
        if self.output_size == 0:
            raise ConfigError(f"{self.label}: the Output nodes have no neurons", key="processor")
        state = sum(op.out.size for op in program.ops)
        log.info("%s ready: %d inputs (%s), %d outputs (%s), %d nodes, %d state elements, "
                 "%d multiply-adds per step, model dt %.4g ms", self.label, inputs,
                 ", ".join(program.input_names), self.output_size,
                 ", ".join(program.output_names), len(program.node_types), state, program.macs,
                 program.dt * 1e3)
        self.begin_run()
        return self.output_size

    def begin_run(self) -> None:
        """Start a run (repetition); the graph's state carries on, as a Brian2 network's does."""
        if self._running:
            return
        self.repetition += 1
        self.steps = 0
        self.out_spikes = 0
        self._running = True

    # -- the hot path ----------------------------------------------------------------------------

    def step(self, ids: IdArray, now_ns: int) -> IdArray:
        """Set ``ids`` to 1 in the input, advance the graph one step, return the output ids."""
        program = self.program
        if program is None:
            raise RuntimeError("step() before setup()")
        if not self._running:
            self.begin_run()
        inp = self._inp
        prev = self._prev
        if prev.size:
            inp[prev] = 0.0
        if ids.size:
            try:  # numpy refuses an out-of-range index: no separate max() pass needed
                if self._perm is not None:
                    ids = self._perm[ids]
                inp[ids] = 1.0
            except IndexError:
                self._prev = _EMPTY
                inp[...] = 0.0
                raise ValueError(f"input id {int(ids.max())} >= input size {inp.size}") from None
        self._prev = ids
        program.step()
        self.steps += 1
        views = self._views  # flat views: nonzero() on them is flatnonzero without its ravel
        if len(views) == 1:
            out = views[0].nonzero()[0].astype(np.uint32)
        else:
            out = np.concatenate([v.nonzero()[0] + off
                                  for v, off in zip(views, self._offsets, strict=True)]
                                 ).astype(np.uint32)
        self.out_spikes += out.size
        return out

    def post_run(self) -> None:
        """End the run: log its steps and output spikes (once per run)."""
        if not self._running:
            return
        self._running = False
        if self.steps:
            log.info("%s run %d: %d steps, %d output spikes", self.label, self.repetition,
                     self.steps, self.out_spikes)

    def close(self) -> None:
        """Drop the compiled graph; give BLAS its threads back."""
        self._running = False
        self.program = None
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None
