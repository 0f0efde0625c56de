"""`prune`: Layer-wise OBS on a tf-keras model (light retraining that keeps the zeros: `tfprune.training.finetune.retrain`).

``new_model, report = tfprune.obs.prune(model, (x, y), targets={"fc1": 0.95, ...})``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from tfprune._keras import check_model, is_keras3_object
from tfprune.allocation import Allocation
from tfprune.data import check_inputs
from tfprune.masks.wrapping import clone, is_wrapped, strip
from tfprune.obs import solvers
from tfprune.obs.hessian import layer_hessians, layer_matrix, set_layer_matrix, supported
from tfprune.planning import DEFAULT_ALLOCATION, DEFAULT_IMPORTANCE, Plan, plan
from tfprune.report import Report, Table
from tfprune.validation import check_int, fraction_map, number, one_of

__all__ = ["prune", "OBSReport", "OBSLayer", "METHODS", "DEFAULT_SOLVER"]

METHODS = ("lobs", "lobs_paper", "exact", "magnitude")
#: `prune`'s default solver (the CLI's ``tfprune obs --solver`` default too).
DEFAULT_SOLVER = "lobs"


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


def prune(
    model: Any,
    data: Any,
    sparsity: float | None = None,
    *,
    targets: Mapping[str, float] | Allocation | Plan | None = None,
    tolerance: float | Mapping[str, float] | None = None,
    solver: str = DEFAULT_SOLVER,
    importance: Any = DEFAULT_IMPORTANCE,
    allocation: str = DEFAULT_ALLOCATION,
    damp: float = 1e-3,
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
      sparsity: total fraction of the OBS layers' kernel weights removed,
        split per layer by `tfprune.plan` (``importance``, ``allocation``;
        the same defaults as the callback).
      targets: instead of ``sparsity``: per-layer fractions removed (a dict,
        a `Plan` or an `Allocation`).
      tolerance: instead of either: stop each layer when its summed
        saliency passes this delta E (a float for all, or a dict).
      solver: ``lobs`` (the L-OBS ranking, then the joint OBS correction of
        each output unit's removed weights), ``lobs_paper`` (the authors'
        procedure as their code runs it: inverse of H + 1e-6 I, biases
        pruned too and counted in the target, per-weight corrections with
        the original inverse; ``damp`` and ``tolerance`` do not apply),
        ``exact`` (greedy with inverse downdates) or ``magnitude`` (no
        second order; a baseline). See `tfprune.obs.solvers`.
      importance, allocation: scorer and allocator of the plan (``sparsity`` only).
      damp: Hessian damping relative to its mean diagonal.
      n_samples: calibration samples used (None: all).
      max_bytes: refuse layers whose H and inverse need more memory.

    Returns:
      ``(pruned_model, OBSReport)``; the pruned model is plain (no wrappers),
      use `tfprune.training.finetune.retrain` for light retraining that keeps these zeros.
    """
    if is_keras3_object(model):
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(prune, model, data, sparsity, targets=targets, tolerance=tolerance, solver=solver, importance=importance,
                                allocation=allocation, damp=damp, n_samples=n_samples, batch_size=batch_size, max_bytes=max_bytes,
                                progress=progress)
    check_model(model)
    one_of(solver, "solver", METHODS)
    damp = number(damp, "damp (Hessian damping, relative to its mean diagonal)", minimum=0.0)
    batch_size = check_int(batch_size, "batch_size", 1)
    if n_samples is not None:
        n_samples = check_int(n_samples, "n_samples", 1)
    given = [name for name, v in (("sparsity", sparsity), ("targets", targets), ("tolerance", tolerance)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of sparsity= (a total), targets= (per layer) or tolerance= (delta E per layer); got {given or 'none'}")
    check_inputs(model, data, "data (calibration inputs)")
    t_start = time.perf_counter()
    work = strip(model) if is_wrapped(model) else clone(model)
    candidates = [layer for layer in work.layers if supported(layer)]
    names = [layer.name for layer in candidates]
    if sparsity is not None:
        from tfprune.inventory.layers import prunable_layers

        obs_layers = [p for p in prunable_layers(work) if p.name in names]
        targets = plan(work, sparsity, importance=importance, allocation=allocation, data=data, layers=obs_layers).targets
    if targets is not None:
        if isinstance(targets, (Allocation, Plan)):
            targets = targets.targets
        if not isinstance(targets, Mapping):
            raise TypeError(f"targets must be a dict {{layer: sparsity}}, a Plan or an Allocation; for a total use sparsity={targets!r}")
        unknown = [k for k in targets if k not in names]
        if unknown:
            raise ValueError(f"OBS targets name unknown or unsupported layer(s) {unknown}; OBS layers (Dense/Conv1D/Conv2D): {names}. Fix: use those names")
        plan_ = {k: v for k, v in fraction_map(targets, "targets", names).items() if v > 0}
    else:
        tol = dict(tolerance) if isinstance(tolerance, Mapping) else {n: tolerance for n in names}
        if not tol:
            raise ValueError(f"tolerance={{}} names no layer, so nothing would be pruned. Fix: give a number, or a dict over {names}")
        for k, v in tol.items():
            if k not in names:
                raise ValueError(f"tolerance names unknown or unsupported layer {k!r}; OBS layers: {names}. Fix: use those names")
            tol[k] = number(v, f"tolerance[{k!r}]" if isinstance(tolerance, Mapping) else "tolerance", minimum=0.0, what="a delta E (a finite number)")
        plan_ = tol
    method = solver
    layers = [layer for layer in work.layers if layer.name in plan_]
    report = OBSReport(method)
    t0 = time.perf_counter()
    if method == "lobs_paper" and targets is None:
        raise ValueError("solver='lobs_paper' follows the authors' fixed ratios: give sparsity= or targets=; for a tolerance use solver='lobs'")
    H = {} if method == "magnitude" else layer_hessians(work, [layer.name for layer in layers], data, batch_size, n_samples, max_bytes, progress, solver=method)
    report.hessian_seconds = time.perf_counter() - t0
    if isinstance(data, (tuple, list)):
        report.n_samples = int(min(len(np.asarray(data[0])), n_samples or 1 << 62))
    elif hasattr(data, "shape"):
        report.n_samples = int(min(len(data), n_samples or 1 << 62))
    for layer in layers:
        t1 = time.perf_counter()
        W, F = layer_matrix(layer)
        n_kernel = F * W.shape[1]
        n_prune = int(round(plan_[layer.name] * n_kernel)) if targets is not None else None
        tol = plan_[layer.name] if targets is None else None
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
            Hl = H[layer.name]
            try:
                if method == "lobs_paper":  # the authors count biases in the layer's budget and prune them too
                    Wn, _ = solvers.lobs_paper(W, solvers.paper_inverse(Hl), int(round(plan_[layer.name] * W.size)))
                else:
                    Hinv, A = solvers.damped_inverse(Hl, damp, return_damped=True)
                    if method == "lobs":
                        Wn, _ = solvers.lobs(W, Hinv, prunable_rows=F, n_prune=n_prune, tolerance=tol, H=A)
                    else:
                        Wn, _ = solvers.exact(W, Hinv, prunable_rows=F, n_prune=n_prune, tolerance=tol)
            except solvers.NotPositiveDefiniteError as err:
                raise solvers.NotPositiveDefiniteError(f"layer {layer.name!r}: {err}") from err
            dE = solvers.layer_error(W, Wn, Hl)
        set_layer_matrix(layer, Wn, F)
        kernel = Wn[:F]
        report.layers.append(
            OBSLayer(layer.name, n_kernel, float(np.count_nonzero(kernel == 0)) / n_kernel, dE, float(np.linalg.norm(kernel)), time.perf_counter() - t1)
        )
    if method != "magnitude":
        frob = [r.frobenius for r in report.layers]
        report.bound = float(sum(np.prod(frob[k + 1 :]) * np.sqrt(max(r.delta_e, 0.0)) for k, r in enumerate(report.layers)))
    report.seconds = time.perf_counter() - t_start
    return work, report

