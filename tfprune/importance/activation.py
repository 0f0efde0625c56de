"""``capacity_activation``: How Compact?'s layer-wise capacity measured on the representation (needs data) — **our formula**.

How Compact? (Jung, Kim & Choe 2019) assesses the compactness of a layer's
*representation*. Here a layer's outputs on calibration inputs are read
(every spatial position of every image is one sample of its ``O`` output
channels); their ``O x O`` correlation matrix ``C`` gives the capacity

    capacity = effective_rank(C) / O,   in (0, 1]

(effective rank: Roy & Vetterli 2007, ``exp(H(p))`` with ``p`` the
eigenvalues of ``C`` over their sum). A layer whose channels are strongly
correlated (its features span few directions) is compact: low capacity, and
more of its channels (or weights) can go. Correlation, not covariance: a
per-channel scale, such as a BatchNorm after the layer, does not change it.
A channel that is constant on the data adds no direction (it counts in
``O`` but not in the rank).

Why: after a short training the kernels are still close to their random
start and the weight capacities (``capacity_energy``, ``capacity_spectral``)
come out nearly equal for every channel group, so they hardly steer a
channel allocation; the representations already differ. As group
importance for ``tfprune.plan(granularity="channel", allocation="importance")`` it was not better
than ``uniform`` on the MNIST ResNet-20 (``--methods importance_activation``
in benchmarks/structured.py).

Options: ``n_samples`` (images, default 256), ``batch_size`` (64),
``max_rows`` (positions sampled per image and layer, default 64), ``seed``.
The model is only read (a pruning-wrapped one is stripped first). Layers that
are not top-level layers of the model, and so cannot be probed, get the median
score (listed in ``details["not_probed"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune.importance.base import ImportanceContext, register_importance
from tfprune.importance.capacity import entropy_rank

__all__ = ["CorrelationAccumulator", "correlation_capacity"]


class CorrelationAccumulator:
    """Streaming mean and second moment of ``(rows, O)`` samples, in float64; `correlation` at the end.

    Rows are shifted by the first batch's mean before they are summed, so channels whose mean is far
    larger than their spread keep their precision. Nothing depends on the absolute scale of the values.
    """

    def __init__(self, n_channels: int) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.sum = np.zeros(n_channels)
        self.outer = np.zeros((n_channels, n_channels))

    def add(self, rows: np.ndarray) -> None:
        r = np.asarray(rows, dtype=np.float64).reshape(-1, self.sum.size)
        if self.shift is None:
            self.shift = r.mean(0)
        r = r - self.shift
        self.n += r.shape[0]
        self.sum += r.sum(0)
        self.outer += r.T @ r

    def correlation(self, rel_eps: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
        """``(C, live)``: the correlation matrix of the channels that vary (``live``, a bool mask).

        A channel is live when its variance exceeds ``rel_eps`` times the largest variance of the layer:
        relative, so a layer whose values are all tiny (e.g. 1e-6 deep in a randomly initialised
        network) is measured like any other.
        """
        if self.n < 2:
            raise ValueError("need at least 2 samples for a correlation")
        mean = self.sum / self.n
        cov = self.outer / self.n - np.outer(mean, mean)
        var = np.diag(cov).copy()
        top = float(var.max())
        live = var > rel_eps * top if top > 0 else np.zeros(var.size, bool)
        sd = np.sqrt(var[live])
        return cov[np.ix_(live, live)] / np.outer(sd, sd), live


def correlation_capacity(corr: np.ndarray, n_channels: int) -> float:
    """Effective rank of a correlation matrix over ``n_channels``, in (0, 1] (tiny floor when nothing varies)."""
    if corr.size == 0:
        return 1e-6
    ev = np.clip(np.linalg.eigvalsh((corr + corr.T) / 2.0), 0.0, None)
    return float(min(max(entropy_rank(ev) / max(int(n_channels), 1), 1e-6), 1.0))


def _inputs(data: Any, n_samples: int) -> Any:
    from tfprune.data import take

    return take(data, n_samples).x


@register_importance("capacity_activation", needs_data=True)
def capacity_activation(ctx: ImportanceContext) -> np.ndarray:
    """Effective rank of each layer's output-channel correlation on data, over its channel count (ours; needs data)."""
    from tfprune._keras import keras_of
    from tfprune.masks.wrapping import is_wrapped, strip

    opts = ctx.options
    n_samples, batch = int(opts.get("n_samples", 256)), int(opts.get("batch_size", 64))
    max_rows = int(opts.get("max_rows", 64))
    rng = np.random.default_rng(int(opts.get("seed", 0)))
    work = strip(ctx.model) if is_wrapped(ctx.model) else ctx.model  # only read: a probe model on its tensors
    top = {layer.name for layer in work.layers}
    names = [n for n in ctx.names if n in top]
    x = _inputs(ctx.data, n_samples)
    probe = keras_of(work).Model(work.inputs, [work.get_layer(n).output for n in names])
    acc = {n: CorrelationAccumulator(int(work.get_layer(n).output.shape[-1])) for n in names}
    for i in range(0, len(x), batch):
        outs = probe(x[i:i + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, o in zip(names, outs):
            o = np.asarray(o)
            per_image = o.reshape(o.shape[0], -1, o.shape[-1])
            if per_image.shape[1] > max_rows:
                pick = rng.choice(per_image.shape[1], max_rows, replace=False)
                per_image = per_image[:, pick]
            acc[n].add(per_image)
    caps = {}
    for n in names:
        corr, _ = acc[n].correlation()
        caps[n] = correlation_capacity(corr, acc[n].sum.size)
    med = float(np.median(list(caps.values()))) if caps else 1.0
    ctx.options["_details"] = {"capacity": caps, "not_probed": [n for n in ctx.names if n not in caps]}
    return np.array([caps.get(n, med) for n in ctx.names])
