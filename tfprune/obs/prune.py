"""`prune`: Layer-wise OBS on a tf-keras model (light retraining that keeps the zeros: `tfprune.finetune.retrain`).

``new_model, report = tfprune.obs.prune(model, (x, y), targets={"fc1": 0.95, ...})``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from tfprune._keras import check_model
from tfprune.allocation import Allocation, allocate_sparsity
from tfprune.obs import solvers
from tfprune.obs.hessian import layer_hessians, supported
from tfprune.report import Report, Table
from tfprune.schedule import _check_sparsity
from tfprune.wrap import clone, is_wrapped, strip

__all__ = ["prune", "OBSReport", "OBSLayer", "retrain", "wrap_with_masks", "reestimate_batchnorm", "METHODS"]

METHODS = ("lobs", "exact", "magnitude")


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


# Kept importable here (benchmarks, the CLI and shallow use these names); they live in tfprune.finetune.
from tfprune.finetune import freeze_zeros as wrap_with_masks  # noqa: E402
from tfprune.finetune import reestimate_batchnorm, retrain  # noqa: E402
