"""Pruning granularities that take a total target (numpy masks).

* ``unstructured``: tfmot magnitude masks, element by element.
* ``block``: tfmot block masks for Dense kernels (``wrap(..., block_size=(4, 1))``).
* ``channel``: whole output channels (last kernel axis: Conv filters, Dense
  units) with the smallest L2 norm are masked; the channel count per layer
  comes from the same per-layer allocation (weights removed / weights per
  channel, rounded). Channels are masked, not yet removed physically.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GRANULARITIES", "channel_mask", "channels_to_remove"]

GRANULARITIES = ("unstructured", "block", "channel")


def channels_to_remove(n_channels: int, sparsity: float) -> int:
    """Whole channels to mask for a target sparsity; at least one channel stays."""
    return int(min(max(round(sparsity * n_channels), 0), n_channels - 1))


def channel_mask(kernel: np.ndarray, sparsity: float, transpose: bool = False) -> np.ndarray:
    """A {0, 1} mask (kernel's shape) zeroing the lowest-L2-norm output channels.

    Output channels are on the last axis (on axis -2 for ConvTranspose kernels,
    ``transpose=True``). Ties are broken by channel index.
    """
    k = np.asarray(kernel)
    axis = k.ndim - 2 if transpose else k.ndim - 1
    moved = np.moveaxis(k, axis, -1)
    c = moved.shape[-1]
    norms = np.sqrt(np.square(moved.reshape(-1, c)).sum(0))
    r = channels_to_remove(c, sparsity)
    mask = np.ones(c, dtype=k.dtype)
    if r:
        mask[np.argsort(norms, kind="stable")[:r]] = 0
    full = np.broadcast_to(mask, moved.shape)
    return np.ascontiguousarray(np.moveaxis(full, -1, axis))
