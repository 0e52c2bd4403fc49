"""``python -m bridge``: the same entry point as the ``spikebridge`` command."""

from __future__ import annotations

import sys

from bridge.cli import main

sys.exit(main())
