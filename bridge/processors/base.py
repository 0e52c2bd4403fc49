"""The Processor contract: merged input ids in, output-population ids out.

A processor never touches sockets or devices and never reads the clock: the engine passes
``now_ns`` in and does all I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from bridge.frame import IdArray


class Processor(ABC):
    """One step function. ``setup`` returns the size of the output population it emits into."""

    kind: ClassVar[str]
    stepped_only: ClassVar[bool] = False  # True when it needs a clock (Brian2)

    @classmethod
    @abstractmethod
    def from_spec(cls, arg: str) -> Processor:
        """Build from the text after ``kind:`` in the spec; ConfigError when it is unusable."""

    @abstractmethod
    def setup(
        self,
        *,
        inputs: int,
        dt_ns: int | None,
        params: Mapping[str, Any],
        on_progress: Callable[[str], None] = lambda _msg: None,
    ) -> int:
        """Prepare for ``inputs`` merged input neurons; return the output population size.

        ``dt_ns`` is None in relay mode. ``on_progress`` is called during long set-up work
        (compilation) so that the service layer can extend its start-up timeout.
        """

    def preflight(self, *, inputs: int, dt_ns: int | None, params: Mapping[str, Any]) -> int | None:
        """Build without compiling or opening anything and return the output population size,
        or None when it is only known after setup; ConfigError on anything setup would refuse.
        """
        return None

    def configure(self, settings: Any) -> None:  # noqa: B027 - optional hook, empty by default
        """Receive the parsed config section named after this kind (``[brian2]``), or None."""

    def begin_run(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Prepare repetition 2, 3, ...; called outside the deadline schedule (may be slow)."""

    @abstractmethod
    def step(self, ids: IdArray, now_ns: int) -> IdArray:
        """Process one frame (relay) or one step's merged input (stepped); return output ids."""

    def post_run(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called after each run (repetition) and on shutdown: save weights, monitors."""

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release resources; called once, after the last ``post_run``."""
