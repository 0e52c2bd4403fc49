"""The engine: clock, pacing, routing, statistics and the real-time loop."""
