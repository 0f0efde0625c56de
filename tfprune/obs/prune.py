"""`prune`: Layer-wise OBS on a tf-keras model, plus light retraining that keeps the OBS zeros.

``new_model, report = tfprune.obs.prune(model, (x, y), targets={"fc1": 0.95, ...})``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from tfprune._keras import check_model, keras
from tfprune.allocation import Allocation, allocate_sparsity
from tfprune.obs import solvers
from tfprune.obs.hessian import layer_hessians, supported
from tfprune.report import Report, Table
from tfprune.schedule import _check_sparsity
from tfprune.wrap import clone, is_wrapped, strip, wrap

__all__ = ["prune", "OBSReport", "OBSLayer", "retrain", "wrap_with_masks", "reestimate_batchnorm", "METHODS"]

METHODS = ("lobs", "exact", "magnitude")
_NEVER = 2**62


@dataclass
class OBSLayer:
    name: str
    n_params: int
    sparsity: float
    delta_e: float
    frobenius: float
    seconds: float


@dataclass
class OBSReport(Report):
    """Per layer: sparsity (fraction of kernel weights removed), delta E, ||W_hat||_F, seconds.

    ``bound`` is the paper's sum_k (prod_{j>k} ||W_hat_j||_F) sqrt(delta E_k)
    over the pruned layers in network order (valid for 1-Lipschitz activations).
    """

    method: str
    layers: list[OBSLayer] = field(default_factory=list)
    bound: float = 0.0
    hessian_seconds: float = 0.0
    seconds: float = 0.0
    n_samples: int = 0

    @property
    def total_sparsity(self) -> float:
        n = sum(r.n_params for r in self.layers)
        return sum(r.sparsity * r.n_params for r in self.layers) / max(n, 1)

    def _extra_dict(self) -> dict[str, Any]:
        return {"total_sparsity": self.total_sparsity}

    def _blocks(self) -> list[str | Table]:
        rows = [[r.name, r.n_params, f"{r.sparsity:.4f}", f"{r.delta_e:.4g}", f"{r.frobenius:.3f}", f"{r.seconds:.2f}"] for r in self.layers]
        return [
            f"OBS [{self.method}] on {self.n_samples} calibration samples: total sparsity {self.total_sparsity:.4f}, "
            f"bound {self.bound:.4g}, Hessians {self.hessian_seconds:.2f} s, total {self.seconds:.2f} s",
            Table(["layer", "params", "sparsity", "delta E", "||W||_F", "seconds"], rows, "lrrrrr"),
        ]


def _layer_matrix(layer: Any) -> tuple[np.ndarray, int]:
    k = layer.kernel.numpy().astype(np.float64)
    W = k.reshape(-1, k.shape[-1])
    F = W.shape[0]
    if layer.use_bias:
        W = np.vstack([W, layer.bias.numpy().astype(np.float64)[None, :]])
    return W, F


def _set_layer_matrix(layer: Any, W: np.ndarray, F: int) -> None:
    layer.kernel.assign(W[:F].reshape(layer.kernel.shape).astype(layer.kernel.dtype.as_numpy_dtype))
    if layer.use_bias:
        layer.bias.assign(W[F].astype(layer.bias.dtype.as_numpy_dtype))


def prune(
    model: Any,
    data: Any,
    targets: float | Mapping[str, float] | Allocation | None = None,
    tolerance: float | Mapping[str, float] | None = None,
    method: str = "lobs",
    damp: float = 1e-3,
    allocation: str = "uniform",
    n_samples: int | None = 10000,
    batch_size: int = 256,
    max_bytes: int = 2 * 1024**3,
    progress: bool = True,
) -> tuple[Any, OBSReport]:
    """Prune each Dense/Conv layer by second-order saliency and correct the rest.

    Args:
      model: a tf-keras model (flat; wrapped models are stripped first). Not modified.
      data: calibration inputs ``x``, ``(x, y)`` or a tf.data dataset; the
        Hessians use the inputs each layer sees in the unpruned network.
      targets: per-layer sparsity (fraction of kernel weights removed): a
        dict, an `Allocation`, or one float split by ``allocation``.
      tolerance: instead of targets, stop each layer when its summed
        saliency passes this delta E (a float for all, or a dict).
      method: ``lobs`` (the paper), ``exact`` (greedy with inverse downdates)
        or ``magnitude`` (no second order; a baseline).
      damp: Hessian damping relative to its mean diagonal.
      n_samples: calibration samples used (None: all).
      max_bytes: refuse layers whose H and inverse need more memory.

    Returns:
      ``(pruned_model, OBSReport)``; the pruned model is plain (no wrappers),
      use `retrain` for light retraining that keeps these zeros.
    """
    check_model(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if (targets is None) == (tolerance is None):
        raise ValueError("give exactly one of targets= (sparsity per layer) or tolerance= (delta E per layer)")
    t_start = time.perf_counter()
    work = strip(model) if is_wrapped(model) else clone(model)
    candidates = [layer for layer in work.layers if supported(layer)]
    if targets is not None:
        if isinstance(targets, Allocation):
            targets = targets.targets
        if not isinstance(targets, Mapping):
            targets = allocate_sparsity(work, float(targets), method=allocation).targets
        names = [layer.name for layer in candidates]
        unknown = [k for k in targets if k not in names]
        if unknown:
            raise ValueError(f"OBS targets name unknown or unsupported layer(s) {unknown}; OBS layers (Dense/Conv1D/Conv2D): {names}")
        plan = {k: _check_sparsity(v, f"targets[{k!r}]") for k, v in targets.items() if v > 0}
    else:
        names = [layer.name for layer in candidates]
        tol = dict(tolerance) if isinstance(tolerance, Mapping) else {n: float(tolerance) for n in names}
        for k, v in tol.items():
            if k not in names:
                raise ValueError(f"tolerance names unknown or unsupported layer {k!r}; OBS layers: {names}")
            if not v >= 0:
                raise ValueError(f"tolerance[{k!r}] must be >= 0 (a delta E), got {v!r}")
        plan = tol
    layers = [layer for layer in work.layers if layer.name in plan]
    report = OBSReport(method)
    t0 = time.perf_counter()
    H = {} if method == "magnitude" else layer_hessians(work, [layer.name for layer in layers], data, batch_size, n_samples, max_bytes, progress)
    report.hessian_seconds = time.perf_counter() - t0
    if isinstance(data, (tuple, list)):
        report.n_samples = int(min(len(np.asarray(data[0])), n_samples or 1 << 62))
    elif hasattr(data, "shape"):
        report.n_samples = int(min(len(data), n_samples or 1 << 62))
    for layer in layers:
        t1 = time.perf_counter()
        W, F = _layer_matrix(layer)
        n_kernel = F * W.shape[1]
        n_prune = int(round(plan[layer.name] * n_kernel)) if targets is not None else None
        tol = plan[layer.name] if targets is None else None
        if method == "magnitude":
            if n_prune is None:
                raise ValueError("method='magnitude' needs targets, not a tolerance")
            flat = np.abs(W[:F]).ravel()
            idx = np.argsort(flat, kind="stable")[:n_prune]
            Wn = W.copy()
            block = Wn[:F].ravel()
            block[idx] = 0
            Wn[:F] = block.reshape(F, -1)
            dE = float("nan")
        else:
            Hinv = solvers.damped_inverse(H[layer.name], damp)
            solve = solvers.lobs if method == "lobs" else solvers.exact
            Wn, _ = solve(W, Hinv, prunable_rows=F, n_prune=n_prune, tolerance=tol)
            dE = solvers.layer_error(W, Wn, H[layer.name])
        _set_layer_matrix(layer, Wn, F)
        kernel = Wn[:F]
        report.layers.append(
            OBSLayer(layer.name, n_kernel, float(np.count_nonzero(kernel == 0)) / n_kernel, dE, float(np.linalg.norm(kernel)), time.perf_counter() - t1)
        )
    if method != "magnitude":
        frob = [r.frobenius for r in report.layers]
        report.bound = float(sum(np.prod(frob[k + 1 :]) * np.sqrt(max(r.delta_e, 0.0)) for k, r in enumerate(report.layers)))
    report.seconds = time.perf_counter() - t_start
    return work, report


def wrap_with_masks(model: Any) -> Any:
    """Wrap every prunable layer with masks = (kernel != 0), frozen: tfmot never recomputes them.

    Train the result with ``tfmot.sparsity.keras.UpdatePruningStep()``; the
    zeros stay exactly where they are.
    """
    from tfprune.layers import prunable_layers

    w = wrap(model)
    for p in prunable_layers(w):
        mask_var = p.layer.pruning_vars[0][1]
        mask_var.assign((getattr(p.inner, p.weight).numpy() != 0).astype(mask_var.dtype.as_numpy_dtype))
        p.schedule.set(begin_step=_NEVER, end_step=_NEVER)
    return w


def retrain(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    loss: Any = None,
    seed: int = 0,
) -> Any:
    """Light retraining for ``steps`` optimizer steps that keeps the model's zeros exactly.

    Returns a new plain model (``model`` is not modified).
    """
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_callbacks

    if steps <= 0:
        return clone(model)
    w = wrap_with_masks(model)
    w.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat().batch(batch_size)
    w.fit(ds, epochs=1, steps_per_epoch=int(steps), verbose=0, callbacks=[pruning_callbacks.UpdatePruningStep()])
    return strip(w)


def reestimate_batchnorm(model: Any, x: np.ndarray, batch_size: int = 256) -> Any:
    """Recompute every top-level BatchNormalization's moving mean/variance from ``x`` (in place; returns model).

    The BatchNorms are re-estimated one after another in graph order, each
    from its input computed with the BatchNorms before it already updated
    (a single pass would measure a later BatchNorm's input with the earlier
    ones' stale statistics). Cost: one forward pass of ``x`` up to each
    BatchNorm (2,048 samples on 2 CPU cores: 17.7 s for ResNet-20, 143.5 s
    for ResNet-56, ``python benchmarks/bn_reestimate.py``); a few thousand
    samples are plenty.
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for b in bns:  # model.layers is in topological order for functional models
        upto = keras.Model(model.inputs, b.input)
        total, total_sq, count = None, None, 0
        for i in range(0, len(x), batch_size):
            a = np.asarray(upto(x[i : i + batch_size], training=False), dtype=np.float64)
            a = a.reshape(-1, a.shape[-1])
            total = a.sum(0) if total is None else total + a.sum(0)
            total_sq = (a * a).sum(0) if total_sq is None else total_sq + (a * a).sum(0)
            count += a.shape[0]
        mean = total / count
        b.moving_mean.assign(mean.astype(np.float32))
        b.moving_variance.assign(np.maximum(total_sq / count - mean * mean, 0.0).astype(np.float32))
    return model
