"""Processors: what sits between the merged inputs and the outputs.

A spec string picks one: ``relay``, ``python:MODULE:FUNCTION``, ``brian2:PATH.py`` or
``nir:PATH.nir``.
"""

from __future__ import annotations

import importlib

from bridge.errors import ConfigError
from bridge.processors.base import Processor

__all__ = ["PROCESSORS", "Processor", "processor_from_spec"]

PROCESSORS: dict[str, str] = {
    "relay": "bridge.processors.relay:RelayProcessor",
    "python": "bridge.processors.python:PythonProcessor",
    "brian2": "bridge.processors.brian2:Brian2Processor",
    "nir": "bridge.processors.nir:NirProcessor",
}

SPEC_GRAMMAR = "relay | python:MODULE:FUNCTION | brian2:PATH/TO/NET.py | nir:PATH/TO/MODEL.nir"


def processor_from_spec(spec: str) -> Processor:
    """Build the processor a spec names; ConfigError quoting the grammar when it names none."""
    kind, _, arg = spec.partition(":")
    target = PROCESSORS.get(kind)
    if target is None:
        raise ConfigError(f"unknown processor {spec!r}; expected {SPEC_GRAMMAR}", key="processor")
    module, _, attr = target.partition(":")
    cls: type[Processor] = getattr(importlib.import_module(module), attr)
    return cls.from_spec(arg)
