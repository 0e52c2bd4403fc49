"""A NIR graph compiled into preallocated numpy arrays and stepped once per ``dt``.

``compile_graph`` turns a ``nir.NIRGraph`` (nested graphs flattened) into a ``Program``: the
nodes in execution order, each with its state and output arrays allocated once. ``Program.step``
advances every node by one step of the model's ``dt`` in place. The discretisation of each
primitive is written out in docs/nir.md (forward Euler; the synaptic current is updated before
the membrane, spikes are ``v > v_threshold`` and reset the membrane in the same step, as
snnTorch's ``Leaky``/``Synaptic`` with ``reset_delay=False`` do).

It must never allocate in ``step`` where numpy lets it write into a preallocated array, never
read the clock and never import torch: it is the bridge's hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.errors import ConfigError

F32 = np.float32
Array = npt.NDArray[np.float32]
Shape = tuple[int, ...]

SUPPORTED = (
    "Input", "Output", "Affine", "Linear", "Scale", "Threshold", "LI", "LIF", "CubaLI",
    "CubaLIF", "IF", "I (Integrator)", "Delay", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d",
    "NIRGraph (nested)",
)


class GraphError(ConfigError):
    """A graph this executor cannot run (unsupported node, bad shapes, bad edges)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="processor")


def single_threaded_blas() -> Any:
    """Limit numpy's BLAS to one thread until the returned limiter's ``restore_original_limits``.

    The engine steps on one (pinned, possibly SCHED_FIFO) thread: BLAS worker threads would
    compete with it for its CPU. Measured on the 64x48 conv SNN with 14 channels pinned to
    one CPU: 13.3 ms per step with OpenBLAS's 2 threads, 0.86 ms with one.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise ConfigError(f"threadpoolctl is not installed ({exc}); "
                          "pip install 'spikebridge[nir]'", key="processor") from None
    return threadpool_limits(limits=1, user_api="blas")


def _import_nir() -> Any:
    try:
        import nir
    except ImportError as exc:
        raise ConfigError(f"the nir package is not installed ({exc}); "
                          "pip install 'spikebridge[nir]'", key="processor") from None
    return nir


# -- flattening nested graphs -------------------------------------------------------------------


@dataclass
class Flat:
    """A graph with nested NIRGraphs inlined: leaf nodes by dotted name, and their edges."""

    nodes: dict[str, Any]
    edges: list[tuple[str, str]]
    inputs: list[str]    # the top graph's Input nodes, by name
    outputs: list[str]   # the top graph's Output nodes, by name


def flatten_graph(graph: Any) -> Flat:
    """Inline nested graphs; an edge to (from) a subgraph goes to its Input (from its Output)."""
    nir = _import_nir()
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []

    def resolve(prefix: str, g: Any, name: str, side: str) -> str:
        # "sub" or "sub.node" (NIR writes both); a bare subgraph name means its only port.
        if name in g.nodes:
            node = g.nodes[name]
            if isinstance(node, nir.NIRGraph):
                ports = [k for k, v in node.nodes.items()
                         if isinstance(v, nir.Input if side == "dst" else nir.Output)]
                if len(ports) != 1:
                    raise GraphError(f"edge to subgraph {prefix + name!r}: it has "
                                     f"{len(ports)} {'Input' if side == 'dst' else 'Output'} "
                                     "nodes; name one as SUBGRAPH.NODE")
                return resolve(prefix + name + ".", node, ports[0], side)
            return prefix + name
        head, dot, tail = name.partition(".")
        if dot and head in g.nodes and isinstance(g.nodes[head], nir.NIRGraph):
            return resolve(prefix + head + ".", g.nodes[head], tail, side)
        raise GraphError(f"edge names {prefix + name!r}, which is no node of the graph")

    def walk(prefix: str, g: Any) -> None:
        for name, node in g.nodes.items():
            if isinstance(node, nir.NIRGraph):
                walk(prefix + name + ".", node)
            else:
                nodes[prefix + name] = node
        for src, dst in g.edges:
            edges.append((resolve(prefix, g, src, "src"), resolve(prefix, g, dst, "dst")))

    walk("", graph)
    # By name: a .nir file (HDF5) does not keep the order the graph was written in.
    top_in = sorted(k for k, v in graph.nodes.items() if isinstance(v, nir.Input))
    top_out = sorted(k for k, v in graph.nodes.items() if isinstance(v, nir.Output))
    # An inner graph's Input/Output nodes are plain pass-throughs once inlined.
    unique: list[tuple[str, str]] = []
    for e in edges:
        if e not in unique:
            unique.append(e)
    return Flat(nodes, unique, top_in, top_out)


# -- operations ---------------------------------------------------------------------------------


class Op:
    """One node: reads ``src`` (an upstream array, or the sum of several), writes ``out``."""

    __slots__ = ("name", "out", "sources", "src")

    def __init__(self, name: str) -> None:
        self.name = name
        self.out: Array = np.zeros(0, F32)
        self.src: Array = np.zeros(0, F32)
        self.sources: list[Array] = []

    def gather(self) -> None:
        """Sum the incoming arrays into ``src`` when there are several."""
        srcs = self.sources
        if len(srcs) > 1:
            acc = self.src
            np.copyto(acc, srcs[0].reshape(acc.shape))
            for s in srcs[1:]:
                np.add(acc, s.reshape(acc.shape), out=acc)

    def run(self) -> None:
        """Advance one step."""

    def bind(self) -> None:
        """Called once ``src`` is final: take views of it."""

    def reset(self) -> None:
        """Back to the initial state (all zeros)."""
        self.out[...] = 0


def _param(value: Any, shape: Shape, what: str) -> Array:
    arr = np.asarray(value, dtype=np.float64)
    try:
        return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=F32)
    except ValueError:
        raise GraphError(f"{what} has shape {arr.shape}, the layer has {shape}") from None


class Affine(Op):
    """y = W x (+ b)."""

    __slots__ = ("bias", "flat", "weight")

    def __init__(self, name: str, weight: Any, bias: Any | None, in_shape: Shape) -> None:
        super().__init__(name)
        self.weight = np.ascontiguousarray(np.asarray(weight), dtype=F32)
        if self.weight.ndim != 2 or self.weight.shape[1] != int(np.prod(in_shape)):
            raise GraphError(f"node {name!r}: weight {self.weight.shape} does not take an input "
                             f"of shape {in_shape}")
        self.bias = None if bias is None else _param(bias, (self.weight.shape[0],),
                                                     f"node {name!r}: bias")
        self.out = np.zeros(self.weight.shape[0], F32)
        self.reset()

    def reset(self) -> None:
        """Output W*0 + b: what a back edge (a recurrent weight) reads in the first step."""
        self.out[...] = 0 if self.bias is None else self.bias

    def run(self) -> None:
        """Matrix-vector product into ``out``."""
        np.matmul(self.weight, self.flat, out=self.out)
        if self.bias is not None:
            np.add(self.out, self.bias, out=self.out)

    def bind(self) -> None:
        """A flat view of the input."""
        self.flat = self.src.reshape(-1)


class Scale(Op):
    """y = s * x."""

    __slots__ = ("scale",)

    def __init__(self, name: str, scale: Any, shape: Shape) -> None:
        super().__init__(name)
        self.scale = _param(scale, shape, f"node {name!r}: scale")
        self.out = np.zeros(shape, F32)

    def run(self) -> None:
        """Elementwise product."""
        np.multiply(self.src, self.scale, out=self.out)


class Threshold(Op):
    """y = 1 where x > threshold, else 0."""

    __slots__ = ("fired", "threshold")

    def __init__(self, name: str, threshold: Any, shape: Shape) -> None:
        super().__init__(name)
        self.threshold = _param(threshold, shape, f"node {name!r}: threshold")
        self.out = np.zeros(shape, F32)
        self.fired = np.zeros(shape, bool)

    def run(self) -> None:
        """Heaviside of x - threshold (strict, as snnTorch's ``fire``)."""
        np.greater(self.src, self.threshold, out=self.fired)
        np.copyto(self.out, self.fired)


class Neuron(Op):
    """Leaky / integrating membranes, optionally with a synaptic current and a threshold.

    Per step (docs/nir.md): ``i = a_syn*i + g_syn*x`` (Cuba only), then
    ``v = beta*v + g*u + c`` with u = i (Cuba) or x, then (spiking) ``z = v > v_thr`` and
    ``v = v_reset`` where z. The output is z for spiking nodes and v otherwise.
    """

    __slots__ = ("a_syn", "beta", "c", "fired", "g", "g_syn", "keep", "spiking", "syn", "tmp",
                 "v", "v_reset", "v_thr")

    def __init__(self, name: str, shape: Shape, beta: Array | None, g: Array, c: Array | None,
                 syn: tuple[Array, Array] | None, thr: tuple[Array, Array] | None) -> None:
        super().__init__(name)
        self.v = np.zeros(shape, F32)
        self.tmp = np.zeros(shape, F32)
        self.beta, self.g, self.c = beta, g, c
        self.syn = np.zeros(shape, F32) if syn else None
        self.a_syn: Array = syn[0] if syn else np.zeros(0, F32)
        self.g_syn: Array | None = syn[1] if syn else None
        self.spiking = thr is not None
        self.v_thr: Array = thr[0] if thr else np.zeros(0, F32)
        self.v_reset: Array | None = thr[1] if thr else None
        if self.v_reset is not None and not self.v_reset.any():
            self.v_reset = None  # reset to 0: a multiply by "not fired", 20x faster than copyto
        self.fired = np.zeros(shape, bool)
        self.keep = np.zeros(shape, F32)
        self.out = np.zeros(shape, F32) if self.spiking else self.v

    def run(self) -> None:
        """One Euler step of the membrane (and synapse), then threshold and reset."""
        v, tmp = self.v, self.tmp
        u = self.src
        if self.syn is not None:
            syn = self.syn
            np.multiply(syn, self.a_syn, out=syn)
            if self.g_syn is None:
                np.add(syn, u, out=syn)
            else:
                np.multiply(u, self.g_syn, out=tmp)
                np.add(syn, tmp, out=syn)
            u = syn
        if self.beta is not None:
            np.multiply(v, self.beta, out=v)
        if self.g is None:
            np.add(v, u, out=v)
        else:
            np.multiply(u, self.g, out=tmp)
            np.add(v, tmp, out=v)
        if self.c is not None:
            np.add(v, self.c, out=v)
        if self.spiking:
            fired, out = self.fired, self.out
            np.greater(v, self.v_thr, out=fired)
            np.copyto(out, fired)
            if self.v_reset is None:  # v *= 1 - z, all float32: a bool operand would be cast
                np.subtract(1, out, out=self.keep)
                np.multiply(v, self.keep, out=v)
            else:
                np.copyto(v, self.v_reset, where=fired)

    def reset(self) -> None:
        """Membrane, current and output back to zero."""
        self.v[...] = 0
        self.out[...] = 0
        if self.syn is not None:
            self.syn[...] = 0


def _unit(a: Array) -> Array | None:
    """None when every element is exactly 1 (the multiply can be skipped, bit for bit)."""
    return None if bool(np.all(a == 1)) else a


def _zero(a: Array) -> Array | None:
    return None if not bool(np.any(a)) else a


class Delay(Op):
    """y(t) = x(t - d), d rounded to whole steps per element (0 steps: the same step)."""

    __slots__ = ("pos", "ring", "rows", "steps")

    def __init__(self, name: str, delay: Any, shape: Shape, dt: float) -> None:
        super().__init__(name)
        d = np.broadcast_to(np.asarray(delay, np.float64), shape).reshape(-1)
        if (d < 0).any():
            raise GraphError(f"node {name!r}: negative delay")
        steps = np.rint(d / dt).astype(np.int64)
        n, depth = d.size, int(steps.max(initial=0)) + 1
        self.steps = steps
        self.ring = np.zeros(depth * n, F32)
        cols = np.arange(n, dtype=np.int64)
        # rows[p]: where each element's delayed value sits when the newest sample is at row p.
        self.rows = np.stack([((p - steps) % depth) * n + cols for p in range(depth)])
        self.pos = 0
        self.out = np.zeros(shape, F32)

    def run(self) -> None:
        """Write this step's input into the ring, read each element's delayed sample."""
        n = self.out.size
        depth = self.rows.shape[0]
        p = self.pos
        self.ring[p * n:(p + 1) * n] = self.src.reshape(-1)
        np.take(self.ring, self.rows[p], out=self.out.reshape(-1), mode="clip")
        self.pos = (p + 1) % depth

    def reset(self) -> None:
        """Empty the line."""
        self.ring[...] = 0
        self.out[...] = 0
        self.pos = 0


def _pair(v: Any, what: str) -> tuple[int, int]:
    arr = np.asarray(v).reshape(-1)
    if arr.size == 1:
        return int(arr[0]), int(arr[0])
    if arr.size == 2:
        return int(arr[0]), int(arr[1])
    raise GraphError(f"{what} must be one or two integers, got {v!r}")


class _Window(Op):
    """Ops over 2-d windows: the padded input and an im2col gather, built once."""

    __slots__ = ("cols", "index", "interior", "padded")

    def _windows(self, in_shape: Shape, k: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int, int, int], dil: tuple[int, int]) -> tuple[int, int]:
        if len(in_shape) != 3:
            raise GraphError(f"node {self.name!r}: expects a (channel, height, width) input, "
                             f"got shape {in_shape}")
        c, h, w = in_shape
        top, bottom, left, right = pad
        hp, wp = h + top + bottom, w + left + right
        ho = (hp - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
        wo = (wp - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
        if ho <= 0 or wo <= 0:
            raise GraphError(f"node {self.name!r}: kernel {k} does not fit input {in_shape}")
        self.padded = np.zeros((c, hp, wp), F32)
        self.interior = self.padded[:, top:top + h, left:left + w]
        ci = np.arange(c)[:, None, None, None, None]
        ky = np.arange(k[0])[None, :, None, None, None] * dil[0]
        kx = np.arange(k[1])[None, None, :, None, None] * dil[1]
        oy = np.arange(ho)[None, None, None, :, None] * stride[0]
        ox = np.arange(wo)[None, None, None, None, :] * stride[1]
        # index[c, ky, kx, oy, ox] into the flat padded input: rows (c, ky, kx), columns (oy, ox)
        # kept flat: np.take with a 1-d index is about a third faster than with a 2-d one
        self.index = ((ci * hp + oy + ky) * wp + ox + kx).reshape(-1).astype(np.intp)
        self.cols = np.zeros((c * k[0] * k[1], ho * wo), F32)
        return ho, wo

    def _im2col(self) -> None:
        np.copyto(self.interior, self.src.reshape(self.interior.shape))
        # mode="clip": with the default "raise", take buffers out (a full copy per call)
        np.take(self.padded.reshape(-1), self.index, out=self.cols.reshape(-1), mode="clip")


class Conv2d(_Window):
    """2-d cross-correlation as torch.nn.Conv2d (groups, stride, padding, dilation, bias)."""

    __slots__ = ("bias", "groups", "mats", "out2", "weight")

    def __init__(self, name: str, node: Any, in_shape: Shape) -> None:
        super().__init__(name)
        weight = np.asarray(node.weight, dtype=F32)
        if weight.ndim != 4:
            raise GraphError(f"node {name!r}: Conv2d weight must be 4-d, got {weight.shape}")
        cout, cin_g, kh, kw = weight.shape
        groups = int(node.groups)
        if len(in_shape) != 3 or in_shape[0] != cin_g * groups:
            raise GraphError(f"node {name!r}: weight {weight.shape} with {groups} group(s) does "
                             f"not take an input of shape {in_shape}")
        stride = _pair(node.stride, f"node {name!r}: stride")
        dil = _pair(node.dilation, f"node {name!r}: dilation")
        if isinstance(node.padding, str):
            if node.padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # "same", as torch: the odd extra goes at the bottom / right
                th, tw = dil[0] * (kh - 1), dil[1] * (kw - 1)
                pad = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            py, px = _pair(node.padding, f"node {name!r}: padding")
            pad = (py, py, px, px)
        ho, wo = self._windows(in_shape, (kh, kw), stride, pad, dil)
        self.groups = groups
        # Per group: (cout/g, cin/g*kh*kw) @ (cin/g*kh*kw, ho*wo); rows of cols are (c, ky, kx).
        self.weight = np.ascontiguousarray(weight.reshape(groups, cout // groups, -1))
        self.out = np.zeros((cout, ho, wo), F32)
        self.out2 = self.out.reshape(groups, cout // groups, ho * wo)
        # Spread to the whole output: a broadcast (cout, 1) operand makes numpy copy.
        self.bias = None if node.bias is None or not np.any(node.bias) else np.ascontiguousarray(
            np.broadcast_to(_param(node.bias, (cout,), f"node {name!r}: bias")[:, None],
                            (cout, ho * wo)))
        self.reset()
        rows = self.cols.shape[0] // groups
        # Per group, 2-d views: a 3-d (batched) matmul allocates.
        self.mats = [(self.weight[i], self.cols[i * rows:(i + 1) * rows], self.out2[i])
                     for i in range(groups)]

    def reset(self) -> None:
        """Output conv(0) + b, as Affine's: what a back edge reads in the first step."""
        self.out[...] = 0
        if self.bias is not None:
            self.out.reshape(self.bias.shape)[...] = self.bias

    def run(self) -> None:
        """im2col, one matmul per group, bias."""
        self._im2col()
        for w, cols, out in self.mats:
            np.matmul(w, cols, out=out)
        if self.bias is not None:
            out2 = self.out.reshape(self.bias.shape)
            np.add(out2, self.bias, out=out2)


class Pool2d(_Window):
    """SumPool2d, or AvgPool2d (the sum divided by the kernel area, padding counted, as torch)."""

    __slots__ = ("area", "flat", "mean")

    def __init__(self, name: str, node: Any, in_shape: Shape, mean: bool) -> None:
        super().__init__(name)
        k = _pair(node.kernel_size, f"node {name!r}: kernel_size")
        stride = _pair(node.stride, f"node {name!r}: stride")
        py, px = _pair(node.padding, f"node {name!r}: padding")
        ho, wo = self._windows(in_shape, k, stride, (py, py, px, px), (1, 1))
        c = in_shape[0]
        self.mean = mean
        self.area = F32(k[0] * k[1])
        self.out = np.zeros((c, ho, wo), F32)
        # im2col then a sum over the window axis (contiguous rows): measured faster than
        # reductions of reshaped views and, unlike strided 3-d views, numpy does not buffer.
        self.flat = self.out.reshape(c, 1, ho * wo)

    def run(self) -> None:
        """Sum each window (then divide for the average)."""
        out = self.out
        self._im2col()
        c = out.shape[0]
        np.sum(self.cols.reshape(c, -1, self.cols.shape[1]), axis=1, keepdims=True,
               out=self.flat)
        if self.mean:
            np.divide(out, self.area, out=out)


# -- compiling a graph --------------------------------------------------------------------------


@dataclass
class Program:
    """A compiled graph: ``inputs`` (flat, written by the caller), ops, ``outputs`` (read)."""

    ops: list[Op]
    input_names: list[str]
    input_shapes: list[Shape]
    output_names: list[str]
    output_shapes: list[Shape]
    input: Array             # the merged input population, flat, float32 0/1
    output_views: list[Array]
    dt: float
    macs: int                # multiply-adds per step (weights), for the set-up summary
    node_types: dict[str, str]

    @property
    def input_size(self) -> int:
        """Neurons of the merged input population (all Input nodes, by name)."""
        return int(self.input.size)

    @property
    def output_size(self) -> int:
        """Neurons of the output population (all Output nodes, by name)."""
        return sum(int(np.prod(s)) for s in self.output_shapes)

    def __post_init__(self) -> None:
        # The bound methods one step calls, gathers only where several edges meet.
        self.calls: list[Callable[[], None]] = []
        for op in self.ops:
            if len(op.sources) > 1:
                self.calls.append(op.gather)
            if type(op) is not Op:
                self.calls.append(op.run)

    def step(self) -> None:
        """Advance every node one step, in order, in place."""
        for call in self.calls:
            call()

    def reset(self) -> None:
        """Every state back to zero."""
        self.input[...] = 0
        for op in self.ops:
            op.reset()


def _shape_of(t: Any) -> Shape | None:
    if t is None:
        return None
    arr = np.asarray(t).reshape(-1)
    return tuple(int(x) for x in arr) if arr.size else None


def _first_type(types: Mapping[str, Any] | None) -> Shape | None:
    if not types:
        return None
    return _shape_of(next(iter(types.values())))


def node_type(node: Any) -> str:
    """The NIR class name of a node."""
    return type(node).__name__


def _order(names: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Execution order: topological, with a cycle broken at its first reachable node."""
    preds: dict[str, list[str]] = {n: [] for n in names}
    for s, d in edges:
        preds[d].append(s)
    done: set[str] = set()
    order: list[str] = []
    pending = list(names)
    while len(order) < len(names):
        ready = [n for n in pending if n not in done and all(p in done for p in preds[n])]
        if not ready:  # a cycle: run the first node that has some input computed already
            ready = [n for n in pending if n not in done and any(p in done for p in preds[n])]
            if not ready:
                ready = [n for n in pending if n not in done][:1]
            ready = ready[:1]
        for n in ready:
            done.add(n)
            order.append(n)
    return order


def compile_graph(graph: Any, dt: float) -> Program:
    """Build the Program for ``graph`` stepped at ``dt`` seconds; GraphError when it cannot."""
    nir = _import_nir()
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.NIRGraph.from_list(graph)
    flat = flatten_graph(graph)
    builders: dict[type, Callable[[str, Any, Shape], Op]] = _builders(nir, dt)
    for name, node in flat.nodes.items():
        if type(node) not in builders:
            raise GraphError(f"node {name!r} is a {node_type(node)}, which the nir processor "
                             f"does not support; supported: {', '.join(SUPPORTED)}")
    if not flat.inputs:
        raise GraphError("the graph has no Input node")
    if not flat.outputs:
        raise GraphError("the graph has no Output node")
    preds: dict[str, list[str]] = {n: [] for n in flat.nodes}
    for s, d in flat.edges:
        preds[d].append(s)
    order = _order(list(flat.nodes), flat.edges)

    in_shapes: list[Shape] = []
    for name in flat.inputs:
        shape = _first_type(flat.nodes[name].input_type)
        if shape is None:
            raise GraphError(f"Input node {name!r} has no shape")
        in_shapes.append(shape)
    total = sum(int(np.prod(s)) for s in in_shapes)
    merged = np.zeros(total, F32)

    ops: dict[str, Op] = {}
    offset = 0
    top_inputs = set(flat.inputs)
    for name, shape in zip(flat.inputs, in_shapes, strict=True):
        op = Op(name)
        size = int(np.prod(shape))
        op.out = merged[offset:offset + size].reshape(shape)
        offset += size
        ops[name] = op

    macs = 0
    for name in order:
        if name in top_inputs:
            continue
        node = flat.nodes[name]
        known = [ops[p].out for p in preds[name] if p in ops]
        if not known:
            raise GraphError(f"node {name!r} ({node_type(node)}) is not reachable from an Input")
        shape = tuple(known[0].shape)
        for arr in known[1:]:
            if arr.size != known[0].size:
                raise GraphError(f"node {name!r} sums inputs of shapes {shape} and {arr.shape}")
        op = builders[type(node)](name, node, shape)
        ops[name] = op
        if isinstance(op, Affine):
            macs += op.weight.size
        elif isinstance(op, Conv2d):
            macs += op.weight.size * op.out.shape[1] * op.out.shape[2]
    # Wire sources now that every op has its arrays (back edges read last step's values).
    for name in order:
        op = ops[name]
        if name in top_inputs:
            continue
        srcs = [ops[p].out for p in preds[name]]
        op.sources = srcs
        in_shape = _input_shape(op, srcs[0])
        if len(srcs) > 1:
            op.src = np.zeros(in_shape, F32)
        else:
            op.src = srcs[0].reshape(in_shape)
        if type(op) is Op:  # Output, Flatten, a nested Input: pass-through views
            op.out = op.src if isinstance(flat.nodes[name], nir.Output | nir.Input) else \
                op.src.reshape(op.out.shape)
    # Pass-throughs of pass-throughs: re-point to the final arrays.
    for name in order:
        op = ops[name]
        if name not in top_inputs and op.sources:
            op.sources = [ops[p].out for p in preds[name]]
            if len(op.sources) == 1:
                op.src = op.sources[0].reshape(op.src.shape)
                if type(op) is Op:
                    op.out = op.src.reshape(op.out.shape)
        op.bind()
    running = [ops[n] for n in order if n not in top_inputs
               and (type(ops[n]) is not Op or len(ops[n].sources) > 1)]
    out_views = [ops[n].out for n in flat.outputs]
    return Program(
        ops=running, input_names=list(flat.inputs), input_shapes=in_shapes,
        output_names=list(flat.outputs), output_shapes=[tuple(v.shape) for v in out_views],
        input=merged, output_views=out_views, dt=dt, macs=int(macs),
        node_types={n: node_type(v) for n, v in flat.nodes.items()},
    )


def _input_shape(op: Op, first: Array) -> Shape:
    if isinstance(op, _Window):
        return tuple(op.interior.shape)
    return tuple(first.shape)


def _builders(nir: Any, dt: float) -> dict[type, Callable[[str, Any, Shape], Op]]:
    def passthrough(name: str, _node: Any, shape: Shape) -> Op:
        op = Op(name)
        op.out = np.zeros(shape, F32)
        return op

    def flatten(name: str, node: Any, shape: Shape) -> Op:
        op = Op(name)
        start, end = int(node.start_dim), int(node.end_dim)
        nd = len(shape)
        s = start + nd if start < 0 else start
        e = end + nd if end < 0 else end
        out = (*shape[:s], int(np.prod(shape[s:e + 1])), *shape[e + 1:]) if nd else shape
        op.out = np.zeros(out, F32)
        return op

    def affine(name: str, node: Any, shape: Shape) -> Op:
        return Affine(name, node.weight, node.bias, shape)

    def linear(name: str, node: Any, shape: Shape) -> Op:
        return Affine(name, node.weight, None, shape)

    def leaky(name: str, tau: Any, r: Any, v_leak: Any, shape: Shape
              ) -> tuple[Array | None, Array | None, Array | None]:
        tau64 = np.broadcast_to(np.asarray(tau, np.float64), shape)
        if (tau64 <= 0).any():
            raise GraphError(f"node {name!r}: tau must be positive")
        k = dt / tau64
        if (k > 1).any():
            raise GraphError(f"node {name!r}: tau {float(tau64.min()):g} s is shorter than the "
                             f"step dt {dt:g} s; forward Euler would diverge")
        beta = _param(1.0 - k, shape, "beta")
        g = _param(np.asarray(r, np.float64) * k, shape, f"node {name!r}: r")
        c = _param(k * np.asarray(v_leak, np.float64), shape, f"node {name!r}: v_leak")
        return beta, _unit(g), _zero(c)

    def thr(name: str, node: Any, shape: Shape) -> tuple[Array, Array]:
        v_reset = getattr(node, "v_reset", None)
        return (_param(node.v_threshold, shape, f"node {name!r}: v_threshold"),
                _param(0.0 if v_reset is None else v_reset, shape, f"node {name!r}: v_reset"))

    def li(name: str, node: Any, shape: Shape) -> Op:
        beta, g, c = leaky(name, node.tau, node.r, node.v_leak, shape)
        return Neuron(name, shape, beta, g, c, None, None)  # type: ignore[arg-type]

    def lif(name: str, node: Any, shape: Shape) -> Op:
        beta, g, c = leaky(name, node.tau, node.r, node.v_leak, shape)
        return Neuron(name, shape, beta, g, c, None, thr(name, node, shape))  # type: ignore[arg-type]

    def cuba(name: str, node: Any, shape: Shape, spiking: bool) -> Op:
        beta, g, c = leaky(name, node.tau_mem, node.r, node.v_leak, shape)
        a_syn, g_syn, _ = leaky(name, node.tau_syn, node.w_in, 0.0, shape)
        assert a_syn is not None
        return Neuron(name, shape, beta, g, c, (a_syn, g_syn),  # type: ignore[arg-type]
                      thr(name, node, shape) if spiking else None)

    def integrate(name: str, node: Any, shape: Shape) -> tuple[Array | None]:
        return (_unit(_param(np.asarray(node.r, np.float64) * dt, shape, f"node {name!r}: r")),)

    def if_(name: str, node: Any, shape: Shape) -> Op:
        (g,) = integrate(name, node, shape)
        return Neuron(name, shape, None, g, None, None, thr(name, node, shape))  # type: ignore[arg-type]

    def integrator(name: str, node: Any, shape: Shape) -> Op:
        (g,) = integrate(name, node, shape)
        return Neuron(name, shape, None, g, None, None, None)  # type: ignore[arg-type]

    return {
        nir.Input: passthrough,
        nir.Output: passthrough,
        nir.Flatten: flatten,
        nir.Affine: affine,
        nir.Linear: linear,
        nir.Scale: lambda n, node, s: Scale(n, node.scale, s),
        nir.Threshold: lambda n, node, s: Threshold(n, node.threshold, s),
        nir.LI: li,
        nir.LIF: lif,
        nir.CubaLI: lambda n, node, s: cuba(n, node, s, False),
        nir.CubaLIF: lambda n, node, s: cuba(n, node, s, True),
        nir.IF: if_,
        nir.I: integrator,
        nir.Delay: lambda n, node, s: Delay(n, node.delay, s, dt),
        nir.Conv2d: lambda n, node, s: Conv2d(n, node, s),
        nir.SumPool2d: lambda n, node, s: Pool2d(n, node, s, mean=False),
        nir.AvgPool2d: lambda n, node, s: Pool2d(n, node, s, mean=True),
    }
