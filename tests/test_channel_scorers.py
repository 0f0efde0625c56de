"""Channel scorers of tfprune.structured.importance: l1, l2, bn_scale, taylor (data), obs (data).

Every scorer on a small conv-BN net with a residual Add gives one score per
channel per prunable group and ranks a channel whose coupled weights (and
BatchNorm gamma/beta) are zero lowest; the Taylor score equals the gradient
of the loss with respect to the consumers' inputs taken directly; the
second-order numpy math equals brute-force least squares on tiny matrices.
"""

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.structured import channel_graph, shrink
from tfprune.structured.importance import (
    channel_importance,
    channel_removal_error,
    register_channel_importance,
)
from tfprune.structured.prune import prune_channels

L = keras.layers
SCORERS = ["l1", "l2", "bn_scale", "taylor", "obs"]


def residual_net(seed=0):
    """Groups: {c1, c2} tied by the Add (bn1, bn2), c3 (bn3, strided), c4 (no BatchNorm, read by the output Dense through GAP)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    a = L.ReLU(name="r1")(L.BatchNormalization(name="bn1")(L.Conv2D(6, 3, padding="same", name="c1")(inp)))
    b = L.BatchNormalization(name="bn2")(L.Conv2D(6, 3, padding="same", name="c2")(a))
    s = L.ReLU(name="r2")(L.Add(name="add")([a, b]))
    c = L.ReLU(name="r3")(L.BatchNormalization(name="bn3")(L.Conv2D(5, 3, strides=2, padding="same", name="c3")(s)))
    d = L.ReLU(name="r4")(L.Conv2D(4, 1, name="c4")(c))
    g = L.GlobalAveragePooling2D(name="gap")(d)
    out = L.Dense(3, activation="softmax", name="out")(g)
    model = keras.Model(inp, out, name="resnet_tiny")
    rng = np.random.default_rng(seed)
    for name in ("bn1", "bn2", "bn3"):
        bn = model.get_layer(name)
        n = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(0.0, 0.5, n), rng.normal(size=n) * 0.1, rng.uniform(0.5, 2.0, n)])
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def data(n=48, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


GROUPS = {"c1": (["c1", "c2"], ["bn1", "bn2"], ["c2", "c3"]), "c3": (["c3"], ["bn3"], ["c4"]), "c4": (["c4"], [], ["out"])}


def zero_channel(model, group, j):
    """Zero every weight coupled to channel ``j`` of ``group`` (producers, BatchNorm gamma/beta/mean, consumers' input rows)."""
    producers, bns, consumers = GROUPS[group]
    for p in producers:
        layer = model.get_layer(p)
        k, b = layer.kernel.numpy(), layer.bias.numpy()
        k[..., j], b[j] = 0.0, 0.0
        layer.set_weights([k, b])
    for name in bns:
        bn = model.get_layer(name)
        w = bn.get_weights()
        for i in range(3):  # gamma, beta, moving mean
            w[i][j] = 0.0
        bn.set_weights(w)
    for c in consumers:
        layer = model.get_layer(c)
        k = layer.kernel.numpy()
        if k.ndim == 2:
            k[j] = 0.0
        else:
            k[..., j, :] = 0.0
        layer.set_weights([k, layer.bias.numpy()])


def scores_of(model, method, **kw):
    return channel_importance(model, method, data=data() if tfprune.importance.needs_data(method, "channel") else None, **kw)


# ------------------------------------------------------------------ registry
def test_registry_lists_scorers_and_needs_data():
    assert set(SCORERS) <= set(tfprune.importance.list_importance("channel"))
    assert [tfprune.importance.needs_data(m, "channel") for m in SCORERS] == [False, False, False, True, True]
    model = residual_net()
    for m in ("taylor", "obs"):
        with pytest.raises(ValueError, match=f"{m}.*needs calibration data"):
            channel_importance(model, m)
        with pytest.raises(ValueError, match="needs calibration data"):
            tfprune.plan(model, macs=0.3, granularity="channel", importance=m)
    with pytest.raises(ValueError, match="unknown channel importance"):
        channel_importance(model, "no_such_scorer")


def test_register_magnitude_and_custom_scorer():
    model = residual_net()
    try:
        register_channel_importance("sq_test", np.square)  # the old magnitude form; finish defaults to identity
        register_channel_importance("const_test", scorer=lambda ctx: {g.name: np.arange(g.channels, dtype=float) for g in ctx.graph.prunable})
        l2 = channel_importance(model, "l2").scores
        sq = channel_importance(model, "sq_test").scores
        for g in l2:
            np.testing.assert_allclose(np.sqrt(sq[g]), l2[g], rtol=1e-12)
        np.testing.assert_array_equal(channel_importance(model, "const_test").scores["c3"], np.arange(5))
        with pytest.raises(ValueError, match="either per_weight"):
            register_channel_importance("bad_test", np.abs, scorer=lambda ctx: {})
    finally:
        for name in ("sq_test", "const_test"):
            tfprune.importance.unregister_importance(name, "channel")
    assert "sq_test" not in tfprune.importance.list_importance("channel")


def test_one_registry_for_layer_and_channel_scorers():
    imp = tfprune.importance
    assert set(SCORERS) <= set(imp.list_importance("channel")) and "capacity" in imp.list_importance("layer")
    assert "obs" in imp.list_importance("layer") and "obs" in imp.list_importance("channel")  # one idea at two granularities
    assert set(imp.list_importance(None)) == set(imp.list_importance("layer")) | set(imp.list_importance("channel"))
    assert imp.get_scorer("l2", "channel").scores == "channel" and not imp.needs_data("l2", "channel")
    assert imp.needs_data("taylor", "channel") and imp.needs_data("obs", "layer")
    with pytest.raises(ValueError, match="unknown importance method 'l2'"):
        imp.get_scorer("l2", "layer")  # a channel scorer is not a layer scorer
    with pytest.raises(ValueError, match="scores must be one of"):
        imp.list_importance("group")


# ------------------------------------------------------------------ every scorer on the residual net
@pytest.mark.parametrize("method", SCORERS)
def test_scorer_shapes_and_zeroed_channel_lowest(method):
    model = residual_net()
    cg = channel_graph(model)
    assert sorted(g.name for g in cg.prunable) == ["c1", "c3", "c4"]
    s = scores_of(model, method).scores
    assert {g: v.shape for g, v in s.items()} == {"c1": (6,), "c3": (5,), "c4": (4,)}
    assert all(np.all(v >= 0) and np.any(v > 0) for v in s.values())
    for group, j in (("c1", 2), ("c3", 4), ("c4", 1)):
        zeroed = residual_net()
        zero_channel(zeroed, group, j)
        z = scores_of(zeroed, method).scores[group]
        assert z[j] == pytest.approx(0.0, abs=1e-9), (method, group, z)
        assert z[j] <= z.min() and np.sum(z > 0) >= z.size - 2, (method, group, z)
        if method in ("l1", "l2", "bn_scale"):  # data-free: strictly lowest
            assert np.all(np.delete(z, j) > 0)


def test_bn_scale_sums_gammas_and_falls_back_without_bn():
    model = residual_net()
    rep = channel_importance(model, "bn_scale")
    g1, g2, g3 = (np.abs(model.get_layer(n).gamma.numpy()) for n in ("bn1", "bn2", "bn3"))
    np.testing.assert_allclose(rep.scores["c1"], g1 + g2)
    np.testing.assert_allclose(rep.scores["c3"], g3)
    np.testing.assert_allclose(rep.scores["c4"], channel_importance(model, "l2").scores["c4"])  # no BN: the l2 fallback
    assert any("'l2' instead of 'bn_scale'" in n and "c4" in n for n in rep.notes)
    assert "instead of 'bn_scale'" in rep.table()
    with pytest.raises(ValueError, match="cannot score 1 groups \\(c4\\).*no BatchNormalization"):
        channel_importance(model, "bn_scale", bn_fallback=None)


def test_taylor_equals_the_derivative_of_a_gate_on_the_consumers_inputs():
    import tensorflow as tf

    model = residual_net()
    x, y = data(32)
    s = channel_importance(model, "taylor", data=(x, y), batch_size=32).scores  # one batch: |t|
    lay = {n: model.get_layer(n) for n in ("c1", "bn1", "r1", "c2", "bn2", "add", "r2", "c3", "bn3", "r3", "c4", "r4", "gap", "out")}
    gates = [tf.Variable(tf.ones(n)) for n in (6, 5, 4)]  # one gate per group, on what its consumers read (removal = gate 0)

    def forward(m1, m3, m4):
        a = lay["r1"](lay["bn1"](lay["c1"](x), training=False))
        b = lay["bn2"](lay["c2"](a * m1), training=False)
        r = lay["r2"](lay["add"]([a, b]))
        c = lay["r3"](lay["bn3"](lay["c3"](r * m1), training=False))
        d = lay["r4"](lay["c4"](c * m3))
        return lay["out"](lay["gap"](d) * m4)

    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, forward(*gates))
    dm = [g.numpy() for g in tape.gradient(loss, gates)]
    np.testing.assert_allclose(model.predict(x, verbose=0), forward(*gates).numpy(), rtol=1e-5, atol=1e-6)
    for group, d in zip(("c1", "c3", "c4"), dm):  # c1: both consumers (c2, strided c3) share the gate of the Add group
        np.testing.assert_allclose(s[group], np.abs(d), rtol=1e-4, atol=1e-7)
    two = channel_importance(model, "taylor", data=(x, y), batch_size=16).scores["c3"]
    assert two.shape == (5,) and not np.allclose(two, s["c3"])  # two batches: RMS of per-batch sums


def test_obs_dense_consumer_matches_numpy():
    model = residual_net()
    x, y = data(40)
    s = channel_importance(model, "obs", data=x, damp=1e-3).scores["c4"]
    feats = keras.Model(model.inputs, model.get_layer("gap").output)(x).numpy().astype(np.float64)
    X = np.hstack([feats, np.ones((len(feats), 1))])
    out = model.get_layer("out")
    W = np.vstack([out.kernel.numpy(), out.bias.numpy()[None]]).astype(np.float64)
    expected = channel_removal_error(W, X.T @ X / len(X), [np.array([c]) for c in range(4)], damp=1e-3)
    np.testing.assert_allclose(s, np.sqrt(expected), rtol=1e-6)
    plain = channel_importance(model, "obs", data=x, correction=False).scores["c4"]  # the channel's output energy, no re-solve
    k = out.kernel.numpy().astype(np.float64)
    np.testing.assert_allclose(plain ** 2, sum(np.mean((feats * k[:, o]) ** 2, axis=0) for o in range(3)), rtol=1e-6)


def test_obs_skips_large_consumers_with_note():
    model = residual_net()
    rep = channel_importance(model, "obs", data=data()[0], max_dim=30)  # c2, c3 have 54 rows (+ bias): skipped
    assert any("not scored" in n and "c2" in n and "c3" in n for n in rep.notes)
    assert any("'l2' instead of 'obs'" in n and "c1" in n for n in rep.notes)
    np.testing.assert_allclose(rep.scores["c1"], channel_importance(model, "l2").scores["c1"])


# ------------------------------------------------------------------ numpy second-order math vs brute force
def brute_force_error(X, W, Q, correct):
    """min over W' with rows Q zero of ||X W - X W'||^2 / N (or W' = W with rows Q zeroed)."""
    keep = np.setdiff1d(np.arange(W.shape[0]), Q)
    if correct:
        B, *_ = np.linalg.lstsq(X[:, keep], X @ W, rcond=None)
        R = X @ W - X[:, keep] @ B
    else:
        R = X[:, Q] @ W[Q]
    return float(np.sum(R * R) / len(X))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel_removal_error_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d, o = 60, 9, 4
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))  # correlated inputs: the correction matters
    X[:, -1] = 1.0  # a bias column (never removed)
    W = rng.normal(size=(d, o))
    H = X.T @ X / n
    sets = [np.array([0, 3, 6]), np.array([1, 4, 7]), np.array([2, 5]), np.array([4])]  # channels as tap rows; mixed sizes
    exact = channel_removal_error(W, H, sets, damp=0.0)
    plain = channel_removal_error(W, H, sets, correction=False)
    for i, Q in enumerate(sets):
        assert exact[i] == pytest.approx(brute_force_error(X, W, Q, True), rel=1e-8)
        assert plain[i] == pytest.approx(brute_force_error(X, W, Q, False), rel=1e-10)
        assert exact[i] <= plain[i] + 1e-12  # re-solving never hurts
    damped = channel_removal_error(W, H, sets, damp=1e-3)
    np.testing.assert_allclose(damped, exact, rtol=0.05)
    with pytest.raises(ValueError, match="W must be"):
        channel_removal_error(W, H[:3, :3], sets)


# ------------------------------------------------------------------ plan and one-shot
@pytest.mark.parametrize("method", SCORERS)
def test_plan_channels_with_each_scorer(method):
    model = residual_net()
    x, y = data()
    kw = {"data": (x, y)} if tfprune.importance.needs_data(method, "channel") else {}
    plan = tfprune.plan(model, macs=0.3, granularity="channel", importance=method, allocation="global_ratio", tolerance=0.05, **kw)
    assert plan.importance_name == method and plan.remove and abs(plan.achieved - 0.3) <= 0.05
    scores = channel_importance(model, method, **kw).scores
    for g, chans in plan.remove.items():  # within a group the lowest scores go first
        assert max(scores[g][chans]) <= min(np.delete(scores[g], chans)) + 1e-12
    small, rep = shrink(model, plan.remove)
    assert rep.max_abs_diff < 1e-4 and small.count_params() < model.count_params()


def test_prune_channels_uses_data_for_the_scorer():
    model = residual_net()
    x, y = data()
    small, rep = prune_channels(model, macs=0.3, data=(x, y), importance="taylor", importance_options={"n_samples": 32},
                                allocation="uniform", tolerance=0.05)
    assert rep.plan.importance_name == "taylor" and small.count_params() < model.count_params()
    assert any("taylor: 1 batches" in n for n in rep.plan.notes)
    with pytest.raises(ValueError, match="needs calibration data"):
        prune_channels(model, macs=0.3, importance="obs")
