"""``spikebridge bench nir``: the nir processor's step cost against its bare executor and snnTorch.

Parts (``--parts``, all by default):

- ``cost``: per-step cost of the example networks (the 64x48 conv SNN that
  examples/nir_export.py exports, and a dense 3-layer LIF network) inside the nir processor
  (ids in, ids out) against the same compiled graph stepped bare (its input array written
  directly), and against snnTorch on the CPU: its NIR import (nirtorch's executor) and the
  snnTorch module the graph was exported from, one forward step at batch 1 under no_grad.
  Targets: bridged <= 1.05x bare; faster per step than snnTorch.
- ``capacity``: the largest conv SNN (channels per conv layer of the 64x48 example) that
  holds 1.0x real time at dt = 1 ms: bare (T simulated seconds computed in <= T s) and inside
  the bridge (stepped engine, catch-up policy: no step skipped, bounded lag at the end).

Needs torch and snnTorch (the nir-torch extra) for the example networks and the snnTorch
figures. A benchmark, not a test: it reads the real clocks and never asserts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import logging
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bridge.bench.stepped import (
    EXAMPLES,
    HOLD_LAG_US,
    default_cpu,
    free_port,
    realtime,
    run_engine,
)
from bridge.tools import ArgumentParser, add_json, write_json

PARTS = ("cost", "capacity")
MODEL_DT_MS = 0.1  # the example's graph is snnTorch's: tau written for dt = 0.1 ms


def _export_module() -> Any:
    spec = importlib.util.spec_from_file_location("nir_export", EXAMPLES / "nir_export.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("examples/nir_export.py not found")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def conv_example(path: Path, channels: int) -> tuple[Any, tuple[int, ...]]:
    """Export the 64x48 conv SNN with ``channels``; (the snnTorch module, input shape)."""
    ex = _export_module()
    with contextlib.redirect_stdout(io.StringIO()):
        ex.export(str(path), channels=channels)
    return ex.build(channels), (ex.POLARITIES, ex.HEIGHT, ex.WIDTH)


def dense_example(path: Path) -> tuple[Any, tuple[int, ...]]:
    """A 1024-512-256-10 LIF network (random weights) exported by snnTorch."""
    import nir
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(2)
    sizes = (1024, 512, 256, 10)
    layers: list[Any] = []
    for a, b in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(a, b), snn.Leaky(beta=torch.full((b,), 0.9),
                                                    threshold=torch.ones(b), init_hidden=True,
                                                    reset_mechanism="zero")]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(4.0)
    with contextlib.redirect_stdout(io.StringIO()):
        graph = export_to_nir(net, torch.zeros(1, sizes[0]), ignore_dims=[0])
    nir.write(str(path), graph)
    return net, (sizes[0],)


def input_pattern(steps: int, shape: tuple[int, ...], p: float, seed: int = 5
                  ) -> list[npt.NDArray[np.uint32]]:
    """Per step, the ids of the input neurons that fire (probability ``p`` each)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return [np.flatnonzero(rng.random(n) < p).astype(np.uint32) for _ in range(steps)]


class Pair:
    """The same graph compiled twice: bare (a Program) and inside the nir processor."""

    def __init__(self, path: Path, inputs: int) -> None:
        import nir

        from bridge.processors.nir import NirProcessor
        from bridge.processors.nir_exec import compile_graph

        self.proc = NirProcessor.from_spec(str(path))  # also sets BLAS to one thread
        self.proc.setup(inputs=inputs, dt_ns=1_000_000, params={"model_dt_ms": MODEL_DT_MS})
        self.prog = compile_graph(nir.read(str(path)), MODEL_DT_MS * 1e-3)

    def bare(self, pattern: list[npt.NDArray[np.uint32]]) -> float:
        """Seconds per step of the compiled graph, its input array written directly."""
        inp, step = self.prog.input, self.prog.step
        prev = pattern[0]
        t0 = time.perf_counter()
        for ids in pattern:
            inp[prev] = 0.0
            inp[ids] = 1.0
            prev = ids
            step()
        return (time.perf_counter() - t0) / len(pattern)

    def bridged(self, pattern: list[npt.NDArray[np.uint32]]) -> float:
        """Seconds per step of the nir processor: ids in, output ids out."""
        step = self.proc.step
        t0 = time.perf_counter()
        for ids in pattern:
            step(ids, 0)
        return (time.perf_counter() - t0) / len(pattern)

    def close(self) -> None:
        """Close the processor (BLAS gets its threads back)."""
        self.proc.post_run()
        self.proc.close()


def time_bare(path: Path, pattern: list[npt.NDArray[np.uint32]]) -> float:
    """Seconds per step of the compiled graph alone (capacity probes), BLAS single-threaded."""
    import nir

    from bridge.processors.nir_exec import compile_graph, single_threaded_blas

    prog = compile_graph(nir.read(str(path)), MODEL_DT_MS * 1e-3)
    blas = single_threaded_blas()
    try:
        inp, step = prog.input, prog.step
        prev = pattern[0]
        t0 = time.perf_counter()
        for ids in pattern:
            inp[prev] = 0.0
            inp[ids] = 1.0
            prev = ids
            step()
        return (time.perf_counter() - t0) / len(pattern)
    finally:
        blas.restore_original_limits()


def time_torch(forward: Callable[[Any], Any], pattern: list[npt.NDArray[np.uint32]],
               shape: tuple[int, ...]) -> float:
    """Seconds per step of a torch forward at batch 1 (dense input tensor, no_grad)."""
    import torch

    x = torch.zeros((1, int(np.prod(shape))))
    view = x.view(1, *shape)
    flat = x[0]
    prev = torch.from_numpy(pattern[0].astype(np.int64))
    with torch.no_grad():
        t0 = time.perf_counter()
        for ids in pattern:
            idx = torch.from_numpy(ids.astype(np.int64))
            flat[prev] = 0.0
            flat[idx] = 1.0
            prev = idx
            forward(view)
        return (time.perf_counter() - t0) / len(pattern)


def snntorch_forwards(path: Path, module: Any) -> dict[str, Callable[[Any], Any]]:
    """snnTorch's NIR import (state carried) and the original module (init_hidden)."""
    import nir
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    with contextlib.redirect_stdout(io.StringIO()):
        imported = import_from_nir(nir.read(str(path)))
    state: list[Any] = [None]

    def via_import(x: Any) -> Any:
        out, state[0] = imported(x, state[0])
        return out

    snntorch.utils.reset(module)
    return {"snnTorch import_from_nir": via_import, "snnTorch module": module}


def cost(workdir: Path, steps: int, repeats: int, rounds: int, priority: int, cpu: int | None,
         channels: int) -> dict[str, Any]:
    """Per-step µs of each example: bare and bridged (medians over ``rounds`` alternating
    blocks, and the median of the per-round ratios), snnTorch (median of ``repeats``)."""
    import torch

    results: dict[str, Any] = {}
    examples = {
        f"conv SNN 2x48x64, {channels} channels": lambda p: conv_example(p, channels),
        "dense LIF 1024-512-256-10": dense_example,
    }
    for name, make in examples.items():
        path = workdir / "example.nir"
        module, shape = make(path)
        inputs = int(np.prod(shape))
        pattern = input_pattern(steps, shape, 0.01)
        torch_steps = pattern[: max(50, steps // 10)]  # snnTorch is slow: fewer steps
        fig: dict[str, Any] = {"threads": torch.get_num_threads()}
        pair = Pair(path, inputs)
        block = max(20, steps // rounds)
        bare, bridged, ratios = [], [], []
        try:
            pair.bare(pattern[:20])
            pair.bridged(pattern[:20])
            with realtime(priority, cpu):
                # Short alternating blocks, the order swapped each round: the load of a shared
                # machine drifts over seconds and hits both alike; the median ratio is the figure.
                for r in range(rounds):
                    chunk = pattern[(r * block) % len(pattern):][:block] or pattern[:block]
                    first, second = (pair.bare, pair.bridged) if r % 2 else (pair.bridged,
                                                                              pair.bare)
                    a_s, b_s = first(chunk), second(chunk)
                    t_bare, t_br = (a_s, b_s) if r % 2 else (b_s, a_s)
                    bare.append(t_bare)
                    bridged.append(t_br)
                    ratios.append(t_br / t_bare)
        finally:
            pair.close()
        fig["bare_us"] = float(np.median(bare)) * 1e6
        fig["bridged_us"] = float(np.median(bridged)) * 1e6
        fig["ratio_median"] = float(np.median(ratios))
        fig["ratio_iqr"] = [float(q) for q in np.percentile(ratios, [25, 75])]
        fig["rounds"], fig["block"] = rounds, block
        with realtime(priority, cpu):
            for label, fwd in snntorch_forwards(path, module).items():
                time_torch(fwd, torch_steps[:5], shape)
                fig[label] = float(np.median([time_torch(fwd, torch_steps, shape)
                                              for _ in range(repeats)])) * 1e6
        results[name] = fig
    return results


def bare_holds(path: Path, seconds: float) -> tuple[bool, str]:
    """Whether the bare executor computes ``seconds`` of 1 ms steps in <= ``seconds``."""
    steps = int(seconds * 1000)
    pattern = input_pattern(min(steps, 500), (2, 48, 64), 0.01)
    per_step = time_bare(path, pattern * (steps // len(pattern)))
    factor = 1e-3 / per_step
    return factor >= 1.0, f"simulated/wall {factor:.3f} ({per_step * 1e6:.0f} µs/step)"


def bridge_holds(path: Path, seconds: float, priority: int, cpu: int | None
                 ) -> tuple[bool, str]:
    """Whether the stepped engine keeps the graph on a 1 ms schedule for ``seconds``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        doc = {
            "bridge": {"processor": f"nir:{path}", "dt_ms": 1.0, "policy": "catch-up"},
            "input": [f"udp://127.0.0.1:{free_port()}?format=native&neurons={2 * 48 * 64}"],
            "output": [f"udp://127.0.0.1:{sink.getsockname()[1]}?format=native&neurons=2"],
            "processor": {"params": {"model_dt_ms": MODEL_DT_MS}},
        }
        run = run_engine(doc, seconds, priority, cpu)
    holds = run.skipped == 0 and run.final_lateness_us < HOLD_LAG_US
    return holds, (f"lag at the end {run.final_lateness_us:8.1f} µs, f {run.realtime_factor:.4f}, "
                   f"skipped {run.skipped}")


def largest_channels(holds: Callable[[int], bool], start: int, lo: int = 0, hi: int = 0,
                     limit: int = 512) -> int:
    """The largest channel count for which ``holds``: double from ``start`` (unless a
    ``lo``..``hi`` bracket is given), then bisect to one channel; 0 if none holds."""
    if not hi:
        n = start
        while n <= limit and holds(n):
            lo, n = n, n * 2
        hi = n
        if not lo:  # even ``start`` falls behind: bisect below it
            hi, lo = start, 1
            if not holds(1):
                return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if holds(mid):
            lo = mid
        else:
            hi = mid
    return lo


def main(argv: Sequence[str]) -> int:
    """Run the chosen parts and print figures and ratios; exit 0 (1 if a part failed)."""
    parser = ArgumentParser(prog="spikebridge bench nir", description=__doc__.split("\n")[0],
                            epilog="example: spikebridge bench nir --parts cost --json nir.json")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, from {', '.join(PARTS)} (default: all)")
    parser.add_argument("--steps", type=int, default=2000, help="steps per cost run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="snnTorch runs per figure, median")
    parser.add_argument("--rounds", type=int, default=40,
                        help="alternating bare/bridged blocks per network")
    parser.add_argument("--channels", type=int, default=8,
                        help="channels of the conv example for 'cost'")
    parser.add_argument("--capacity-seconds", type=float, default=2.0,
                        help="seconds per capacity probe")
    parser.add_argument("--capacity-start", type=int, default=8, help="first channel count")
    parser.add_argument("--capacity-tries", type=int, default=2,
                        help="attempts per probe; it holds if any attempt does")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    parser.add_argument("--priority", type=int, default=80, help="SCHED_FIFO priority")
    add_json(parser, "the figures")
    args = parser.parse_args(list(argv))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(PARTS)}")
    try:
        import snntorch  # noqa: F401
        import torch
    except ImportError as exc:
        print(f"spikebridge bench nir: needs torch and snnTorch ({exc}); "
              "pip install 'spikebridge[nir-torch]'")
        return 2
    cpu = args.cpu if args.cpu is not None else default_cpu()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    figures: dict[str, Any] = {"cpu": cpu, "priority": args.priority,
                               "torch": torch.__version__, "torch_threads":
                               torch.get_num_threads()}
    print(f"spikebridge bench nir: CPU {cpu}, SCHED_FIFO {args.priority}, parts "
          f"{', '.join(parts)}; torch {torch.__version__} with {torch.get_num_threads()} "
          "threads", flush=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "cost" in parts:
            try:
                res = cost(work, args.steps, args.repeats, args.rounds, args.priority, cpu,
                           args.channels)
            except Exception as exc:
                failed = True
                print(f"\nstep cost: failed: {exc!r}")
            else:
                for name, fig in res.items():
                    bare = fig["bare_us"]
                    lo, hi = fig["ratio_iqr"]
                    print(f"\nstep cost, {name}, 1% input spikes per step, model dt "
                          f"{MODEL_DT_MS} ms ({fig['rounds']} alternating blocks of "
                          f"{fig['block']} steps, medians)")
                    print(f"  bare executor (compiled graph)   {bare:9.1f} µs/step")
                    print(f"  spikebridge nir processor        {fig['bridged_us']:9.1f} µs/step"
                          f"   {fig['ratio_median']:.3f}x bare, IQR {lo:.3f}-{hi:.3f} "
                          "(target <= 1.05x)")
                    for label in ("snnTorch import_from_nir", "snnTorch module"):
                        print(f"  {label:<32} {fig[label]:9.1f} µs/step   "
                              f"{fig[label] / fig['bridged_us']:.1f}x the bridged step")
                figures["cost"] = res
        if "capacity" in parts:
            try:
                secs = args.capacity_seconds
                print(f"\ncapacity: largest conv SNN (channels) holding real time at dt 1 ms, "
                      f"{secs:g} s probes", flush=True)
                made: dict[int, Path] = {}

                def graph(c: int) -> Path:
                    if c not in made:
                        made[c] = work / f"conv{c}.nir"
                        conv_example(made[c], c)
                    return made[c]

                def probe(name: str, holds: Callable[[Path], tuple[bool, str]]
                          ) -> Callable[[int], bool]:
                    def attempt(c: int) -> bool:
                        for _ in range(args.capacity_tries):
                            ok, why = holds(graph(c))
                            print(f"  {name:6} channels={c:4d}  "
                                  f"{'holds' if ok else 'falls behind'}: {why}", flush=True)
                            if ok:
                                return True
                        return False
                    return attempt

                def bare_probe(p: Path) -> tuple[bool, str]:
                    with realtime(args.priority, cpu):
                        return bare_holds(p, secs)

                bare = probe("bare", bare_probe)
                bridged = probe("bridge", lambda p: bridge_holds(p, secs, args.priority, cpu))
                bare_cap = largest_channels(bare, args.capacity_start)
                if bare_cap and bridged(bare_cap):
                    bridge_cap = bare_cap
                elif bare_cap > 1 and bridged(1):
                    bridge_cap = largest_channels(bridged, 0, lo=1, hi=bare_cap)
                else:
                    bridge_cap = 0
                print(f"  bare {bare_cap} channels, bridge {bridge_cap} channels")
                figures["capacity"] = {"bare": bare_cap, "bridge": bridge_cap, "seconds": secs}
            except Exception as exc:
                failed = True
                print(f"  failed: {exc!r}")
    if args.json:
        write_json(args.json, figures, default=str)
    return 1 if failed else 0
