"""Layer-wise OBS solvers (numpy only; Dong, Chen & Pan 2017; Frantar et al. 2022).

Conventions. A layer is a matrix ``W`` of shape (d, O): one column per output
unit, rows = inputs in the order of the layer's Hessian ``H`` (d, d); when the
layer has a bias, its row is the last one (``x = [input; 1]``) and is
corrected but never pruned (``prunable_rows = d - 1``). The layer error is
E = (1/2n) sum ||z_hat - z||^2 = 1/2 sum_j dW_j^T H dW_j (`layer_error`).

* `lobs`: saliency L_q = w_q^2 / (2 [H^-1]_qq), ranked once over the whole
  layer; weights are removed in that order with the OBS correction
  dW_j = -(w_q / [H^-1]_qq) H^-1 e_q on their own column only; stop at the
  target count or when the summed saliencies pass ``tolerance``.
  Vectorised: round k removes the k-th weight of every column at once (one
  numpy op per round, not per weight).
* `exact`: per column, greedy removal of the weight with the smallest
  current saliency, then the downdate H^-1 <- H^-1 - H^-1 e_q e_q^T H^-1 / [H^-1]_qq
  (as in Optimal Brain Compression). Columns run in parallel in chunks; the
  downdated inverse is kept as H0^-1 - U U^T, so a step is one batched
  matrix-vector product. Per-column counts follow the L-OBS ranking.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["damped_inverse", "lobs", "exact", "layer_error", "selection_counts"]


def damped_inverse(H: np.ndarray, damp: float = 1e-3) -> np.ndarray:
    """(H + lambda I)^-1 with lambda = damp * mean(diag(H)), via Cholesky.

    Falls back to an eigen-decomposition with eigenvalues clipped at lambda
    (and warns) when Cholesky fails.
    """
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square, got shape {H.shape}")
    if not np.isfinite(H).all():
        raise ValueError("H has NaN or inf entries")
    lam = float(damp) * max(float(np.mean(np.diag(H))), 1e-12)
    A = H + lam * np.eye(H.shape[0])
    try:
        L = np.linalg.cholesky(A)
        Linv = np.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True) if hasattr(np.linalg, "solve_triangular") else np.linalg.inv(L)
        return Linv.T @ Linv
    except np.linalg.LinAlgError:
        warnings.warn(f"Cholesky of the damped Hessian failed (damp={damp}); using a clipped eigen-decomposition", stacklevel=2)
        vals, vecs = np.linalg.eigh(A)
        vals = np.maximum(vals, lam)
        return (vecs / vals) @ vecs.T


def layer_error(W_old: np.ndarray, W_new: np.ndarray, H: np.ndarray) -> float:
    """delta E = 1/2 sum_j dW_j^T H dW_j (the layer's reconstruction error, exact for E's quadratic form)."""
    D = np.asarray(W_new, np.float64) - np.asarray(W_old, np.float64)
    return 0.5 * float(np.einsum("ij,ik,kj->", D, np.asarray(H, np.float64), D))


def _saliency(W: np.ndarray, Hinv: np.ndarray, prunable_rows: int) -> np.ndarray:
    d = np.diag(Hinv)[:prunable_rows]
    return np.square(W[:prunable_rows]) / (2.0 * d[:, None])


def selection_counts(W: np.ndarray, Hinv: np.ndarray, prunable_rows: int, n_prune: int | None = None, tolerance: float | None = None):
    """The L-OBS global ranking: the boolean (prunable_rows, n_out) set to remove and its summed saliency.

    Exactly ``n_prune`` weights, or (with ``tolerance``) the longest prefix of
    the ranking whose summed saliency stays <= tolerance.
    """
    L = _saliency(W, Hinv, prunable_rows)
    order = np.argsort(L, axis=None, kind="stable")
    if n_prune is None and tolerance is None:
        raise ValueError("give n_prune or tolerance")
    if n_prune is None:
        csum = np.cumsum(L.ravel()[order])
        n_prune = int(np.searchsorted(csum, float(tolerance), side="right"))
    n_prune = int(min(max(n_prune, 0), L.size))
    sel = np.zeros(L.size, dtype=bool)
    sel[order[:n_prune]] = True
    return sel.reshape(L.shape), float(L.ravel()[order[:n_prune]].sum())


def lobs(W: np.ndarray, Hinv: np.ndarray, prunable_rows: int | None = None, n_prune: int | None = None, tolerance: float | None = None):
    """L-OBS: prune by saliency ranked once, sequential OBS corrections per column.

    Returns ``(W_new, mask)`` with mask (d, n_out) True = kept; pruned entries are exactly 0.
    """
    W = np.array(W, dtype=np.float64)
    d, n_out = W.shape
    p = d if prunable_rows is None else int(prunable_rows)
    sel, _ = selection_counts(W, Hinv, p, n_prune, tolerance)
    L = _saliency(W, Hinv, p)
    # per column: pruned rows in ranking order
    order = np.argsort(np.where(sel, L, np.inf), axis=0, kind="stable")  # (p, n_out)
    counts = sel.sum(0)
    diag = np.diag(Hinv)
    for k in range(int(counts.max()) if counts.size else 0):
        cols = np.nonzero(counts > k)[0]
        q = order[k, cols]
        coef = W[q, cols] / diag[q]
        W[:, cols] -= Hinv[:, q] * coef[None, :]
    mask = np.ones_like(W, dtype=bool)
    mask[:p] = ~sel
    W[~mask] = 0.0
    return W, mask


def exact(W: np.ndarray, Hinv: np.ndarray, prunable_rows: int | None = None, n_prune: int | None = None,
          tolerance: float | None = None, counts: np.ndarray | None = None, chunk: int = 8, dtype: type = np.float32, threads: int | None = None):
    """Greedy OBS with inverse-Hessian downdates, per column, columns in parallel.

    ``counts`` (n_out,) gives how many weights each column loses; by default the
    per-column counts of the L-OBS ranking for ``n_prune`` / ``tolerance``.
    Returns ``(W_new, mask)``.
    """
    W = np.array(W, dtype=np.float64)
    Hinv = np.asarray(Hinv, dtype=np.float64)
    d, n_out = W.shape
    p = d if prunable_rows is None else int(prunable_rows)
    if counts is None:
        sel, _ = selection_counts(W, Hinv, p, n_prune, tolerance)
        counts = sel.sum(0)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (n_out,) or (counts < 0).any() or (counts > p).any():
        raise ValueError(f"counts must be (n_out,) in [0, {p}]")
    mask = np.ones((d, n_out), dtype=bool)
    diag0 = np.diag(Hinv)

    def run_chunk(cols: np.ndarray) -> None:
        C = len(cols)
        kmax = int(counts[cols].max()) if C else 0
        if kmax == 0:
            return
        theta = W[:, cols].T.copy()  # (C, d)
        dg = np.tile(diag0, (C, 1))  # current diag of H^-1 per column
        U = np.zeros((C, d, kmax), dtype=dtype)  # the memory-bound part: float32 halves the traffic
        removed = np.zeros((C, d), dtype=bool)
        removed[:, p:] = True  # the bias row is never a candidate
        ar = np.arange(C)
        for t in range(kmax):
            active = counts[cols] > t
            score = np.where(removed, np.inf, np.square(theta) / np.maximum(dg, 1e-300))
            q = np.argmin(score, axis=1)
            h = Hinv[:, q].T.copy()  # (C, d): column q of H0^-1
            if t:
                h -= np.matmul(U[:, :, :t], U[ar, q, :t][:, :, None])[:, :, 0].astype(np.float64)
            hqq = np.maximum(h[ar, q], 1e-300)
            coef = np.where(active, theta[ar, q] / hqq, 0.0)
            theta -= h * coef[:, None]
            u = h / np.sqrt(hqq)[:, None]
            u[~active] = 0.0
            U[:, :, t] = u
            dg -= np.square(u)
            act = np.nonzero(active)[0]
            removed[act, q[act]] = True
            theta[act, q[act]] = 0.0
        cm = ~removed
        cm[:, p:] = True
        theta[~cm] = 0.0
        W[:, cols] = theta.T
        mask[:, cols] = cm.T

    chunks = [np.arange(start, min(start + chunk, n_out)) for start in range(0, n_out, chunk)]
    # Largest work first; numpy's BLAS and ufunc loops release the GIL, so threads use every core.
    chunks.sort(key=lambda c: -int(counts[c].max()))
    workers = max(1, min(len(chunks), os.cpu_count() or 1)) if threads is None else max(1, int(threads))
    if workers == 1:
        for cols in chunks:
            run_chunk(cols)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run_chunk, chunks))
    return W, mask
