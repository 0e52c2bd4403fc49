"""spikebridge: a real-time hardware-in-the-loop bridge for spiking neural networks.

The import package is ``bridge``; the distribution and the command are ``spikebridge``.
"""

from __future__ import annotations

__version__ = "0.1.0"
