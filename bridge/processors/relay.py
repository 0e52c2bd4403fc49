"""The relay processor: output ids are the input ids. No clock, no state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from bridge.errors import ConfigError
from bridge.frame import IdArray
from bridge.processors.base import Processor


class RelayProcessor(Processor):
    """Forward the merged input population unchanged; the output population is the input's."""

    kind: ClassVar[str] = "relay"

    @classmethod
    def from_spec(cls, arg: str) -> RelayProcessor:
        """``relay`` takes no argument."""
        if arg:
            raise ConfigError(f"relay takes no argument, got {arg!r}", key="processor")
        return cls()

    def preflight(self, *, inputs: int, dt_ns: int | None, params: Mapping[str, Any]) -> int | None:
        """The output population is the merged input."""
        return inputs

    def setup(
        self,
        *,
        inputs: int,
        dt_ns: int | None,
        params: Mapping[str, Any],
        on_progress: Callable[[str], None] = lambda _msg: None,
    ) -> int:
        """The output population has as many neurons as the merged input."""
        return inputs

    def step(self, ids: IdArray, now_ns: int) -> IdArray:
        """Return ``ids`` unchanged."""
        return ids
