"""Issue 13: L-OBS as published (`lobs_paper`), the joint correction (`lobs`), exact OBS (`exact`) against brute force."""

import numpy as np
import pytest

from tfprune import obs
from tfprune.obs import solvers
from tfprune.obs.hessian import estimate_bytes, hessian_dim, layer_hessians
from tfprune.obs.solvers import NotPositiveDefiniteError, damped_inverse, exact, joint_update, layer_error, lobs, lobs_paper, paper_inverse


def _problem(seed=0, n=2000, F=30, n_out=5, dead=0):
    """Layer inputs with a bias column (and ``dead`` always-zero inputs, as MNIST's border pixels)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F)) @ rng.normal(size=(F, F)) * 0.3
    X[:, :dead] = 0.0
    X = np.hstack([X, np.ones((n, 1))])
    return X, rng.normal(size=(F + 1, n_out)), X.T @ X / n


def _authors_loop(wb, hessian_inv, n_prune, eps=1e-5):
    """prune-weights-LeNet300100.py (csyhhu/L-OBS, branch dev), translated line by line, stopping after n_prune removals."""
    wb = wb.copy()
    l1, l2 = wb.shape
    L = np.zeros([l1 * l2])
    for row_idx in range(l1):
        for col_idx in range(l2):
            L[row_idx * l2 + col_idx] = np.power(wb[row_idx, col_idx], 2) / (hessian_inv[row_idx, row_idx] + eps)
    sen_rank = np.argsort(L, kind="stable")
    save_interval = int(l1 * l2 / 20)
    mask = np.ones(wb.shape)
    for i in range(n_prune):
        prune_idx = sen_rank[i]
        prune_row_idx = int(prune_idx / l2)
        prune_col_idx = prune_idx % l2
        delta_W = -wb[prune_row_idx, prune_col_idx] / (hessian_inv[prune_row_idx, prune_row_idx] + eps) * hessian_inv[:, prune_row_idx]
        wb[:, prune_col_idx] += delta_W
        mask[prune_row_idx, prune_col_idx] = 0
        if i % save_interval == 0 and int(i / save_interval) >= 4:
            wb = np.multiply(wb, mask)  # the authors' 5 % checkpoints
    return np.multiply(wb, mask), mask.astype(bool)


def _brute_greedy(W, A, p, counts):
    """Greedy OBS from scratch: at every step the optimal weights for the current mask and diag((A_RR)^-1)."""
    d, n_out = W.shape
    Wn, M = np.zeros_like(W), np.zeros_like(W, dtype=bool)
    for j in range(n_out):
        R = list(range(d))
        for _ in range(counts[j]):
            Ai = np.linalg.inv(A[np.ix_(R, R)])
            wR = Ai @ (A[R] @ W[:, j])
            sal = [wR[i] ** 2 / Ai[i, i] if R[i] < p else np.inf for i in range(len(R))]
            R.pop(int(np.argmin(sal)))
        Wn[R, j] = np.linalg.solve(A[np.ix_(R, R)], A[R] @ W[:, j])
        M[R, j] = True
    return Wn, M


@pytest.mark.parametrize("seed,frac", [(0, 0.93), (1, 0.5), (2, 0.81)])
def test_lobs_paper_is_the_authors_loop_bit_for_bit(seed, frac):
    _, W, H = _problem(seed, dead=3)
    Hinv = paper_inverse(H)
    n_prune = int(frac * W.size)  # past several 5 % checkpoints
    want, want_mask = _authors_loop(W, Hinv, n_prune)
    got, mask = lobs_paper(W, Hinv, n_prune)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(got, want)
    assert (~mask[-1]).any()  # biases compete and are pruned, as in the authors' code
    # their checkpoints do not matter: no correction reads a weight removed before
    np.testing.assert_array_equal(_authors_loop(W, Hinv, n_prune, eps=1e-5)[0], got)


def test_paper_inverse_damps_absolutely_and_falls_back_to_pinv():
    _, _, H = _problem(dead=2)  # two zero rows: H is singular, H + 1e-6 I is not
    np.testing.assert_allclose(paper_inverse(H) @ (H + 1e-6 * np.eye(len(H))), np.eye(len(H)), atol=1e-6)
    assert paper_inverse(H, 0.0).shape == H.shape  # singular: numpy's inv raises, pinv answers
    assert paper_inverse(H, 0.0)[0, 0] == 0.0


def test_joint_update_is_sequential_obs_with_downdates_and_beats_the_paper_update():
    X, W, H = _problem(3)
    F = W.shape[0] - 1
    Hinv, A = damped_inverse(H, 1e-6, return_damped=True)
    n_prune = int(0.8 * F * W.shape[1])
    seq, mask = lobs(W, Hinv, F, n_prune, update="sequential")
    joint, mask2 = lobs(W, Hinv, F, n_prune, H=A)
    np.testing.assert_array_equal(mask, mask2)
    assert np.all(joint[~mask] == 0) and (~mask[F]).sum() == 0
    # removing the same weights one at a time, downdating H^-1 after each (in the ranking order)
    ref = W.copy()
    for j in range(W.shape[1]):
        Hi = Hinv.copy()
        for q in np.flatnonzero(~mask[:, j]):
            ref[:, j] -= Hi[:, q] * (ref[q, j] / Hi[q, q])
            Hi -= np.outer(Hi[:, q], Hi[q]) / Hi[q, q]
    ref[~mask] = 0
    np.testing.assert_allclose(joint, ref, atol=1e-8)
    # the kept-set form (with A) and the removed-set form (Hinv only) agree
    np.testing.assert_allclose(joint_update(W, mask, Hinv), joint, atol=1e-8)
    np.testing.assert_allclose(joint_update(W, mask, Hinv, A), joint, atol=1e-10)
    assert layer_error(W, joint, H) < layer_error(W, seq, H)  # same mask; the joint correction is its optimum
    # and it is optimal for its mask: any other kept weights do worse
    rng = np.random.default_rng(0)
    other = joint + np.where(mask, rng.normal(scale=1e-3, size=W.shape), 0.0)
    assert layer_error(W, other, H) > layer_error(W, joint, H)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exact_matches_brute_force_greedy(seed):
    _, W, H = _problem(seed, n=1500, F=24, n_out=5, dead=1 if seed == 3 else 0)
    F = W.shape[0] - 1
    Hinv, A = damped_inverse(H, 1e-6, return_damped=True)
    sel, _ = solvers.selection_counts(W, Hinv, F, int(0.75 * F * W.shape[1]))
    counts = sel.sum(0)
    want, want_mask = _brute_greedy(W, A, F, counts)
    for kw in (dict(), dict(chunk=2, block=3), dict(chunk=1, block=1), dict(threads=2, chunk=2, block=5), dict(work_bytes=1)):
        got, mask = exact(W, Hinv, F, counts=counts, **kw)
        np.testing.assert_array_equal(mask, want_mask, err_msg=str(kw))
        np.testing.assert_allclose(got, want, atol=1e-8, err_msg=str(kw))
        assert np.all(got[~mask] == 0) and mask[F].all()
    # the result is the joint optimum for its mask
    np.testing.assert_allclose(joint_update(W, mask, Hinv, A), got, atol=1e-8)


def test_exact_counts_flops_and_refuses_float32_and_bad_pivots():
    _, W, H = _problem(4, F=20, n_out=3)
    F = W.shape[0] - 1
    Hinv = damped_inverse(H, 1e-3)
    st = {}
    exact(W, Hinv, F, n_prune=30, stats=st)
    assert st["flops"] > 0
    with pytest.raises(ValueError, match="float64"):
        exact(W, Hinv, F, n_prune=30, dtype=np.float32)
    bad = Hinv.copy()
    bad[3, 3] = -bad[3, 3]  # not positive definite: a negative diagonal is the smallest score
    with pytest.raises(NotPositiveDefiniteError, match="non-positive pivot.*damp"):
        exact(W, bad, F, n_prune=30)
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        joint_update(W, np.eye(*W.shape) == 0, -Hinv)


def test_memory_estimate_counts_the_solver_buffers(trained_tiny, digits_data):
    (xt, _), _ = digits_data
    layer = trained_tiny.get_layer("fc1")
    d = hessian_dim(layer)
    assert estimate_bytes(layer, "exact") >= 2 * 8 * d * d + solvers.exact_workspace_bytes(d, 1)
    assert estimate_bytes(layer, "exact") > estimate_bytes(layer, "magnitude")
    need = estimate_bytes(layer, "exact")
    layer_hessians(trained_tiny, ["fc1"], xt[:20], max_bytes=need, progress=False, solver="exact")
    with pytest.raises(ValueError, match="solver's buffers"):
        layer_hessians(trained_tiny, ["fc1"], xt[:20], max_bytes=need - 1, progress=False, solver="exact")


def test_prune_plugs_in_lobs_paper_and_the_joint_lobs(trained_tiny, digits_data):
    (xt, yt), (xs, ys) = digits_data
    targets = {"conv2": 0.6, "fc1": 0.95}
    errs = {}
    for solver in ("lobs_paper", "lobs", "exact"):
        pruned, rep = obs.prune(trained_tiny, (xt, yt), targets=targets, solver=solver, n_samples=2000, progress=False)
        errs[solver] = float(np.mean(pruned.predict(xs, verbose=0).argmax(-1) != ys))
        for r in rep.layers:
            assert r.sparsity == pytest.approx(targets[r.name], abs=0.02 if solver == "lobs_paper" else 1.0 / r.n_params)
    fc1 = pruned.get_layer("fc1")
    paper, _ = obs.prune(trained_tiny, (xt, yt), targets={"fc1": 0.95}, solver="lobs_paper", n_samples=2000, progress=False)
    k, b = paper.get_layer("fc1").kernel.numpy(), paper.get_layer("fc1").bias.numpy()
    assert np.count_nonzero(k) + np.count_nonzero(b) == pytest.approx(0.05 * (k.size + b.size), abs=1)  # biases in the budget
    assert fc1.bias.numpy().all()  # lobs and exact keep every bias
    assert errs["lobs"] <= errs["lobs_paper"] and errs["exact"] <= errs["lobs"] + 0.01, errs
    with pytest.raises(ValueError, match="fixed ratios"):
        obs.prune(trained_tiny, xt[:100], tolerance=0.1, solver="lobs_paper", progress=False)


@pytest.mark.parametrize("kw", [dict(strides=1, padding="valid"), dict(strides=2, padding="same"), dict(padding="same", dilation_rate=2),
                                dict(strides=(2, 1)), dict(strides=3, padding="same", kernel_size=(4, 2))])
def test_numpy_unfold_equals_tf_unfold(kw):
    import tensorflow as tf

    from tfprune._keras import keras
    from tfprune.obs.hessian import unfold, unfold_rows

    x = np.random.default_rng(0).random((2, 11, 13, 3)).astype("float32")
    conv = keras.layers.Conv2D(4, kw.pop("kernel_size", (3, 2)), **kw)
    conv(x)
    np.testing.assert_array_equal(unfold_rows(conv, x), unfold(conv, tf.constant(x)).numpy().astype(np.float64))
    c1 = keras.layers.Conv1D(3, 3, strides=2, padding="same")
    c1(x[:, 0])
    np.testing.assert_array_equal(unfold_rows(c1, x[:, 0]), unfold(c1, tf.constant(x[:, 0])).numpy().astype(np.float64))
    dense = keras.layers.Dense(2)
    np.testing.assert_array_equal(unfold_rows(dense, x[:, 0, 0]), x[:, 0, 0].astype(np.float64))
