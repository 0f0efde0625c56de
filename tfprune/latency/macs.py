"""A `LatencyTable` that counts multiply-accumulates instead of timing: the MACs proxy, for comparison and for tables without a device.

``macs_table(model)`` gives every layer `build_table` would time the cost
``ms_per_mmac * MACs / 1e6`` at any channel counts, with no remainder: its
"milliseconds" are MACs scaled. A layer's MACs are bilinear in its input and
output channels (Conv, Dense, transposed and grouped convolutions:
``positions * kernel * c_in / groups * c_out``; SeparableConv2D:
``positions * multiplier * c_in * (kernel + c_out)``) or linear (DepthwiseConv2D:
``positions * multiplier * kernel * c_in``), so the table's bilinear
interpolation between one channel and all of them is exact:
`tfprune.latency.LatencyCost` on it gives the shrunk model's MACs of those
layers (``tfprune.profile``'s count) for any removed channels.

``tfprune.compress(model, data, latency=0.5, table=macs_table(model))`` is the
same search on a MACs budget (its latencies are not checked: the table's
``device`` is ``"macs"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune._keras import is_keras3_object, keras
from tfprune.inventory.profiling import profile
from tfprune.latency.measure import probe_plan
from tfprune.latency.table import LatencyTable, LayerTiming
from tfprune.validation import number

__all__ = ["macs_table"]

L = keras.layers


def _macs_at(layer: Any, dense_macs: float, n_in: int, n_out: int, a: float, b: float) -> float:
    """MACs of ``layer`` (``dense_macs`` at ``n_in``/``n_out`` channels) with ``a`` input and ``b`` output channels."""
    if isinstance(layer, L.SeparableConv2D):
        k = float(np.prod(layer.kernel_size))
        return dense_macs / (n_in * (k + n_out)) * a * (k + b)
    if isinstance(layer, L.DepthwiseConv2D):
        return dense_macs * a / n_in
    return dense_macs * (a / n_in) * (b / n_out)


def macs_table(model: Any, ms_per_mmac: float = 1.0) -> LatencyTable:
    """A table whose "milliseconds" are ``ms_per_mmac`` per million MACs of each layer; no remainder, ``device="macs"``.

    Args:
      model: a built tf-keras or Keras 3 model with a fixed input size (not changed).
      ms_per_mmac: the scale (the default reads the table's numbers as millions of MACs per example).
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import to_tf_keras

        model = to_tf_keras(model)
    ms_per_mmac = number(ms_per_mmac, "ms_per_mmac", minimum=0.0, strict=True)
    cg, layers, todo = probe_plan(model, points=2, channel_step=1)
    macs = {r.name: float(r.macs) for r in profile(cg.flat).layers}
    timings = {}
    for sig, (layer, in_shape, g_in, g_out, _, _) in todo.items():
        n_in, n_out = int(in_shape[-1]), int(layer.output.shape[-1])
        # two points per side a plan can change (its cost is linear there, and the table clamps below its smallest count)
        g_in = np.asarray([1, n_in] if g_in.size > 1 and n_in > 1 else [n_in], np.int64)
        g_out = np.asarray([1, n_out] if g_out.size > 1 and n_out > 1 else [n_out], np.int64)
        dense = macs.get(layer.name, 0.0)
        grid = np.asarray([[ms_per_mmac * 1e-6 * _macs_at(layer, dense, n_in, n_out, a, b) for b in g_out] for a in g_in])
        timings[sig] = LayerTiming(g_in, g_out, grid, f"{type(layer).__name__} like {layer.name!r}: MACs x {ms_per_mmac:g}e-6")
    return LatencyTable(timings=timings, layers=layers, device="macs", threads=1, runtime="none (MACs counted)", model=model.name,
                        notes=[f"MACs, not timings: {ms_per_mmac:g} 'ms' per million MACs per example; no remainder"])
