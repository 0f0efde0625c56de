"""Issue 4: Layer-wise OBS: Hessians, solvers, prune, retraining, BN re-estimation, scorer, CLI (more in test_finetune.py)."""

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.conftest import mnist_path
from tfprune import obs
from tfprune._keras import keras
from tfprune.obs.hessian import layer_hessians, layer_matrix, unfold
from tfprune.obs.solvers import damped_inverse, exact, layer_error, lobs, selection_counts


def _problem(seed=0, n=3000, F=40, n_out=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F)) @ rng.normal(size=(F, F)) * 0.3
    X = np.hstack([X, np.ones((n, 1))])
    return X, rng.normal(size=(F + 1, n_out)), X.T @ X / n


def test_damped_inverse_and_bad_input():
    _, _, H = _problem()
    Hinv = damped_inverse(H, 1e-6)
    lam = 1e-6 * np.mean(np.diag(H))
    np.testing.assert_allclose(Hinv @ (H + lam * np.eye(len(H))), np.eye(len(H)), atol=1e-6)
    singular = np.zeros((5, 5))
    singular[0, 0] = 1.0
    assert np.isfinite(damped_inverse(singular, 1e-3)).all()
    with pytest.raises(ValueError, match="NaN"):
        damped_inverse(np.full((3, 3), np.nan))


@pytest.mark.parametrize("solver", [lobs, exact])
def test_solvers_exact_counts_zeros_bias_and_error(solver):
    X, W, H = _problem()
    F = W.shape[0] - 1
    n_prune = int(0.7 * F * W.shape[1])
    Wn, mask = solver(W, damped_inverse(H, 1e-8), prunable_rows=F, n_prune=n_prune)
    assert (~mask).sum() == n_prune and (~mask[F]).sum() == 0  # bias row never pruned
    assert np.all(Wn[~mask] == 0)
    direct = 0.5 * np.mean(np.sum((X @ Wn - X @ W) ** 2, axis=1))
    assert layer_error(W, Wn, H) == pytest.approx(direct, rel=1e-9)


def test_exact_beats_lobs_and_magnitude_and_lobs_matches_a_naive_loop():
    X, W, H = _problem(1)
    F = W.shape[0] - 1
    n_prune = int(0.8 * F * W.shape[1])
    Hinv = damped_inverse(H, 1e-8)
    e_lobs = layer_error(W, lobs(W, Hinv, F, n_prune)[0], H)
    e_exact = layer_error(W, exact(W, Hinv, F, n_prune)[0], H)
    Wm = W.copy()
    idx = np.argsort(np.abs(W[:F]), axis=None)[:n_prune]
    Wm[:F].flat[idx] = 0
    assert e_exact < e_lobs and e_exact < layer_error(W, Wm, H)
    # the vectorised rounds equal the paper's sequential per-weight loop
    sel, _ = selection_counts(W, Hinv, F, n_prune)
    L = W[:F] ** 2 / (2 * np.diag(Hinv)[:F, None])
    Wl = W.copy()
    for flat in np.argsort(np.where(sel, L, np.inf), axis=None, kind="stable")[:n_prune]:
        q, j = divmod(int(flat), W.shape[1])
        Wl[:, j] -= Hinv[:, q] * (Wl[q, j] / Hinv[q, q])
    Wl[:F][sel] = 0
    np.testing.assert_allclose(lobs(W, Hinv, F, n_prune, update="sequential")[0], Wl, atol=1e-9)


def test_tolerance_mode_and_threads_agree():
    _, W, H = _problem(2)
    F = W.shape[0] - 1
    Hinv = damped_inverse(H, 1e-8)
    _, summed = selection_counts(W, Hinv, F, tolerance=0.5)
    assert summed <= 0.5
    Wn, mask = lobs(W, Hinv, F, tolerance=0.5)
    assert 0 < (~mask).sum() < F * W.shape[1]
    a = exact(W, Hinv, F, n_prune=100, threads=1, chunk=2)[0]
    b = exact(W, Hinv, F, n_prune=100, threads=2, chunk=2)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw", [dict(strides=1, padding="valid"), dict(strides=2, padding="same"), dict(padding="same", dilation_rate=2), dict(strides=(2, 1))])
def test_unfold_matches_the_convolution(kw):
    x = np.random.default_rng(0).random((2, 11, 13, 3)).astype("float32")
    conv = keras.layers.Conv2D(4, (3, 2), **kw)
    y = conv(x).numpy()
    z = unfold(conv, tf.constant(x)).numpy() @ conv.kernel.numpy().reshape(-1, 4) + conv.bias.numpy()
    np.testing.assert_allclose(z.reshape(y.shape), y, atol=1e-5)
    c1 = keras.layers.Conv1D(3, 3, strides=2, padding="same")
    x1 = x[:, 0]
    y1 = c1(x1).numpy()
    z1 = unfold(c1, tf.constant(x1)).numpy() @ c1.kernel.numpy().reshape(-1, 3) + c1.bias.numpy()
    np.testing.assert_allclose(z1.reshape(y1.shape), y1, atol=1e-5)


def test_layer_hessians_dense_matches_manual_and_refuses_big(trained_tiny, digits_data):
    (xt, _), _ = digits_data
    H = layer_hessians(trained_tiny, ["fc2", "conv1"], xt[:300], batch_size=64, progress=False)
    probe = keras.Model(trained_tiny.inputs, trained_tiny.get_layer("fc2").input)
    a = np.hstack([probe(xt[:300]).numpy().astype(np.float64), np.ones((300, 1))])
    np.testing.assert_allclose(H["fc2"], a.T @ a / 300, rtol=1e-6, atol=1e-8)
    assert H["conv1"].shape == (3 * 3 * 1 + 1,) * 2
    # the same H from a dataset of batches, a generator of (x, y) batches and inputs with labels
    ds = tf.data.Dataset.from_tensor_slices(xt[:300]).batch(50)
    gen = ((xt[i : i + 70], np.zeros(len(xt[i : i + 70]))) for i in range(0, 300, 70))
    for data in (ds, gen, (xt[:400], np.zeros(400))):
        H2 = layer_hessians(trained_tiny, ["fc2"], data, n_samples=300, progress=False)
        np.testing.assert_allclose(H2["fc2"], H["fc2"], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="GiB.*exclude it"):
        layer_hessians(trained_tiny, ["fc1"], xt[:10], max_bytes=1000, progress=False)
    with pytest.raises(ValueError, match="not supported"):
        layer_hessians(tfprune.models.resnet_cifar(20, (8, 8, 1)), ["stem_bn"], np.zeros((2, 8, 8, 1)), progress=False)


def test_prune_report_bound_and_no_mutation(trained_tiny, digits_data):
    (xt, yt), (xs, ys) = digits_data
    before = [v.numpy().copy() for v in trained_tiny.weights]
    targets = {"conv1": 0.3, "conv2": 0.6, "fc1": 0.95, "fc2": 0.5}
    accs, errors = {}, {}
    H = layer_hessians(trained_tiny, list(targets), xt[:2000], progress=False)  # the unpruned network's inputs
    dense_acc = float(np.mean(trained_tiny.predict(xs, verbose=0).argmax(-1) == ys))
    for method in ("exact", "lobs", "magnitude"):
        pruned, rep = obs.prune(trained_tiny, (xt, yt), targets=targets, solver=method, n_samples=2000, progress=False)
        for r in rep.layers:
            assert r.sparsity == pytest.approx(targets[r.name], abs=1.0 / r.n_params)
        accs[method] = float(np.mean(pruned.predict(xs, verbose=0).argmax(-1) == ys))
        errors[method] = {n: layer_error(layer_matrix(trained_tiny.get_layer(n))[0], layer_matrix(pruned.get_layer(n))[0], H[n]) for n in targets}
        if method != "magnitude":
            for r in rep.layers:  # the reported delta E is the layer's output error, measured independently
                assert r.delta_e == pytest.approx(errors[method][r.name], rel=1e-6, abs=1e-12)
            frob = [r.frobenius for r in rep.layers]
            want = sum(np.prod(frob[k + 1 :]) * np.sqrt(r.delta_e) for k, r in enumerate(rep.layers))
            assert rep.bound == pytest.approx(want) and all(r.delta_e >= 0 for r in rep.layers)
            assert "bound" in rep.table() and rep.to_dict()["total_sparsity"] > 0.9
    for n in targets:  # second order with weight correction beats magnitude pruning, layer by layer
        assert errors["exact"][n] < errors["magnitude"][n]
    assert accs["exact"] >= dense_acc - 0.02 and accs["exact"] > accs["magnitude"] + 0.05, (dense_acc, accs)
    for a, b in zip(before, [v.numpy() for v in trained_tiny.weights]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="exactly one of"):
        obs.prune(trained_tiny, xt[:10])
    with pytest.raises(ValueError, match="unknown or unsupported"):
        obs.prune(trained_tiny, xt[:10], targets={"nope": 0.5})
    with pytest.raises(ValueError, match="solver must be one of"):
        obs.prune(trained_tiny, xt[:10], sparsity=0.5, solver="sgd")
    alloc_pruned, rep = obs.prune(trained_tiny, xt[:500], sparsity=0.8, allocation="lamp", progress=False)
    assert rep.total_sparsity == pytest.approx(0.8, abs=1e-3)


def test_retrain_keeps_obs_zeros_exactly_and_recovers_accuracy(trained_tiny, digits_data):
    (xt, yt), (xs, ys) = digits_data
    pruned, _ = obs.prune(trained_tiny, (xt, yt), targets={"fc1": 0.97, "conv2": 0.7}, solver="magnitude", progress=False)
    zeros = {p.name: p.kernel() == 0 for p in tfprune.prunable_layers(pruned)}
    re = tfprune.training.finetune.retrain(pruned, xt[:2000], yt[:2000], steps=60, learning_rate=1e-3)
    assert not tfprune.masks.wrapping.is_wrapped(re)
    for p in tfprune.prunable_layers(re):
        k = p.kernel()
        assert np.count_nonzero(k[zeros[p.name]]) == 0  # every zero is still zero
    for name in ("fc1", "conv2"):
        assert tfprune.prunable_layers(re)[name].sparsity() == pytest.approx(tfprune.prunable_layers(pruned)[name].sparsity())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = float(loss(yt[:2000], pruned.predict(xt[:2000], verbose=0)))
    after = float(loss(yt[:2000], re.predict(xt[:2000], verbose=0)))
    acc = [float(np.mean(m.predict(xs, verbose=0).argmax(-1) == ys)) for m in (pruned, re)]
    assert after < 0.8 * before and acc[1] > acc[0], (before, after, acc)  # it trained, and it helped
    with pytest.raises(ValueError, match="needs labels"):
        tfprune.training.finetune.retrain(pruned, xt[:100], steps=5)


def test_reestimate_batchnorm_chained():
    m = tfprune.models.vgg_small((12, 12, 1), widths=(4, 6))
    x = np.random.default_rng(0).random((64, 12, 12, 1)).astype("float32")
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 4
    for b in bns:  # stale statistics everywhere: each BN's input depends on the BNs before it
        b.moving_mean.assign(np.full(b.moving_mean.shape, 9.0, "float32"))
        b.moving_variance.assign(np.full(b.moving_variance.shape, 0.01, "float32"))
    tfprune.training.finetune.reestimate_batchnorm(m, x)
    for b in bns:  # with the final statistics in place, each BN's moving stats are its input's exact moments
        a = keras.Model(m.inputs, b.input)(x).numpy().reshape(-1, b.moving_mean.shape[0])
        np.testing.assert_allclose(b.moving_mean.numpy(), a.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.moving_variance.numpy(), a.var(0), rtol=1e-3, atol=1e-5)


def test_obs_importance_scorer(trained_tiny, digits_data):
    (xt, yt), _ = digits_data
    s = tfprune.score_layers(trained_tiny, "obs", data=xt[:500], sparsity=0.9, n_samples=500, progress=False)  # inputs alone suffice
    assert max(s.scores.values()) == pytest.approx(1.0) and all(v > 0 for v in s.scores.values())
    # the documented definition: L-OBS delta E at 90 % over the layer's output energy 1/2 tr(W^T H W), relative to the largest
    H = layer_hessians(trained_tiny, ["fc1", "fc2"], xt[:500], progress=False)
    rel = {}
    for n in ("fc1", "fc2"):
        W, F = layer_matrix(trained_tiny.get_layer(n))
        Wn, _ = lobs(W, damped_inverse(H[n], 1e-3), F, int(round(0.9 * F * W.shape[1])))
        rel[n] = layer_error(W, Wn, H[n]) / (0.5 * np.einsum("ij,ik,kj->", W, H[n], W))
    assert s.scores["fc1"] / s.scores["fc2"] == pytest.approx(rel["fc1"] / rel["fc2"], rel=1e-4)
    a = tfprune.allocation.allocate_sparsity(trained_tiny, 0.9, allocation="importance", scores=s.scores)
    assert a.total_sparsity == pytest.approx(0.9, abs=1e-4)


@pytest.mark.skipif(mnist_path() is None, reason="needs mnist.npz for the CLI's --data")
@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_cli_obs(trained_tiny, tmp_path):
    from tests.test_data_models_cli import _cli

    path = str(tmp_path / "m.keras")
    trained_tiny.save(path)
    out = str(tmp_path / "p.keras")
    r = _cli("obs", path, "--data", mnist_path(), "--keep", "0.7,0.4,0.05,0.5", "--n-samples", "1000", "--retrain", "10", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OBS [lobs]" in r.stdout and "test accuracy" in r.stdout  # the API's default solver
    assert tfprune.prunable_layers(tfprune.load_model(out))["fc1"].sparsity() == pytest.approx(0.95, abs=1e-3)
    bad = _cli("obs", path, "--data", mnist_path(), "--keep", "0.5", "--out", out)
    assert bad.returncode == 2 and "--keep has 1 values" in bad.stderr
