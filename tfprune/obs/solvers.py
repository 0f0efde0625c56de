"""Layer-wise OBS solvers (numpy/scipy; Dong, Chen & Pan 2017; Frantar et al. 2022).

Conventions. A layer is a matrix ``W`` of shape (d, O): one column per output
unit, rows = inputs in the order of the layer's Hessian ``H`` (d, d); when the
layer has a bias, its row is the last one (``x = [input; 1]``) and is
corrected but never pruned (``prunable_rows = d - 1``), except by
`lobs_paper`, which prunes biases as the authors' code does. ``Hinv`` is the
inverse of the damped Hessian. The layer error is
E = (1/2n) sum ||z_hat - z||^2 = 1/2 sum_j dW_j^T H dW_j (`layer_error`).

* `lobs_paper`: the authors' procedure (github csyhhu/L-OBS, branch ``dev``,
  ``PyTorch/MNIST/prune-weights-LeNet300100.py``), reproduced: every weight and
  bias of the layer scored once by w_q^2 / ([H^-1]_qq + 1e-5) and sorted once;
  removed one at a time in that order, each applying
  dW_j = -(w_q / ([H^-1]_qq + 1e-5)) H^-1 e_q to its own column with the
  weight's current value; H^-1 never downdated; removed weights re-zeroed.
  With `paper_inverse` (inverse of H + 1e-6 I, pinv on failure).
* `lobs` (ours, the default): the same ranking (saliency w_q^2 / (2 [H^-1]_qq),
  biases kept), then per column the joint OBS correction of all its removed
  weights at once, dW_j = -H^-1[:, Q] (H^-1[Q, Q])^-1 w_Q: the optimal weights
  for that mask (what sequential removal with inverse downdates reaches).
  ``update="sequential"`` gives the paper's per-weight corrections instead.
* `exact`: per column, greedy removal of the weight with the smallest current
  saliency, then the downdate H^-1 <- H^-1 - H^-1 e_q e_q^T H^-1 / [H^-1]_qq
  (Optimal Brain Compression). The downdates are the steps of a pivoted
  Cholesky elimination of H^-1, blocked: within a block the pivot columns come
  from the last full update minus the block's own rank-1 terms; at the end of
  a block one rank-b BLAS3 update per column; eliminated rows are dropped
  once they are a quarter of the stored matrix. Same pivots as the textbook
  one-at-a-time greedy (tested against it). float64 throughout; a
  non-positive pivot raises `NotPositiveDefiniteError` (never clamped).
"""

from __future__ import annotations

import contextlib
import os
import queue
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg import cho_factor, cho_solve, lapack

__all__ = [
    "NotPositiveDefiniteError",
    "damped_inverse",
    "paper_inverse",
    "layer_error",
    "selection_counts",
    "lobs",
    "lobs_paper",
    "joint_update",
    "exact",
    "exact_workspace_bytes",
]

PAPER_DAMP = 1e-6  # the authors' H + 1e-6 I (their Woodbury recursion starts from H^-1 = 1e6 I)
PAPER_EPS = 1e-5  # written ``10e-6`` in their code: added to [H^-1]_qq in the score and the update
EXACT_BLOCK = 64
EXACT_WORK_BYTES = 256 * 1024**2
COMPACT = 4  # drop removed rows once they are 1/COMPACT of the stored matrix
SMALL_LAPACK = 2048  # factorisations up to this size run on one BLAS thread


def _one_blas_thread(n: int):
    """Small factorisations on one BLAS thread: as fast, and immune to BLAS threads spinning while
    another process holds the other core (a 785 x 785 Cholesky took 0.3-1.9 s instead of 0.01 s that way)."""
    if n > SMALL_LAPACK:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class NotPositiveDefiniteError(ValueError):
    """A (downdated) inverse Hessian lost positive definiteness; raised instead of clamping."""


def _check_square(H: np.ndarray) -> np.ndarray:
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square, got shape {H.shape}")
    if not np.isfinite(H).all():
        raise ValueError("H has NaN or inf entries")
    return H


def _cholesky_inverse(A: np.ndarray) -> np.ndarray | None:
    """A^-1 by Cholesky (LAPACK potrf + potri), or None when A is not positive definite."""
    c, info = lapack.dpotrf(A, lower=False, clean=True)
    if info != 0:
        return None
    inv, info = lapack.dpotri(c, lower=False)
    if info != 0:
        return None
    upper = np.triu(inv)
    return upper + np.triu(inv, 1).T


def damped_inverse(H: np.ndarray, damp: float = 1e-3, return_damped: bool = False):
    """(H + lambda I)^-1 with lambda = damp * mean(diag(H)), via Cholesky (LAPACK potrf + potri).

    Falls back to an eigen-decomposition with eigenvalues clipped at lambda
    (and warns) when Cholesky fails. With ``return_damped``, returns
    ``(Hinv, A)``: A = H + lambda I, the matrix Hinv inverts (None after the
    fallback, whose Hinv inverts a clipped A).
    """
    H = _check_square(H)
    lam = float(damp) * max(float(np.mean(np.diag(H))), 1e-12)
    A = H + lam * np.eye(H.shape[0])
    with _one_blas_thread(len(A)):
        inv = _cholesky_inverse(A)
    if inv is None:
        warnings.warn(f"Cholesky of the damped Hessian failed (damp={damp}); using a clipped eigen-decomposition", stacklevel=2)
        vals, vecs = np.linalg.eigh(A)
        vals = np.maximum(vals, lam)
        inv, A = (vecs / vals) @ vecs.T, None
    return (inv, A) if return_damped else inv


def paper_inverse(H: np.ndarray, damp: float = PAPER_DAMP) -> np.ndarray:
    """The authors' inverse: ``inv(H + damp I)`` (absolute damping, LU), ``pinv`` when ``inv`` fails."""
    H = _check_square(H)
    A = H + float(damp) * np.eye(H.shape[0])
    with _one_blas_thread(len(A)):
        try:
            return np.linalg.inv(A)
        except np.linalg.LinAlgError:
            return np.linalg.pinv(A)


def layer_error(W_old: np.ndarray, W_new: np.ndarray, H: np.ndarray) -> float:
    """delta E = 1/2 sum_j dW_j^T H dW_j (the layer's reconstruction error, exact for E's quadratic form)."""
    D = np.asarray(W_new, np.float64) - np.asarray(W_old, np.float64)
    return 0.5 * float(np.sum(D * (np.asarray(H, np.float64) @ D)))


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


def _sequential_corrections(W: np.ndarray, Hinv: np.ndarray, order: np.ndarray, counts: np.ndarray, eps: float) -> None:
    """In place: per column j, for its first counts[j] rows in ``order[:, j]``, W[:, j] += -(w_q / (Hinv_qq + eps)) Hinv[:, q].

    Columns do not interact and a correction reads only the weight being
    removed (never one removed before), so round k (the k-th removal of every
    column at once) gives bit for bit the result of the per-weight loop.
    Works on W^T and Hinv^T (rows contiguous); the arithmetic per entry is the loop's.
    """
    diag = np.diag(Hinv)
    cols_of = Hinv.T.copy()  # row q = column q of Hinv (Hinv from an LU inverse is not exactly symmetric)
    Wt = W.T.copy()
    for k in range(int(counts.max()) if counts.size else 0):
        cols = np.nonzero(counts > k)[0]
        q = order[k, cols]
        coef = -Wt[cols, q] / (diag[q] + eps)
        Wt[cols] += cols_of[q] * coef[:, None]
    W[...] = Wt.T


def lobs_paper(W: np.ndarray, Hinv: np.ndarray, n_prune: int, prunable_rows: int | None = None, eps: float = PAPER_EPS):
    """L-OBS exactly as the authors' code runs it (pass ``Hinv = paper_inverse(H)``).

    ``prunable_rows`` rows compete (default: all, biases included, as in the
    authors' code, which ranks the stacked [W; b] matrix); ``n_prune`` of
    them are removed in the order of w^2 / (Hinv_qq + eps) over the whole
    layer (row-major, stable sort). The authors re-apply the mask at every 5 %
    checkpoint; that does not change the result (no correction reads a weight
    removed earlier), so it is applied once at the end. The authors run in
    float32; this runs in float64. Returns ``(W_new, mask)``, mask True = kept.
    """
    W = np.array(W, dtype=np.float64)
    Hinv = np.asarray(Hinv, dtype=np.float64)
    d, n_out = W.shape
    p = d if prunable_rows is None else int(prunable_rows)
    n_prune = int(min(max(int(n_prune), 0), p * n_out))
    L = np.square(W[:p]) / (np.diag(Hinv)[:p, None] + eps)
    ranked = np.argsort(L, axis=None, kind="stable")[:n_prune]
    sel = np.zeros(p * n_out, dtype=bool)
    sel[ranked] = True
    sel = sel.reshape(p, n_out)
    rank_of = np.empty(p * n_out, dtype=np.int64)
    rank_of[ranked] = np.arange(n_prune)
    rank_of = np.where(sel, rank_of.reshape(p, n_out), np.iinfo(np.int64).max)
    order = np.argsort(rank_of, axis=0, kind="stable")  # per column: its removed rows in ranking order
    _sequential_corrections(W, Hinv, order, sel.sum(0), eps)
    mask = np.ones_like(W, dtype=bool)
    mask[:p] = ~sel
    W[~mask] = 0.0
    return W, mask


def _cho(A: np.ndarray, what: str) -> tuple:
    try:
        return cho_factor(A, lower=True, check_finite=False)
    except np.linalg.LinAlgError as err:
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite (Cholesky failed). Fix: raise the damping (damp=1e-2) or calibrate on more samples."
        ) from err


def joint_update(W: np.ndarray, mask: np.ndarray, Hinv: np.ndarray, H: np.ndarray | None = None) -> np.ndarray:
    """The optimal weights for a given mask: per column, dW = -Hinv[:, Q] (Hinv[Q, Q])^-1 w_Q.

    This is what OBS reaches by removing the set Q one weight at a time with
    inverse downdates, in any order. ``H`` is the damped Hessian that
    ``Hinv`` inverts (default: Hinv inverted back when needed); a column
    keeping fewer weights than it loses solves the smaller kept-set system
    H[K, K] w_K = H[K, :] w instead (the same weights). Cholesky solves;
    returns W_new with exact zeros.
    """
    W = np.asarray(W, dtype=np.float64)
    Hinv = np.asarray(Hinv, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != W.shape:
        raise ValueError(f"mask has shape {mask.shape}, W has {W.shape}")
    out = np.where(mask, W, 0.0)
    if H is None and (mask.sum(0) < (~mask).sum(0)).any():
        with _one_blas_thread(len(Hinv)):
            H = _cholesky_inverse(Hinv)  # the damped Hessian back (float64 Cholesky): the kept-set solves are far smaller
    HW = None if H is None else np.asarray(H, np.float64) @ W
    for j in range(W.shape[1]):
        Q = np.flatnonzero(~mask[:, j])
        if Q.size == 0:
            continue
        K = np.flatnonzero(mask[:, j])
        if K.size == 0:
            continue
        if H is not None and K.size < Q.size:
            out[K, j] = cho_solve(_cho(np.asarray(H)[np.ix_(K, K)], f"H[K, K] of column {j}"), HW[K, j], check_finite=False)
        else:
            z = cho_solve(_cho(Hinv[np.ix_(Q, Q)], f"Hinv[Q, Q] of column {j}"), W[Q, j], check_finite=False)
            out[K, j] = W[K, j] - Hinv[np.ix_(K, Q)] @ z
    return out


def lobs(W: np.ndarray, Hinv: np.ndarray, prunable_rows: int | None = None, n_prune: int | None = None, tolerance: float | None = None,
         update: str = "joint", H: np.ndarray | None = None):
    """L-OBS: prune by saliency ranked once over the layer, then correct.

    ``update="joint"`` (default): `joint_update` of each column's removed set
    (``H``, the damped Hessian, lets it solve the smaller side).
    ``update="sequential"``: the paper's one-at-a-time corrections with the
    original inverse (later corrections move weights already removed, which
    are then zeroed). Returns ``(W_new, mask)`` with mask (d, n_out) True =
    kept; pruned entries are exactly 0.
    """
    if update not in ("joint", "sequential"):
        raise ValueError(f"update must be 'joint' or 'sequential', got {update!r}")
    W = np.array(W, dtype=np.float64)
    Hinv = np.asarray(Hinv, dtype=np.float64)
    d, n_out = W.shape
    p = d if prunable_rows is None else int(prunable_rows)
    sel, _ = selection_counts(W, Hinv, p, n_prune, tolerance)
    mask = np.ones_like(W, dtype=bool)
    mask[:p] = ~sel
    if update == "joint":
        return joint_update(W, mask, Hinv, H), mask
    L = _saliency(W, Hinv, p)
    order = np.argsort(np.where(sel, L, np.inf), axis=0, kind="stable")  # per column: pruned rows in ranking order
    _sequential_corrections(W, Hinv, order, sel.sum(0), 0.0)
    W[~mask] = 0.0
    return W, mask


def exact_workspace_bytes(d: int, chunk: int, block: int = EXACT_BLOCK) -> int:
    """Bytes one `exact` worker holds for a chunk of ``chunk`` columns: the float64 Schur complements
    (chunk, d, d), the block factors (chunk, block, d), ten (chunk, d) vectors (weights, diagonal,
    scores, masks, row maps, pivot columns, results), the (d, d) product of a rank-b update and two
    (d, d) temporaries of a compaction."""
    return 8 * (chunk * (d * d + block * d + 10 * d) + 3 * d * d)


def _auto_chunk(d: int, n_out: int, block: int, work_bytes: int, workers: int) -> int:
    per_worker = work_bytes // max(workers, 1)
    fixed = exact_workspace_bytes(d, 0, block)
    per_col = exact_workspace_bytes(d, 1, block) - fixed
    return int(max(1, min(n_out, (per_worker - fixed) // per_col)))


def _compact(S: np.ndarray | None, Hinv: np.ndarray, keep: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """Per column c, S[c][keep[c]][:, keep[c]] for boolean ``keep`` (C, r), written to the front of ``buf``
    (S None: from the shared Hinv). S may live in ``buf`` itself: column c's new block ends before the old
    blocks of the columns after it, and its own old block is read before it is overwritten."""
    C = keep.shape[0]
    k = int(keep[0].sum())
    out = buf[: C * k * k].reshape(C, k, k)
    for c in range(C):
        src = Hinv if S is None else S[c]
        np.compress(keep[c], src.compress(keep[c], axis=0), axis=1, out=out[c])  # the rows are copied out first
    return out


@np.errstate(divide="ignore", invalid="ignore")  # scores of removed rows (0 / 0) are overwritten with inf
def _exact_chunk(W: np.ndarray, Hinv: np.ndarray, counts: np.ndarray, p: int, block: int, cols: np.ndarray,
                 stats: dict | None, buf: np.ndarray, tmp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy OBS on columns ``cols`` (all counts >= 1). Returns their new weights (d, C) and masks (d, C).

    Per column c, ``S[c]`` is the current inverse on the rows still stored
    (``idx[c]``: their original rows); ``gone`` marks stored rows already
    removed (eliminated, dropped at the next compaction). Within a block of b
    removals the pivot column is S[c][q] minus the block's own rank-1 terms
    U[c, :s]^T U[c, :s, q]; at the end of the block S[c] -= U[c]^T U[c] (BLAS, via numpy,
    which releases the GIL, so workers run in parallel; scipy's BLAS wrappers hold it).
    Every column removes one row per step (a column past its count keeps
    going, unrecorded), so the chunk's arrays keep one shape.
    """
    d = W.shape[0]
    C = len(cols)
    cnt = counts[cols]
    kmax = int(cnt.max())
    ar = np.arange(C)
    idx = np.tile(np.arange(d), (C, 1))
    S = None  # until the first block ends, every column's S is the shared Hinv
    theta = W[:, cols].T.copy()
    dg = np.tile(Hinv.diagonal(), (C, 1))
    blocked = idx >= p  # not candidates: the bias row, and rows removed (kept stored until the next compaction)
    n_fixed = d - min(p, d)
    out_w = np.zeros((d, C))
    out_m = np.zeros((d, C), dtype=bool)
    score = np.empty((C, d))
    sq = np.empty((C, d))
    finish: dict[int, list[int]] = {}  # step -> the columns whose count it completes
    for c, k in enumerate(cnt.tolist()):
        finish.setdefault(k, []).append(c)
    flops = 0
    t = 0
    while t < kmax:
        r = idx.shape[1]
        b = min(block, kmax - t)
        U = np.empty((C, b, r))
        score = score[:, :r]
        live = cnt > t
        n_live = int(live.sum())
        for s in range(b):
            np.square(theta, out=score)
            score /= dg
            np.copyto(score, np.inf, where=blocked)
            q = np.argmin(score, axis=1)
            h = Hinv[idx[ar, q]] if S is None else S[ar, q, :]  # S symmetric: row q = column q
            if s:
                h -= np.matmul(U[ar, :s, q][:, None, :], U[:, :s, :])[:, 0, :]
                flops += 2 * s * r * n_live
            hqq = h[ar, q]
            if not (hqq > 0).all() and not (hqq[live] > 0).all():
                c = int(np.flatnonzero(live & ~(hqq > 0))[0])
                raise NotPositiveDefiniteError(
                    f"output unit {int(cols[c])}: the downdated inverse Hessian has a non-positive pivot ({hqq[c]:.3g}) "
                    f"after {t + s} removals. Fix: raise the damping (damp=1e-2) or calibrate on more samples."
                )
            if n_live < C:  # columns past their count go on unchanged (u = 0)
                hqq = np.where(live, hqq, np.inf)
            scale = 1.0 / np.sqrt(hqq)
            u = np.multiply(h, scale[:, None], out=U[:, s, :])  # h / sqrt(hqq): the elimination step
            theta -= u * (theta[ar, q] * scale)[:, None]  # the OBS correction -(theta_q / hqq) h
            dg -= np.square(u, out=sq[:, :r])
            theta[ar, q] = 0.0
            blocked[ar, q] = True  # every column drops one row per step (finished ones too): shapes stay equal
            flops += 6 * r * n_live
            for c in finish.get(t + s + 1, ()):  # this column reached its count: record it
                keep = ~blocked[c] | (idx[c] >= p)
                out_w[idx[c, keep], c] = theta[c, keep]
                out_m[idx[c, keep], c] = True
                live[c] = False
                n_live -= 1
        t += b
        if t >= kmax:
            break
        n_gone = int(blocked[0].sum()) - n_fixed
        if S is None or n_gone * COMPACT >= r:  # drop the removed rows (always at the first block: S is built here)
            keep = ~blocked | (idx >= p)
            keep_idx = np.nonzero(keep)[1].reshape(C, r - n_gone)
            S = _compact(S, Hinv, keep, buf)
            U = np.stack([U[c].compress(keep[c], axis=1) for c in range(C)])
            theta, dg, idx, blocked = (np.take_along_axis(x, keep_idx, axis=1) for x in (theta, dg, idx, blocked))
        r = S.shape[1]
        T = tmp[: r * r].reshape(r, r)
        for c in np.flatnonzero(cnt > t):  # S_c -= U_c^T U_c, the rank-b BLAS3 update (numpy: syrk for a^T a, GIL released)
            np.matmul(U[c].T, U[c], out=T)
            np.subtract(S[c], T, out=S[c])
            flops += r * (r + 1) * b
    if stats is not None:
        stats["flops"] = stats.get("flops", 0) + flops
    return out_w, out_m


def exact(W: np.ndarray, Hinv: np.ndarray, prunable_rows: int | None = None, n_prune: int | None = None,
          tolerance: float | None = None, counts: np.ndarray | None = None, chunk: int | None = None, dtype: type = np.float64,
          threads: int | None = None, block: int = EXACT_BLOCK, work_bytes: int = EXACT_WORK_BYTES, stats: dict | None = None):
    """Greedy OBS with inverse-Hessian downdates, per column, columns batched.

    ``counts`` (n_out,) gives how many weights each column loses; by default the
    per-column counts of the L-OBS ranking for ``n_prune`` / ``tolerance``.
    Columns are sorted by count and eliminated ``chunk`` at a time (default:
    an even split over the workers, capped so that all workers' buffers fit
    in ``work_bytes``, see `exact_workspace_bytes`); ``threads`` workers (default:
    one per core) run chunks in parallel, BLAS on one thread inside each.
    ``dtype`` must be float64 (kept for compatibility). ``stats`` (a dict)
    receives the floating-point operations executed (``flops``: the rank-b
    updates counted as BLAS syrk does them, r(r+1)b on the r rows stored, plus
    the per-removal vector work).
    Returns ``(W_new, mask)``; the same result for any ``chunk``, ``threads``, ``block``.
    """
    if np.dtype(dtype) != np.float64:
        raise ValueError(f"exact runs in float64 (float32 downdates lose positive definiteness); got dtype={np.dtype(dtype).name}")
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
    if int(block) < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    mask = np.ones((d, n_out), dtype=bool)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]  # similar counts share a chunk: little work after a column is done
    workers = (os.cpu_count() or 1) if threads is None else max(1, int(threads))
    workers = max(1, min(workers, len(order)))
    C = _auto_chunk(d, len(order), int(block), work_bytes, workers) if chunk is None else max(1, int(chunk))
    if chunk is None:
        C = min(C, -(-len(order) // workers))
    chunks = [order[i : i + C] for i in range(0, len(order), C)]
    found: list[dict] = []
    bufs: queue.SimpleQueue = queue.SimpleQueue()  # per worker: Schur complements and an update temporary, reused over its chunks
    for _ in range(min(workers, len(chunks))):
        bufs.put((np.empty(C * d * d), np.empty(d * d)))

    def run(cols: np.ndarray) -> None:
        st: dict = {}
        buf, tmp = bufs.get()
        try:
            w, m = _exact_chunk(W, Hinv, counts, p, int(block), cols, st, buf, tmp)
        finally:
            bufs.put((buf, tmp))
        W[:, cols] = w
        mask[:, cols] = m
        found.append(st)

    from threadpoolctl import threadpool_limits

    # BLAS on one thread inside each worker: the workers are the parallelism (and BLAS threads that
    # spin while another process holds a core made the rank-b updates 10x slower on a busy machine)
    with threadpool_limits(1, user_api="blas"):
        if workers == 1 or len(chunks) <= 1:
            for cols in chunks:
                run(cols)
        else:
            with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
                list(pool.map(run, chunks))
    if stats is not None:
        stats["flops"] = stats.get("flops", 0) + sum(st.get("flops", 0) for st in found)
    return W, mask
