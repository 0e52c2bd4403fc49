"""Test networks that a builder gets wrong, one builder per mistake."""

from __future__ import annotations

from typing import Any

from brian2 import Clock, NeuronGroup, Synapses, ms

from bridge.processors.brian2 import Built


def two_clocks(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """A group on its own clock."""
    g = NeuronGroup(3, "v : 1", threshold="v > 1", clock=Clock(dt=0.5 * ms), name="slow")
    return Built(outputs=[g], objects=[g])


def no_spikes(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """A Synapses object named as the output."""
    s = Synapses(inputs, inputs, name="loop")
    s.connect(j="i")
    return Built(outputs=[s], objects=[s])


def wrong_type(inputs: Any, dt: Any, params: dict[str, Any]) -> Any:
    """Returns a bare list."""
    return [inputs]


def unknown_name(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Names an output that is not among the objects."""
    return Built(outputs=["nope"])


def raises(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """A builder with a bug."""
    raise ZeroDivisionError("bug in the builder")


def undefined_name(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """An equation naming a constant that exists nowhere."""
    g = NeuronGroup(2, "dv/dt = -v / tau_nowhere : 1", threshold="v > 1", name="undef")
    return Built(outputs=[g], objects=[g])


def orphan_subgroup(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """A subgroup output whose parent is not in objects."""
    g = NeuronGroup(4, "v : 1", threshold="v > 1", name="parent")
    return Built(outputs=[g[:2]])


def own_dt(inputs: Any, dt: Any, params: dict[str, Any]) -> Built:
    """Changes the network's time step behind the bridge's back."""
    from brian2 import defaultclock

    defaultclock.dt = 0.5 * ms
    g = NeuronGroup(2, "v : 1", threshold="v > 1", name="fast")
    return Built(outputs=[g], objects=[g])
