"""Mask rules: which weights a given sparsity removes, one rule per granularity.

Every rule exists twice, with the same result:

* a **numpy reference** (``*_mask_np``), small and testable without a graph;
* a **TensorFlow version** (``*_mask_tf``), run inside the training graph by
  `tfprune.masks.wrapper.PruneLayer` whenever the schedule says so (so it works
  with ``steps_per_execution > 1``, under ``tf.function`` and after reload).

Units: ``sparsity`` is always the **fraction of the unit count removed**; the
unit depends on the rule:

===============  ==========================================  =========================
rule             unit                                        what is removed
===============  ==========================================  =========================
``unstructured`` one weight                                  smallest |w|
``block``        one (bh, bw) block of a 2-D (Dense) kernel  smallest mean |w| block
``n:m``          one group of M consecutive input weights    the M-N smallest |w| of
                 of one output (e.g. ``2:4``)                every group
``frozen``       none: the mask never changes                nothing new
===============  ==========================================  =========================

`layer_units` gives, for one kernel shape and rule, how many units there are
and how many weights each removes, so a plan can keep the budget exact in
whole units. Ties are broken by index (stable sort), in both versions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GRANULARITIES",
    "RULE_IDS",
    "Granularity",
    "parse_granularity",
    "layer_units",
    "kept_count",
    "channels_to_remove",
    "unstructured_mask_np",
    "block_mask_np",
    "nm_mask_np",
    "out_axis",
    "mask_tf",
]

#: Granularity names accepted everywhere (``"n:m"`` is written with numbers, e.g. ``"2:4"``).
GRANULARITIES = ("unstructured", "block", "channel", "n:m", "frozen")
#: Integer id of each rule, as stored in the wrapper's ``rule`` variable.
RULE_IDS = {"unstructured": 0, "block": 1, "n:m": 2, "frozen": 3}
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Granularity:
    """A parsed granularity.

    Attributes:
      kind: one of `GRANULARITIES`.
      block_size: ``(bh, bw)`` for ``block`` (Dense kernels; others fall back
        to ``unstructured``).
      n, m: for ``n:m``: keep ``n`` of every ``m`` consecutive input weights.
    """

    kind: str
    block_size: tuple[int, int] = (4, 1)
    n: int = 2
    m: int = 4

    @property
    def name(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "n:m" else self.kind

    @property
    def rule_id(self) -> int:
        return RULE_IDS[self.kind]

    def __str__(self) -> str:
        return self.name


def parse_granularity(value: Any, block_size: tuple[int, int] | None = None) -> Granularity:
    """``"unstructured" | "block" | "channel" | "frozen" | "N:M"`` (or a `Granularity`) -> `Granularity`.

    Raises ValueError naming the valid values.
    """
    if isinstance(value, Granularity):
        return value
    bs = check_block_size(block_size) if block_size is not None else (4, 1)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("unstructured", "block", "channel", "frozen"):
            return Granularity(v, bs)
        m = _NM.match(v)
        if m:
            n, mm = int(m.group(1)), int(m.group(2))
            if not 1 <= n < mm:
                raise ValueError(f"granularity {value!r}: N:M needs 1 <= N < M (keep N of every M weights). Fix: pass e.g. '2:4'")
            return Granularity("n:m", bs, n, mm)
    raise ValueError(
        f"unknown granularity {value!r}. Valid: 'unstructured', 'block' (with block_size, Dense kernels), "
        "'channel' (whole output channels), 'N:M' such as '2:4' (keep N of every M input weights), 'frozen' (masks never change). "
        "Fix: pass one of those, e.g. granularity='unstructured'"
    )


def check_block_size(block_size: Any) -> tuple[int, int]:
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1 for b in block_size)
    ):
        raise ValueError(f"block_size must be a pair of positive ints like (4, 1), got {block_size!r}. Fix: e.g. block_size=(1, 4)")
    return int(block_size[0]), int(block_size[1])


def out_axis(ndim: int, transpose: bool = False) -> int:
    """Axis of the output channels: last, or -2 for ConvTranspose kernels (kh, kw, out, in)."""
    return ndim - 2 if transpose and ndim >= 2 else ndim - 1


def _in_axis(ndim: int, transpose: bool = False) -> int:
    """Axis of the input channels: -2, or last for ConvTranspose kernels."""
    if ndim < 2:
        return 0
    return ndim - 1 if transpose else ndim - 2


def layer_units(shape: tuple[int, ...], g: Granularity, transpose: bool = False) -> tuple[int, int, str | None]:
    """``(n_units, weights_per_unit, reason_not_supported)`` of one kernel under rule ``g``.

    ``reason`` is None when the rule applies; otherwise the plan must leave
    the layer dense (``n:m`` on an input axis not divisible by M) or the
    rule falls back to ``unstructured`` (``block`` on a non-2-D kernel,
    reported with ``n_units = size``).
    """
    size = int(np.prod(shape))
    if g.kind in ("unstructured", "frozen"):
        return size, 1, None
    if g.kind == "block":
        if len(shape) != 2:
            return size, 1, None  # convolutions: element-wise (as tfmot)
        bh, bw = g.block_size
        if shape[0] % bh or shape[1] % bw:
            return size, 1, f"kernel {tuple(shape)} is not a multiple of block {g.block_size}: pruned element-wise"
        return (shape[0] // bh) * (shape[1] // bw), bh * bw, None
    if g.kind == "channel":
        raise ValueError("channel groups are planned by tfprune.plan(model, macs=..., granularity='channel'), not per layer")
    if g.kind == "n:m":
        cin = int(shape[_in_axis(len(shape), transpose)])
        if cin % g.m:
            return 0, 0, f"input size {cin} is not a multiple of M={g.m}"
        return size // g.m, g.m - g.n, None
    raise ValueError(f"unknown rule {g.kind!r}")


def kept_count(n_units: int, sparsity: float, min_keep: int = 1) -> int:
    """Units kept at ``sparsity``: ``max(round(n * (1 - s)), min_keep)`` (the rule every mask applies)."""
    return int(max(int(round(n_units * (1.0 - float(sparsity)))), min(min_keep, n_units)))


def channels_to_remove(n_channels: int, sparsity: float) -> int:
    """Whole channels masked at ``sparsity``; at least one channel stays."""
    return n_channels - kept_count(n_channels, sparsity)


# --------------------------------------------------------------------- numpy
def _keep_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask keeping the ``k`` largest scores; ties go to the higher index (stable ascending order)."""
    flat = scores.ravel()
    order = np.argsort(flat, kind="stable")
    keep = np.zeros(flat.size, dtype=bool)
    if k > 0:
        keep[order[flat.size - k :]] = True
    return keep.reshape(scores.shape)


def unstructured_mask_np(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """{0, 1} mask keeping ``kept_count(size, s)`` largest |w|."""
    k = np.asarray(kernel)
    return _keep_top(np.abs(k), kept_count(k.size, sparsity)).astype(k.dtype)


def block_mask_np(kernel: np.ndarray, sparsity: float, block_size: tuple[int, int]) -> np.ndarray:
    """{0, 1} mask of a 2-D kernel in (bh, bw) blocks, scored by mean |w| (kernel dims must be multiples)."""
    k = np.asarray(kernel)
    bh, bw = block_size
    h, w = k.shape
    pooled = np.abs(k).reshape(h // bh, bh, w // bw, bw).mean(axis=(1, 3))
    keep = _keep_top(pooled, kept_count(pooled.size, sparsity))
    return np.repeat(np.repeat(keep, bh, axis=0), bw, axis=1).astype(k.dtype)


def nm_zeros(sparsity: float, n: int, m: int) -> int:
    """Zeros per group of M at ramp value ``sparsity``: ``min(floor(s * M + 1e-6), M - N)``."""
    return int(min(math.floor(float(sparsity) * m + 1e-6), m - n))


def nm_mask_np(kernel: np.ndarray, sparsity: float, n: int, m: int, transpose: bool = False) -> np.ndarray:
    """{0, 1} N:M mask: in every group of M consecutive input weights of one output, zero the `nm_zeros` smallest |w|.

    At ``sparsity >= (M - N) / M`` every group keeps exactly N.
    """
    k = np.asarray(kernel)
    ax = _in_axis(k.ndim, transpose)
    moved = np.moveaxis(k, ax, -1)
    groups = np.abs(moved).reshape(-1, m)
    z = nm_zeros(sparsity, n, m)
    ranks = np.argsort(np.argsort(groups, axis=1, kind="stable"), axis=1, kind="stable")
    keep = (ranks >= z).astype(k.dtype).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(keep, -1, ax))


# ------------------------------------------------------------------ tensorflow
def _keep_top_tf(tf: Any, scores: Any, k: Any) -> Any:
    """TF twin of `_keep_top` on a 1-D tensor: a bool mask keeping ``k`` largest (stable ties)."""
    n = tf.size(scores)
    order = tf.argsort(scores, stable=True)
    ranks = tf.scatter_nd(tf.expand_dims(order, 1), tf.range(n), tf.expand_dims(n, 0))
    return ranks >= n - k


def _kept_tf(tf: Any, n_units: Any, sparsity: Any) -> Any:
    n = tf.cast(n_units, tf.float32)
    return tf.cast(tf.maximum(tf.round(n * (1.0 - tf.cast(sparsity, tf.float32))), 1.0), tf.int32)


def mask_tf(kernel: Any, sparsity: Any, g: Granularity, transpose: bool = False) -> Any:
    """The rule ``g`` in TensorFlow: a mask of ``kernel``'s shape and dtype (graph-safe).

    Static shapes are required (kernels always have them). ``frozen`` is not
    handled here (the wrapper keeps the old mask).
    """
    import tensorflow as tf

    shape = kernel.shape.as_list()
    dtype = kernel.dtype
    a = tf.abs(tf.cast(kernel, tf.float32))
    kind = g.kind
    if kind == "block" and (len(shape) != 2 or shape[0] % g.block_size[0] or shape[1] % g.block_size[1]):
        kind = "unstructured"
    if kind == "n:m" and layer_units(tuple(shape), g, transpose)[2] is not None:
        kind = "unstructured"
    if kind == "unstructured":
        flat = tf.reshape(a, [-1])
        keep = _keep_top_tf(tf, flat, _kept_tf(tf, tf.size(flat), sparsity))
        return tf.cast(tf.reshape(keep, shape), dtype)
    if kind == "block":
        bh, bw = g.block_size
        h, w = shape
        pooled = tf.reduce_mean(tf.reshape(a, [h // bh, bh, w // bw, bw]), axis=[1, 3])
        keep = tf.reshape(_keep_top_tf(tf, tf.reshape(pooled, [-1]), _kept_tf(tf, tf.size(pooled), sparsity)), [h // bh, w // bw])
        keep = tf.repeat(tf.repeat(keep, bh, axis=0), bw, axis=1)
        return tf.cast(keep, dtype)
    if kind == "n:m":
        ax = _in_axis(len(shape), transpose)
        moved = tf.experimental.numpy.moveaxis(a, ax, -1)
        mshape = moved.shape.as_list()
        groups = tf.reshape(moved, [-1, g.m])
        z = tf.minimum(tf.cast(tf.floor(tf.cast(sparsity, tf.float32) * g.m + 1e-6), tf.int32), g.m - g.n)
        ranks = tf.argsort(tf.argsort(groups, axis=1, stable=True), axis=1, stable=True)
        keep = tf.cast(ranks >= z, dtype)
        return tf.experimental.numpy.moveaxis(tf.reshape(keep, mshape), -1, ax)
    raise ValueError(f"mask_tf: unsupported rule {g.kind!r}")
