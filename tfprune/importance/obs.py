"""``obs``: second-order importance = relative layer error when the layer alone is OBS-pruned.

For each Dense/Conv layer: H from calibration data, prune to ``sparsity``
(default 0.9) with L-OBS, delta E over the layer's output energy
E0 = 1/2 tr(W^T H W). Layers whose outputs suffer more are more important.
Scores are divided by the largest (in (0, 1]). Other prunable layers
(Embedding, ConvTranspose) get the median score.
"""

from __future__ import annotations

import numpy as np

from tfprune.importance.base import ImportanceContext, register_importance


@register_importance("obs", needs_data=True)
def obs_importance(ctx: ImportanceContext) -> np.ndarray:
    """Relative L-OBS layer error at a given sparsity (second order, needs data)."""
    from tfprune.masks.wrapping import clone, is_wrapped, strip
    from tfprune.obs import solvers
    from tfprune.obs.hessian import layer_hessians, layer_matrix, supported

    sparsity = float(ctx.options.get("sparsity", 0.9))
    work = strip(ctx.model) if is_wrapped(ctx.model) else clone(ctx.model)
    names = [n for n in ctx.names if n in {layer.name for layer in work.layers} and supported(work.get_layer(n))]
    H = layer_hessians(work, names, ctx.data, n_samples=int(ctx.options.get("n_samples", 5000)), progress=bool(ctx.options.get("progress", True)))
    rel = {}
    for name in names:
        W, F = layer_matrix(work.get_layer(name))
        Hinv = solvers.damped_inverse(H[name], float(ctx.options.get("damp", 1e-3)))
        Wn, _ = solvers.lobs(W, Hinv, prunable_rows=F, n_prune=int(round(sparsity * F * W.shape[1])))
        e0 = 0.5 * float(np.einsum("ij,ik,kj->", W, H[name], W))
        rel[name] = solvers.layer_error(W, Wn, H[name]) / max(e0, 1e-12)
    med = float(np.median(list(rel.values()))) if rel else 1.0
    raw = np.array([rel.get(n, med) for n in ctx.names]) + 1e-9
    ctx.options["_details"] = {"relative_delta_e": rel, "sparsity": sparsity}
    return raw / raw.max()
