"""``brian2:PATH.py[:BUILDER]``: a user's Brian2 network, advanced one time step per engine step.

The user's module builds the network; this module prepares a Brian2 run once per repetition
(that is where Cython compiles) and then runs exactly one Brian time step per ``step()`` call,
executing the network's scheduled objects as ``Network.run``'s single-clock loop does. It must
never call ``Network.run`` per step (60-300 ms each), read the clock, touch a socket, use a
SpikeMonitor for output, or let Brian write its own log, script or stdout files.

Step semantics (docs/brian2.md): the ids passed to ``step`` fire in the input group in the Brian
time step that this call runs; the output groups' spikes of that same time step are returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, ClassVar

import numpy as np

from bridge.errors import ConfigError
from bridge.frame import IdArray
from bridge.processors.base import Processor
from bridge.processors.usercode import check_call, user_traceback

log = logging.getLogger("spikebridge.brian2")

GRAMMAR = "brian2:PATH/TO/NET.py or brian2:PATH/TO/NET.py:BUILDER"
TARGETS = ("cython", "numpy")
INPUT_NAME = "spikebridge_input"
DIAGNOSTIC = 5  # Brian's level below DEBUG; compile events are logged at it
_EXT_LOGGER = "brian2.codegen.runtime.cython_rt.extension_manager"
_USING = re.compile(r'"(?P<owner>[^"]*)" using Cython module "(?P<module>[^"]+)"')
_EMPTY = np.empty(0, dtype=np.uint32)


# -- configuration ---------------------------------------------------------------------------


def default_cache_dir() -> str:
    """Where compiled code objects go unless ``[brian2] cache_dir`` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "spikebridge", "brian2")


@dataclass(frozen=True)
class Brian2Settings:
    """The ``[brian2]`` section: code generation target and the compiled-code cache."""

    cache_dir: str | None = None  # None: default_cache_dir()
    target: str = "cython"

    def resolved_cache_dir(self) -> str:
        """The cache directory actually used, ``~`` expanded."""
        return os.path.expanduser(self.cache_dir) if self.cache_dir else default_cache_dir()


BRIAN2_KEYS = ("cache_dir", "target")


def parse_config(table: Mapping[str, Any], path: str = "brian2") -> Brian2Settings:
    """Validate a ``[brian2]`` table; ConfigError naming the key on anything wrong."""
    for key in table:
        if key not in BRIAN2_KEYS:
            raise ConfigError(f"unknown key; [{path}] takes {', '.join(BRIAN2_KEYS)}",
                              key=f"{path}.{key}")
    cache_dir = table.get("cache_dir")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
        raise ConfigError(f"expected a directory path, got {cache_dir!r}", key=f"{path}.cache_dir")
    target = table.get("target", "cython")
    if target not in TARGETS:
        raise ConfigError(f"must be one of {', '.join(TARGETS)}, got {target!r}",
                          key=f"{path}.target")
    return Brian2Settings(cache_dir=cache_dir, target=target)


# -- what the user's builder returns and what the post-run hook receives ---------------------


@dataclass(frozen=True)
class Built:
    """A builder's result: output groups in order, every other object to run, extra names.

    ``outputs`` are groups (or their Brian names); the output population is their
    concatenation in this order. ``namespace`` adds names the equations use to those the
    builder's local variables and its module's globals already provide.
    """

    outputs: Sequence[Any]
    objects: Sequence[Any] = ()
    namespace: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RunInfo:
    """What ``post_run(net, run)`` learns about the run that just ended (Brian time in s)."""

    repetition: int   # 0 for the first run
    steps: int        # Brian time steps run in this repetition
    t_start: float
    t_end: float


# -- Brian2 import, quietened -----------------------------------------------------------------

_brian: ModuleType | None = None


def import_brian() -> ModuleType:
    """Import brian2 once, with its log file, script copy and console handler removed.

    Brian's records then propagate to the ``brian2`` logger's parents: into our logging.
    """
    global _brian
    if _brian is not None:
        return _brian
    hook = sys.excepthook
    try:
        import brian2
    except ImportError as exc:
        raise ConfigError(f"brian2 is not installed ({exc}); pip install 'spikebridge[brian2]'",
                          key="processor") from None
    from brian2.utils.logger import BrianLogger, brian_excepthook

    # Brian installs an excepthook that points users at its log files, which we switch off,
    # and a SIGINT handler for its own run loop, which we do not use: the daemon owns signals.
    sys.excepthook = sys.__excepthook__ if hook is brian_excepthook else hook
    brian_int: Any = getattr(brian2, "_int_handler", None)
    previous = getattr(brian_int, "previous_handler", None)
    if previous is not None and signal.getsignal(signal.SIGINT) is brian_int:
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGINT, previous)
    prefs = brian2.prefs
    prefs.logging.file_log = False
    prefs.logging.save_script = False
    prefs.logging.std_redirection = False
    blog = logging.getLogger("brian2")
    for handler in (BrianLogger.file_handler, BrianLogger.console_handler):
        if handler is not None:
            blog.removeHandler(handler)
            logging.getLogger("py.warnings").removeHandler(handler)
    if BrianLogger.file_handler is not None:
        BrianLogger.file_handler.close()
        BrianLogger.file_handler = None
    for attr in ("tmp_log", "tmp_script"):
        leftover = getattr(BrianLogger, attr, None)
        if leftover:
            with contextlib.suppress(OSError):
                os.remove(leftover)
            setattr(BrianLogger, attr, None)
    blog.propagate = True
    blog.setLevel(logging.NOTSET)
    _brian = brian2
    return brian2


class _CompileWatch(logging.Filter):
    """Sees Brian announce each code object's Cython module; counts those not yet on disk."""

    def __init__(self, lib_dir: str, so_ext: str, on_progress: Callable[[str], None],
                 passthrough_level: int) -> None:
        super().__init__()
        self.lib_dir = lib_dir
        self.so_ext = so_ext
        self.on_progress = on_progress
        self.passthrough_level = passthrough_level
        self.compiled: list[str] = []
        self.loaded: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        match = _USING.search(record.getMessage())
        if match is None:
            return record.levelno >= self.passthrough_level
        owner, module = match["owner"], match["module"]
        if os.path.isfile(os.path.join(self.lib_dir, module + self.so_ext)):
            self.loaded.append(owner)
        else:
            self.compiled.append(owner)
            self.on_progress(f"compiling Brian2 code object {len(self.compiled)}: {owner}")
        return False


@contextlib.contextmanager
def _watch_compiles(lib_dir: str, on_progress: Callable[[str], None]) -> Iterator[_CompileWatch]:
    from brian2.codegen.runtime.cython_rt.extension_manager import cython_extension_manager

    logger = logging.getLogger(_EXT_LOGGER)
    watch = _CompileWatch(lib_dir, cython_extension_manager.so_ext, on_progress,
                          logger.getEffectiveLevel())
    old_level = logger.level
    logger.setLevel(DIAGNOSTIC)
    logger.addFilter(watch)
    try:
        yield watch
    finally:
        logger.removeFilter(watch)
        logger.setLevel(old_level)


def _call_keeping_locals(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
    """Call ``fn`` and also return its local variables as they were when it returned.

    Brian resolves the names in equations at run time from the caller's frame; the builder's
    frame is gone by then, so its locals are kept here (a profile hook, set-up only).
    """
    code = getattr(fn, "__code__", None)
    captured: dict[str, Any] = {}
    previous = sys.getprofile()

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event == "return" and frame.f_code is code:
            captured.update(frame.f_locals)

    # The builder's own arguments are not names for equations (``dt`` would shadow Brian's).
    arguments = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if code else ()

    sys.setprofile(profile)
    try:
        result = fn(*args)
    finally:
        sys.setprofile(previous)
    for name in arguments:
        captured.pop(name, None)
    return result, captured


def _flatten(objs: Iterable[Any]) -> Iterator[Any]:
    for obj in objs:
        if isinstance(obj, list | tuple | set | frozenset):
            yield from _flatten(obj)
        elif isinstance(obj, Mapping):
            yield from _flatten(obj.values())
        else:
            yield obj


def load_user_module(path: str) -> ModuleType:
    """Load the network file by path (named in the config only, never from the wire)."""
    from bridge.processors.python import load_module

    if not path.endswith(".py"):
        raise ConfigError(f"expected {GRAMMAR}, got brian2:{path}", key="processor")
    import_brian()  # before the module imports brian2 itself, so Brian starts quiet
    return load_module(path)


# -- the processor ---------------------------------------------------------------------------


class _Output:
    """One output group's slice of the output population: where its spikes are read."""

    __slots__ = ("group", "hi", "lo", "offset", "part", "shift", "size", "space")

    def __init__(self, group: Any, offset: int) -> None:
        self.group = group
        source = getattr(group, "source", None)  # a Subgroup reads its parent's spike space
        if source is not None and hasattr(group, "start"):
            self.lo, self.hi = int(group.start), int(group.stop)
            self.space = source.variables["_spikespace"].get_value()
        else:
            self.lo, self.hi = 0, int(group.N)
            self.space = group.variables["_spikespace"].get_value()
        self.size = self.hi - self.lo
        self.offset = offset
        self.part = self.lo != 0 or self.hi != len(self.space) - 1
        self.shift = offset - self.lo

    def spikes(self) -> Any:
        """This step's spikes, as indices into the output population (a fresh array)."""
        space = self.space
        fired = space[: space[-1]]
        if self.part and fired.size:  # a subgroup: its neurons are one run of the sorted ids
            lo, hi = np.searchsorted(fired, (self.lo, self.hi))
            fired = fired[lo:hi]
        if self.shift:
            fired = fired + self.shift
        return fired.astype(np.uint32)


class Brian2Processor(Processor):
    """Runs a user's Brian2 network one time step per ``step``; inputs fire in an input group."""

    kind: ClassVar[str] = "brian2"
    stepped_only: ClassVar[bool] = True

    def __init__(self, module: ModuleType, builder: Callable[..., Any], label: str) -> None:
        self.module = module
        self.builder = builder
        self.label = label
        self.settings = Brian2Settings()
        self.net: Any = None
        self.input_group: Any = None
        self.output_groups: list[Any] = []
        self.output_size = 0
        self.compiled: list[str] = []  # code objects compiled (not found in the cache) so far
        self.loaded: list[str] = []    # code objects loaded from the cache so far
        self.repetition = -1
        self._namespace: dict[str, Any] = {}
        self._outputs: list[_Output] = []
        self._runners: list[Callable[[], Any]] = []
        self._in_space: Any = None
        self._in_size = 0
        self._timestep: Any = None
        self._t: Any = None
        self._dt: Any = None
        self._clock: Any = None
        self._dt_s = 0.0
        self._running = False
        self._steps = 0
        self._t_start = 0.0
        self._on_progress: Callable[[str], None] = lambda _msg: None

    @classmethod
    def from_spec(cls, arg: str) -> Brian2Processor:
        """Parse ``PATH.py[:BUILDER]`` (builder default ``build``) and load the module."""
        path, builder_name = arg, "build"
        head, sep, tail = arg.rpartition(":")
        if sep and head.endswith(".py") and tail.isidentifier():
            path, builder_name = head, tail
        if not path:
            raise ConfigError(f"expected {GRAMMAR}, got brian2:{arg}", key="processor")
        module = load_user_module(path)
        builder = getattr(module, builder_name, None)
        if not callable(builder):
            raise ConfigError(f"{path} defines no function {builder_name}(inputs, dt, params)",
                              key="processor")
        check_call(builder, ("inputs", "dt", "params"), what="the builder", label=f"brian2:{arg}")
        hook = getattr(module, "post_run", None)
        if callable(hook):
            check_call(hook, ("net", "run"), what="post_run", label=f"brian2:{arg}")
        return cls(module, builder, arg)

    def configure(self, settings: Any) -> None:
        """Take the parsed ``[brian2]`` section (None: defaults)."""
        if settings is None:
            settings = Brian2Settings()
        if not isinstance(settings, Brian2Settings):
            raise TypeError(f"expected Brian2Settings, got {type(settings).__name__}")
        self.settings = settings

    # -- set-up (slow, outside the deadline schedule) -------------------------------------------

    def preflight(self, *, inputs: int, dt_ns: int | None, params: Mapping[str, Any]) -> int | None:
        """Build the network with the numpy target (nothing is compiled, no step runs), read
        the output groups' sizes and drop it; ConfigError on anything ``setup`` would refuse.
        """
        b2 = self._prepare(inputs, dt_ns)
        assert dt_ns is not None
        saved = b2.prefs.codegen.target
        # Building runs code (Synapses.connect): numpy code needs no compiler.
        b2.prefs.codegen.target = "numpy"
        try:
            self._build(b2, inputs, dt_ns, params)
            return self.output_size
        finally:
            b2.prefs.codegen.target = saved
            self._drop()

    def setup(
        self,
        *,
        inputs: int,
        dt_ns: int | None,
        params: Mapping[str, Any],
        on_progress: Callable[[str], None] = lambda _msg: None,
    ) -> int:
        """Build the network, compile it and prepare the first run; return the output size."""
        b2 = self._prepare(inputs, dt_ns)
        self._on_progress = on_progress
        cache_dir = self.settings.resolved_cache_dir()
        b2.prefs.codegen.target = self.settings.target
        b2.prefs.codegen.runtime.cython.cache_dir = cache_dir
        try:
            os.makedirs(cache_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {cache_dir!r}: {exc.strerror}",
                              key="brian2.cache_dir") from None
        assert dt_ns is not None
        on_progress(f"building {self.label}")
        with self._watching(cache_dir):
            self._build(b2, inputs, dt_ns, params)
        self.begin_run()
        log.info("%s ready: %d inputs, %d outputs (%s), dt %.4g ms, %d code objects compiled, "
                 "%d from the cache %s", self.label, inputs, self.output_size,
                 ", ".join(g.name for g in self.output_groups), dt_ns / 1e6, len(self.compiled),
                 len(self.loaded), cache_dir)
        return self.output_size

    def _prepare(self, inputs: int, dt_ns: int | None) -> ModuleType:
        if dt_ns is None:
            raise ConfigError("a brian2 processor needs stepped mode (a dt)", key="bridge.mode")
        if inputs <= 0:
            raise ConfigError("a brian2 processor needs at least one input neuron", key="input")
        return import_brian()

    def _build(self, b2: ModuleType, inputs: int, dt_ns: int, params: Mapping[str, Any]) -> None:
        """Call the builder and assemble the network: what both preflight and setup do."""
        self._dt_s = dt_ns * 1e-9
        dt = self._dt_s * b2.second
        b2.defaultclock.dt = dt
        inp = self.input_group = self._input_group(b2, inputs)
        try:
            result, local_names = _call_keeping_locals(self.builder, inp, dt, dict(params))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{self.label}: the builder failed:\n{user_traceback(exc)}",
                              key="processor") from None
        self._assemble(b2, inp, result, local_names)
        self.output_size = sum(o.size for o in self._outputs)
        if self.output_size == 0:
            raise ConfigError(f"{self.label}: the output groups have no neurons", key="processor")

    def _drop(self) -> None:
        """Forget a network built by ``preflight`` (its objects are never run)."""
        built = list(self.net.sorted_objects) if self.net is not None else []
        if self.input_group is not None:
            built.append(self.input_group)
        for obj in built:  # Brian warns about objects deleted without a network that ran them
            obj._network = self.net.id if self.net is not None else "spikebridge preflight"
        self.net = None
        self.input_group = None
        self.output_groups = []
        self._outputs = []
        self._namespace = {}
        self._in_space = None
        self._clock = None

    @contextlib.contextmanager
    def _watching(self, cache_dir: str) -> Iterator[None]:
        if self.settings.target != "cython":
            yield
            return
        with _watch_compiles(cache_dir, self._on_progress) as watch:
            try:
                yield
            finally:
                self.compiled += watch.compiled
                self.loaded += watch.loaded

    @staticmethod
    def _input_group(b2: ModuleType, size: int) -> Any:
        """A group whose spikes are written by ``step`` itself: it runs no code of its own.

        Its threshold exists only to give it a spike space; its thresholder, resetter and
        (empty) state updater are switched off, so no code object runs for the input.
        """
        inp = b2.NeuronGroup(size, "", threshold="False", reset="", name=INPUT_NAME,
                             clock=b2.defaultclock)
        inp.thresholder["spike"].active = False
        inp.state_updater.active = False
        for resetter in inp.resetter.values():
            resetter.active = False
        return inp

    def _assemble(self, b2: ModuleType, inp: Any, result: Any, local_names: dict[str, Any]) -> None:
        if isinstance(result, Mapping):
            unknown = set(result) - {"outputs", "objects", "namespace"}
            if unknown or "outputs" not in result:
                raise ConfigError(f"{self.label}: the builder must return Built(outputs=..., "
                                  "objects=..., namespace=...) or a dict with those keys",
                                  key="processor")
            result = Built(**result)
        if not isinstance(result, Built):
            raise ConfigError(f"{self.label}: the builder returned {type(result).__name__}, "
                              "expected Built(outputs=[...], objects=[...])", key="processor")
        objects = [inp]
        seen = {id(inp)}
        for obj in _flatten(result.objects):
            if not isinstance(obj, b2.BrianObject):
                raise ConfigError(f"{self.label}: objects holds {obj!r}, not a Brian object",
                                  key="processor")
            if id(obj) not in seen:
                seen.add(id(obj))
                objects.append(obj)
        by_name = {obj.name: obj for obj in objects}
        outs = [result.outputs] if isinstance(result.outputs, str | b2.BrianObject) else list(
            _flatten(result.outputs))
        if not outs:
            raise ConfigError(f"{self.label}: the builder named no output group", key="processor")
        groups = []
        for out in outs:
            group = by_name.get(out) if isinstance(out, str) else out
            if group is None:
                raise ConfigError(f"{self.label}: no object named {out!r} among the objects",
                                  key="processor")
            if "_spikespace" not in getattr(group, "variables", {}):
                raise ConfigError(f"{self.label}: output {getattr(group, 'name', group)!r} "
                                  "does not spike (not a NeuronGroup, Subgroup, "
                                  "SpikeGeneratorGroup or PoissonGroup)", key="processor")
            if isinstance(group, b2.Subgroup):
                if group.source.name not in by_name:
                    raise ConfigError(f"{self.label}: output {group.name!r} is part of "
                                      f"{group.source.name!r}; put that group in objects",
                                      key="processor")
            elif id(group) not in seen:
                seen.add(id(group))
                objects.append(group)
            groups.append(group)
        self.net = b2.Network(*objects, name="spikebridge_network*")
        clocks = {obj.clock for obj in self.net.sorted_objects}
        if len(clocks) != 1:
            own = sorted(f"{o.name} (dt={o.clock.dt})" for o in self.net.sorted_objects)
            raise ConfigError(f"{self.label}: the network uses {len(clocks)} clocks; spikebridge "
                              f"steps one (dt = {b2.defaultclock.dt}): {', '.join(own)}",
                              key="processor")
        (self._clock,) = clocks
        if abs(float(self._clock.dt) - self._dt_s) > 1e-3 * self._dt_s:
            raise ConfigError(f"{self.label}: the network steps {self._clock.dt}, but the "
                              f"bridge's dt is {self._dt_s * 1e3:g} ms; do not set dt in the "
                              "network file", key="processor")
        namespace = {k: v for k, v in vars(self.module).items() if not k.startswith("__")}
        namespace.update(local_names)
        if result.namespace:
            namespace.update(result.namespace)
        self._namespace = namespace
        self.input_group = inp
        self.output_groups = groups
        self._outputs = []
        offset = 0
        for group in groups:
            out = _Output(group, offset)
            self._outputs.append(out)
            offset += out.size
        self._in_space = inp.variables["_spikespace"].get_value()
        self._in_size = len(inp)

    def begin_run(self) -> None:
        """Prepare a run (repetition): what Network.run does before its loop. Compiles."""
        if self._running:
            return

        net, clock = self.net, self._clock
        # What Network.run sets up before its loop. The end is far away: the engine ends a run.
        net._clocks = {clock}
        clock.set_interval(net.t, net.t + 2**39 * clock.dt)
        with self._watching(self.settings.resolved_cache_dir()):
            try:
                net.before_run(self._namespace)
            except Exception as exc:
                raise ConfigError(f"{self.label}: preparing the network failed: {exc}",
                                  key="processor") from exc
        self._runners = self._schedule(net)
        self._timestep = clock.variables["timestep"].get_value()
        self._t = clock.variables["t"].get_value()
        self._dt = clock.variables["dt"].get_value()
        self._t_start = float(self._t[0])
        self._steps = 0
        self.repetition += 1
        self._running = True

    @staticmethod
    def _schedule(net: Any) -> list[Callable[[], Any]]:
        """What one time step calls, in order: Network.run's loop body, flattened.

        ``BrianObject.run`` only calls the object's code objects, so those are called directly
        (groups without code cost nothing); objects with their own ``run`` (network operations)
        keep it.
        """
        from brian2.core.base import BrianObject

        calls: list[Callable[[], Any]] = []
        for obj in net.sorted_objects:
            if not obj.active:
                continue
            if type(obj).run is BrianObject.run:
                calls.extend(obj._code_objects)
            else:
                calls.append(obj.run)
        return calls

    # -- the hot path ----------------------------------------------------------------------------

    def step(self, ids: IdArray, now_ns: int) -> IdArray:
        """Fire ``ids`` in the input group, run one Brian time step, return its output spikes."""
        if not self._running:
            self.begin_run()  # the engine did not call begin_run: one slow step
        space = self._in_space
        n = ids.size
        if n:
            # A spike space holds each neuron once, ascending, as Brian's thresholder writes it.
            if n > 1 and not (ids[1:] > ids[:-1]).all():
                ids = np.unique(ids)
                n = ids.size
            if ids[n - 1] >= self._in_size:
                raise ValueError(f"input id {int(ids[n - 1])} >= input size {self._in_size}")
            space[:n] = ids
        space[-1] = n
        for run in self._runners:
            run()
        ts = self._timestep
        ts[0] += 1
        self._t[0] = ts[0] * self._dt[0]
        self._steps += 1
        outs = self._outputs
        if len(outs) == 1:
            return outs[0].spikes()
        return np.concatenate([o.spikes() for o in outs]) if outs else _EMPTY

    # -- after a run -----------------------------------------------------------------------------

    def post_run(self) -> None:
        """End the run (Brian's after_run) and call the module's ``post_run(net, run)``.

        Does nothing when no step ran since the last call, so a run is reported once.
        """
        if not self._running:
            return

        net = self.net
        self._running = False
        net.t_ = float(self._t[0])
        net.after_run()
        info = RunInfo(self.repetition, self._steps, self._t_start, float(self._t[0]))
        if self._steps == 0:
            return
        hook = getattr(self.module, "post_run", None)
        if callable(hook):
            hook(net, info)

    def close(self) -> None:
        """End a run still open (without the hook) and drop the network."""
        if self._running:
            self._running = False
            self.net.after_run()
        self._runners = []
        self._outputs = []
