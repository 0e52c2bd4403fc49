"""Build a small convolutional SNN in snnTorch and export it to NIR: the nir example's model.

    python examples/nir_export.py examples/nir_conv.nir            # 8 channels (the example)
    python examples/nir_export.py /tmp/conv32.nir --channels 32      # a larger one

The network looks at a 64x48 two-polarity event camera, (channel, height, width) = (2, 48, 64),
and drives two motor neurons: events in the left half of the field drive motor 0, events in
the right half motor 1 (a Braitenberg vehicle). Its weights are set, not trained: positive
random convolutions (seeded) and a readout that sums each half of the last feature map.
It needs torch and snnTorch (pip install 'spikebridge[nir-torch]'); the bridge does not.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

WIDTH, HEIGHT, POLARITIES = 64, 48, 2
DT_S = 1e-4  # snnTorch's export writes tau = dt / (1 - beta) with this dt


def build(channels: int = 8, seed: int = 1, beta: float = 0.9) -> Any:
    """The snnTorch network (torch.nn.Sequential) for a (1, 2, 48, 64) input per step."""
    import snntorch as snn
    import torch

    g = torch.Generator().manual_seed(seed)
    c = channels

    def conv(cin: int, cout: int, k: int, stride: int, pad: int, gain: float) -> Any:
        layer = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
        with torch.no_grad():
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) * gain / (cin * k * k))
            layer.bias.zero_()
        return layer

    def lif(*shape: int) -> Any:
        # Per-neuron parameters: NIR types come from their shapes; scalars have none.
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape),
                         init_hidden=True, reset_mechanism="zero")

    # 48x64 -> conv 5x5/2 -> 24x32 -> pool 2 -> 12x16 -> conv 3x3 -> pool 2 -> 6x8
    readout = torch.nn.Linear(c * 6 * 8, 2)
    with torch.no_grad():
        w = torch.zeros(2, c, 6, 8)
        w[0, :, :, :4] = 1.0  # left half of the field -> motor 0
        w[1, :, :, 4:] = 1.0  # right half -> motor 1
        readout.weight.copy_(w.reshape(2, -1) * (1.5 / (c * 6 * 4)) * 8)
        readout.bias.zero_()
    return torch.nn.Sequential(
        conv(POLARITIES, c, 5, 2, 2, 12.0), lif(c, 24, 32),
        torch.nn.AvgPool2d((2, 2)),  # a tuple: snnTorch's import cannot read back an int
        conv(c, c, 3, 1, 1, 24.0), lif(c, 12, 16),
        torch.nn.AvgPool2d((2, 2)),  # a tuple: snnTorch's import cannot read back an int
        torch.nn.Flatten(),
        readout, lif(2),
    )


def export(path: str, channels: int = 8, seed: int = 1) -> Any:
    """Export the network to ``path`` with snnTorch's own export_to_nir; return the graph."""
    import nir
    import torch
    from snntorch.export_nir import export_to_nir

    net = build(channels, seed)
    sample = torch.zeros(1, POLARITIES, HEIGHT, WIDTH)
    # NIR types carry no batch axis: without ignore_dims the Input type keeps it and the
    # export's own Conv2d type inference fails.
    graph = export_to_nir(net, sample, ignore_dims=[0])
    nir.write(path, graph)
    return graph


def main(argv: list[str]) -> int:
    """Write the .nir file named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="the .nir file to write")
    parser.add_argument("--channels", type=int, default=8, help="feature maps per conv layer")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    graph = export(args.path, args.channels, args.seed)
    kinds = ", ".join(f"{k}: {type(v).__name__}" for k, v in graph.nodes.items())
    print(f"wrote {args.path}: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
