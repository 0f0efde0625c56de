"""`profile(model)`: parameters and FLOPs (multiply-accumulates, MACs) per layer of any tf-keras model.

MACs per example: Dense in*out (times leading positions); ConvND
out_positions * c_out * (prod(kernel) * c_in / groups); Conv transposes
in_positions * c_in * prod(kernel) * c_out; DepthwiseConv2D out_positions *
c_in * multiplier * prod(kernel); SeparableConv = depthwise + pointwise.
Element-wise layers (BN, activations, Add, pooling) count 0 MACs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfprune._keras import check_is_model, keras, keras_of
from tfprune.report import Report, Table

__all__ = ["profile", "Profile", "LayerProfile"]



@dataclass
class LayerProfile:
    name: str
    layer_type: str
    params: int
    macs: int


@dataclass
class Profile(Report):
    """Per-layer parameters and MACs; ``table()``, ``to_markdown()``, ``to_dict()`` (with the totals)."""

    layers: list[LayerProfile] = field(default_factory=list)

    @property
    def params(self) -> int:
        return int(sum(r.params for r in self.layers))

    @property
    def macs(self) -> int:
        return int(sum(r.macs for r in self.layers))

    flops = macs

    def _blocks(self) -> list[str | Table]:
        rows = [[r.name, r.layer_type, r.params, r.macs] for r in self.layers]
        rows.append(["total", "", self.params, self.macs])
        return [Table(["layer", "type", "params", "MACs"], rows, "llrr")]

    def _extra_dict(self) -> dict[str, Any]:
        return {"params": self.params, "macs": self.macs}


def _positions(shape) -> int:
    dims = [int(d) for d in shape[1:-1]] if len(shape) > 2 else []
    return int(np.prod(dims)) if dims else 1


def _macs(layer: Any, shapes_from: Any = None) -> int:
    """MACs of ``layer``, with input/output shapes read from ``shapes_from`` (a wrapper) or the layer."""
    src = shapes_from if shapes_from is not None else layer
    L = keras_of(layer).layers  # noqa: N806  (tf-keras or Keras 3 classes, as the layer's)
    try:
        if hasattr(src, "output_shape"):  # tf-keras
            out_shape, in_shape = src.output_shape, src.input_shape
        else:  # Keras 3: the symbolic tensors of the layer's (first) call
            out_shape, in_shape = (tuple(t.shape) if hasattr(t, "shape") else [tuple(u.shape) for u in t] for t in (src.output, src.input))
    except (AttributeError, RuntimeError, ValueError):
        return 0
    if isinstance(out_shape, list) or isinstance(in_shape, list):
        return 0
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        k = int(np.prod(layer.kernel_size))
        c_in = int(in_shape[-1])
        return _positions(out_shape) * c_in * layer.depth_multiplier * (k + int(out_shape[-1]))
    if isinstance(layer, L.DepthwiseConv2D):
        return _positions(out_shape) * int(in_shape[-1]) * layer.depth_multiplier * int(np.prod(layer.kernel_size))
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return _positions(in_shape) * int(in_shape[-1]) * int(np.prod(layer.kernel_size)) * int(out_shape[-1])
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        groups = getattr(layer, "groups", 1) or 1
        return _positions(out_shape) * int(out_shape[-1]) * int(np.prod(layer.kernel_size)) * int(in_shape[-1]) // groups
    if isinstance(layer, L.Dense):
        return _positions(out_shape) * int(in_shape[-1]) * int(out_shape[-1])
    if isinstance(layer, L.Embedding):
        return 0
    return 0


def profile(model: Any) -> Profile:
    """Per-layer parameters and MACs (per example) of a built tf-keras or Keras 3 model; nested models are expanded.

    ``model`` must be a Model: a single layer is refused with the fix (put it in a model with its input shape).
    """
    k = keras_of(model)
    if k is keras:
        check_is_model(model)
    elif not isinstance(model, k.Model):
        raise TypeError(f"`model` must be a Keras 3 Model, got {type(model).__name__}. Fix: put the layer in a keras.Sequential with keras.Input")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built, so it has no weights or shapes to count. Fix: give it an input shape "
                         "(keras.Input(...) as its first layer) or call model.build((None, ...)) first")
    prof = Profile()

    def visit(m: Any, prefix: str) -> None:
        for layer in m.layers:
            if isinstance(layer, k.Model):
                visit(layer, f"{prefix}{layer.name}/")
                continue
            inner = getattr(layer, "layer", None)
            base = inner if inner is not None and isinstance(layer, k.layers.Wrapper) else layer
            params = int(sum(int(np.prod(w.shape)) for w in base.weights))
            macs = _macs(base, shapes_from=layer)
            prof.layers.append(LayerProfile(f"{prefix}{base.name}", type(base).__name__, params, macs))

    visit(model, "")
    return prof
