"""``python:MODULE:FUNCTION``: a user step function over the merged input ids.

MODULE is a dotted module name or a path to a .py file, named only in the config or on the
command line, never taken from the wire. FUNCTION(ids) gets a uint32 array of merged input
ids and returns the output ids (any integer sequence). An optional ``setup(inputs, params)``
in the same module returns the output population size (default: the input size); an optional
``post_run()`` runs after each run. These signatures are checked when the spec is loaded
(docs/processors.md), so a function that cannot be called so is refused before anything runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from bridge.errors import ConfigError
from bridge.frame import IdArray
from bridge.processors.base import Processor
from bridge.processors.usercode import check_call, user_traceback

GRAMMAR = "python:MODULE:FUNCTION or python:PATH/TO/FILE.py:FUNCTION"


def load_module(name: str) -> ModuleType:
    """Import a dotted module, or load a .py file by path; ConfigError when it cannot."""
    if name.endswith(".py"):
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise ConfigError(f"no such file {name!r}", key="processor")
        mod_name = f"spikebridge_user_{abs(hash(path)):x}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load {name!r} as Python", key="processor")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise ConfigError(f"{name} failed to load:\n{user_traceback(exc)}",
                              key="processor") from None
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {name!r}: {exc}", key="processor") from None
    except ValueError as exc:  # importlib's own refusal of the name ("Empty module name")
        raise ConfigError(f"cannot import {name!r}: {exc}", key="processor") from None
    except Exception as exc:
        raise ConfigError(f"{name} failed to load:\n{user_traceback(exc)}",
                          key="processor") from None


class PythonProcessor(Processor):
    """Calls the user's function once per frame (relay mode) or once per step (stepped)."""

    kind: ClassVar[str] = "python"

    def __init__(self, function: Callable[[IdArray], Any], module: ModuleType, label: str) -> None:
        self.function = function
        self.module = module
        self.label = label
        self.output_size = 0

    @classmethod
    def from_spec(cls, arg: str) -> PythonProcessor:
        """Parse ``MODULE:FUNCTION`` and import the function."""
        module_name, sep, func_name = arg.rpartition(":")
        if not sep or not module_name or not func_name:
            raise ConfigError(f"expected {GRAMMAR}, got python:{arg}", key="processor")
        module = load_module(module_name)
        function = getattr(module, func_name, None)
        if not callable(function):
            raise ConfigError(f"{module_name} has no function {func_name!r}", key="processor")
        check_call(function, ("ids",), what="the step function", label=f"python:{arg}")
        for hook, args in (("setup", ("inputs", "params")), ("post_run", ())):
            fn = getattr(module, hook, None)
            if callable(fn):
                check_call(fn, args, what=hook, label=f"python:{arg}")
        return cls(function, module, arg)

    def preflight(self, *, inputs: int, dt_ns: int | None, params: Mapping[str, Any]) -> int | None:
        """The input size, or None when the module's ``setup`` decides (it runs at setup)."""
        return None if callable(getattr(self.module, "setup", None)) else inputs

    def setup(
        self,
        *,
        inputs: int,
        dt_ns: int | None,
        params: Mapping[str, Any],
        on_progress: Callable[[str], None] = lambda _msg: None,
    ) -> int:
        """Call the module's optional ``setup(inputs, params)`` for the output size."""
        size = inputs
        hook = getattr(self.module, "setup", None)
        if callable(hook):
            try:
                got = hook(inputs, dict(params))
            except Exception as exc:
                raise ConfigError(f"{self.label}: setup() failed:\n{user_traceback(exc)}",
                                  key="processor") from None
            if got is not None:
                if not isinstance(got, int) or got <= 0:
                    raise ConfigError(f"{self.label}: setup() must return a positive int or "
                                      f"None, got {got!r}", key="processor")
                size = got
        self.output_size = size
        return size

    def step(self, ids: IdArray, now_ns: int) -> IdArray:
        """Call the user function; its result becomes a uint32 id array."""
        out = self.function(ids)
        if out is None:
            return np.empty(0, dtype=np.uint32)
        arr = np.asarray(out)
        if arr.dtype != np.uint32:
            if arr.size and (arr.dtype.kind not in "iu" or int(arr.min()) < 0):
                raise ValueError(f"{self.label} returned non-id values (dtype {arr.dtype})")
            arr = arr.astype(np.uint32)
        return arr.ravel()

    def post_run(self) -> None:
        """Call the module's optional ``post_run()``."""
        hook = getattr(self.module, "post_run", None)
        if callable(hook):
            hook()
