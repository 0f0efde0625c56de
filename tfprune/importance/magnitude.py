"""``magnitude``: data-free layer importance = mean |w| of the layer, relative to the largest."""

from __future__ import annotations

import numpy as np

from tfprune.importance.base import ImportanceContext, register_importance


@register_importance("magnitude")
def magnitude(ctx: ImportanceContext) -> np.ndarray:
    """Mean absolute weight of each layer, divided by the largest layer mean (in (0, 1])."""
    means = np.array([float(np.mean(np.abs(k))) for k in ctx.kernels])
    top = means.max() if means.size and means.max() > 0 else 1.0
    return np.maximum(means / top, 1e-6)
