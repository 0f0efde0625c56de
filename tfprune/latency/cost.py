"""The latency of a channel-pruned model predicted from a `LatencyTable`, for any set of removed channels, without building it.

The twin of `tfprune.structured.plan.CostModel` (MACs and params): the same
channel graph, the same "removed id classes" input, milliseconds out. Each
timed layer is looked up at the channel counts it keeps; the remainder scales
with the share of element-wise activations and the share of timed layers'
weights kept (`tfprune.latency.table`).
"""

from __future__ import annotations

import numpy as np

from tfprune.latency.table import LatencyTable
from tfprune.structured.graph import FROZEN, INPUT, PRODUCER, ChannelGraph, TensorKey
from tfprune.structured.plan import CostModel

__all__ = ["LatencyCost", "timed_layer_keys", "kernel_size"]


def timed_layer_keys(cg: ChannelGraph, name: str) -> tuple[TensorKey | None, TensorKey | None]:
    """The (input, output) tensors of layer ``name`` whose channels the graph tracks (None where it tracks none)."""
    node = cg.nodes[name]
    kin = node.inputs[0] if node.inputs and node.inputs[0] in cg.labels else None
    kout = node.outputs[0] if node.outputs and node.outputs[0] in cg.labels else None
    return kin, kout


def kernel_size(layer: object) -> float:
    """Entries of a timed layer's main kernel (a separable convolution's pointwise one; biases left out): what its channel
    cuts scale exactly, so a shrunk copy's count is the dense count times the input and output fractions kept."""
    for attr in ("kernel", "pointwise_kernel", "depthwise_kernel"):
        w = getattr(layer, attr, None)
        if w is not None:
            return float(np.prod([int(d) for d in w.shape]))
    return float(layer.count_params())


class LatencyCost:
    """Milliseconds of the shrunk model for any set of removed channels (bool per id class, as `CostModel.estimate` takes).

    ``cg`` may be the graph of the model the table was built for or of a
    smaller copy of it (channels removed, layers removed): layers are found by
    name, their current channel counts read from the graph, and a layer of the
    table the model no longer has costs nothing.
    """

    def __init__(self, cg: ChannelGraph, table: LatencyTable) -> None:
        present = [n for n in table.layers if n in cg.nodes]
        if not present:
            raise ValueError(f"the latency table names none of the model's layers (it was built for {table.model!r}). Fix: build the "
                             "table for this model, tfprune.latency.build_table(model)")
        self.cg, self.table = cg, table
        self.macs = CostModel(cg)
        self.all_labels, self.index = self.macs.all_labels, self.macs.index
        self.absent = [n for n in table.layers if n not in cg.nodes]
        self.timed = []
        self.weights: list[tuple[TensorKey | None, TensorKey | None, float]] = []  # (input key, output key, weights now)
        for name in present:
            layer = cg.flat.get_layer(name)
            kin, kout = timed_layer_keys(cg, name)
            if cg.nodes[name].kind != PRODUCER:  # depthwise: its outputs are its inputs' channels
                kout = None
            self.timed.append((name, kin, kout, int(layer.input.shape[-1]), int(layer.output.shape[-1])))
            self.weights.append((kin, kout, kernel_size(layer)))
        self.weight_total = table.weight_elements or sum(w for _, _, w in self.weights)
        self.elementwise: list[tuple[TensorKey, float]] = []
        for name, node in cg.nodes.items():
            if name in table.layers or node.kind in (INPUT, FROZEN) or not node.outputs:
                continue
            key = node.outputs[0]
            shape = cg.shapes.get(key)
            if key in cg.labels and shape is not None:
                self.elementwise.append((key, float(np.prod([d for d in shape[1:] if d is not None]))))
        self.elementwise_total = table.elementwise_elements or sum(e for _, e in self.elementwise)
        self.description = f"a latency table for {table.device!r} ({table.threads} thread(s), {table.runtime or 'runtime unknown'})"

    def removed_mask(self, labels: np.ndarray) -> np.ndarray:
        return self.macs.removed_mask(labels)

    def _kept(self, removed: np.ndarray, key: TensorKey | None) -> float:
        if key is None:
            return 1.0
        idx = self.index[key]
        return (idx.size - int(removed[idx].sum())) / max(idx.size, 1)

    def channels(self, removed: np.ndarray) -> dict[str, tuple[float, float]]:
        """Layer -> (input, output) channels kept (layers the model no longer has: ``(0, 0)``)."""
        out = {name: (0.0, 0.0) for name in self.absent}
        for name, kin, kout, n_in, n_out in self.timed:
            out[name] = (n_in * self._kept(removed, kin), n_out * self._kept(removed, kout if kout is not None else kin))
        return out

    def share(self, removed: np.ndarray) -> float:
        """Element-wise activations kept, as a fraction of the dense model's (the table's)."""
        if not self.elementwise_total:
            return 1.0
        return sum(e * self._kept(removed, k) for k, e in self.elementwise) / self.elementwise_total

    def weight_share(self, removed: np.ndarray) -> float:
        """Timed layers' kernel weights kept (`kernel_size`), as a fraction of the dense model's (the table's): a layer keeps its
        kernel times the fraction of input channels kept times the fraction of output channels kept (a depthwise layer: of
        its channels)."""
        if not self.weight_total:
            return 1.0
        return sum(w * self._kept(removed, kin) * (self._kept(removed, kout) if kout is not None else 1.0)
                   for kin, kout, w in self.weights) / self.weight_total

    def estimate(self, removed: np.ndarray | None = None) -> float:
        """Predicted milliseconds with the id classes ``removed`` (bool per label; None: nothing) gone."""
        if removed is None:
            removed = np.zeros(self.all_labels.size, bool)
        return self.table.predict(self.channels(removed), self.share(removed), self.weight_share(removed))
