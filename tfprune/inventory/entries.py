"""What `tfprune.prunable_layers` returns, for tf-keras and Keras 3 models alike: `PrunableLayer`, `SkippedLayer`, `LayerInventory`.

Plain dataclasses over the layers they point at (read through ``.numpy()`` and
the wrapper's ``pruning_vars`` / ``pruning_schedule``, which both backends' wrappers
have); no Keras import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

__all__ = ["PrunableLayer", "SkippedLayer", "LayerInventory", "WRAPPER_PREFIX", "PRUNED_WEIGHT_NAMES", "pruned_weight_table"]

WRAPPER_PREFIX = "prune_low_magnitude_"

#: Layer class name -> attribute of the weight tfprune prunes (None: never pruned), most specific first. The same table for
#: tf-keras and Keras 3 (`pruned_weight_table` resolves it against either's ``layers`` module); in tf-keras the depthwise
#: convolutions subclass Conv, hence their entries first.
PRUNED_WEIGHT_NAMES: tuple[tuple[str, str | None], ...] = (
    ("DepthwiseConv1D", None),
    ("DepthwiseConv2D", None),
    ("SeparableConv1D", "pointwise_kernel"),
    ("SeparableConv2D", "pointwise_kernel"),
    ("Conv1DTranspose", "kernel"),
    ("Conv2DTranspose", "kernel"),
    ("Conv3DTranspose", "kernel"),
    ("Conv1D", "kernel"),
    ("Conv2D", "kernel"),
    ("Conv3D", "kernel"),
    ("Dense", "kernel"),
    ("Embedding", "embeddings"),
)


def pruned_weight_table(layers_module: Any) -> list[tuple[type, str | None]]:
    """`PRUNED_WEIGHT_NAMES` as ``(class, attribute)`` of one Keras's ``layers`` module (classes it lacks are left out)."""
    return [(getattr(layers_module, name), attr) for name, attr in PRUNED_WEIGHT_NAMES if hasattr(layers_module, name)]


@dataclass
class PrunableLayer:
    """One prunable weight tensor.

    Attributes:
      name: the original layer's name (without the wrapper prefix).
      path: ``outer/inner/name`` for layers inside nested models, else ``name``.
      layer_type: class name of the original layer (e.g. ``Dense``).
      weight: attribute of the pruned weight (``kernel``, ``pointwise_kernel``, ``embeddings``).
      shape: shape of that weight.
      n_params: number of entries of that weight (the unit of every sparsity count).
      wrapped: True when the layer already carries a tfmot ``PruneLowMagnitude`` wrapper.
    """

    name: str
    path: str
    layer_type: str
    weight: str
    shape: tuple[int, ...]
    n_params: int
    wrapped: bool = False
    layer: Any = field(default=None, repr=False, compare=False)

    @property
    def inner(self) -> Any:
        """The original Keras layer (unwrapped)."""
        return self.layer.layer if self.wrapped else self.layer

    def kernel(self) -> np.ndarray:
        """Current value of the pruned weight (masked if wrapped), as numpy."""
        w = getattr(self.inner, self.weight).numpy()
        if self.wrapped:
            mask = self.mask()
            if mask is not None:
                w = w * mask
        return w

    def mask(self) -> np.ndarray | None:
        """The tfmot mask (1 = kept) of a wrapped layer, else None."""
        if not self.wrapped or not self.layer.pruning_vars:
            return None
        return self.layer.pruning_vars[0][1].numpy()

    def sparsity(self) -> float:
        """Fraction of this weight that is exactly zero now (masked if wrapped)."""
        w = self.kernel()
        return float(np.count_nonzero(w == 0)) / w.size

    @property
    def schedule(self) -> Any:
        """The wrapper's pruning schedule (None if not wrapped)."""
        return self.layer.pruning_schedule if self.wrapped else None


@dataclass
class SkippedLayer:
    """A layer that holds no prunable weight, and why."""

    name: str
    path: str
    layer_type: str
    reason: str
    n_params: int = 0
    kernels_inside: int = 0  # weights of Conv/Dense-type layers nested inside this (custom) layer, which tfprune does not prune


@dataclass
class LayerInventory:
    """Result of `prunable_layers`: iterate it for the prunable entries."""

    prunable: list[PrunableLayer]
    skipped: list[SkippedLayer]

    def __iter__(self) -> Iterator[PrunableLayer]:
        return iter(self.prunable)

    def __len__(self) -> int:
        return len(self.prunable)

    def __getitem__(self, key: int | str) -> PrunableLayer:
        if isinstance(key, str):
            for p in self.prunable:
                if key in (p.name, p.path, WRAPPER_PREFIX + p.name):
                    return p
            raise KeyError(f"no prunable layer named {key!r}; prunable layers: {self.names}")
        return self.prunable[key]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.prunable]

    @property
    def n_params(self) -> int:
        """Total number of prunable weights (the denominator of total sparsity)."""
        return int(sum(p.n_params for p in self.prunable))

    @property
    def n_skipped_kernels(self) -> int:
        """Weights of prunable layer types that sit inside skipped (custom) layers: not counted in ``n_params``, never pruned."""
        return int(sum(s.kernels_inside for s in self.skipped))

    def sparsity(self) -> dict[str, float]:
        """Current fraction of zeros of every prunable weight, by layer name."""
        return {p.name: p.sparsity() for p in self.prunable}

    def total_sparsity(self) -> float:
        """Zeros over all prunable weights / their count."""
        zeros = sum(int(np.count_nonzero(p.kernel() == 0)) for p in self.prunable)
        return zeros / max(self.n_params, 1)

    def table(self) -> str:
        """A plain-text table of prunable and skipped layers (columns sized to the names)."""
        from tfprune.report import format_table

        rows = [[p.path, p.layer_type, p.weight, str(p.shape), p.n_params, "yes" if p.wrapped else "no"] for p in self.prunable]
        out = [format_table(["layer", "type", "weight", "shape", "params", "wrapped"], rows, "llllrl"), f"total prunable weights: {self.n_params}"]
        if self.skipped:
            out += ["skipped:", format_table(["layer", "type", "reason"], [[s.path, s.layer_type, s.reason] for s in self.skipped], "lll")]
        return "\n".join(out)

    __str__ = table
