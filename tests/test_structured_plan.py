"""Channel plans under a MACs/params target (``tfprune.plan(granularity="channel")``) and the one-shot path (prune_channels).

The numpy rules are checked on hand-made numbers; the plan is checked against
`tfprune.profile` of models shrunk by `shrink` (the cost model's estimate must
equal the profile of the shrunk model, and the achieved fraction must be
within the tolerance of the request).
"""

import json

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.allocation import group_keys
from tfprune.allocation.global_ratio import max_normalised
from tfprune.allocation.uniform import rank_keys
from tfprune.inventory.profiling import profile
from tfprune.structured import channel_graph, shrink
from tfprune.structured.plan import CostModel, group_importance, removal_order, smallest_prefix
from tfprune.structured.prune import prune_channels, top1_accuracy

L = keras.layers


def snapshot(model):
    return json.dumps(model.get_config(), sort_keys=True, default=str), [w.copy() for w in model.get_weights()]


def assert_unchanged(model, snap):
    config, weights = snap
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == config
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def mixed_model(seed=0):
    """Conv+BN, a residual Add, depthwise, separable, concat, Flatten -> Dense: every cost rule of the plan."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3))
    a = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    a = L.BatchNormalization(name="bn1")(a)
    a = L.ReLU()(a)
    b = L.Conv2D(8, 3, padding="same", name="c2")(a)
    r = L.Add(name="add")([a, b])
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(r)
    s = L.SeparableConv2D(6, 3, padding="same", name="sep")(d)
    c = L.Conv2D(5, 1, name="c3")(r)
    cat = L.Concatenate(name="cat")([s, c])
    p = L.MaxPooling2D(2)(cat)
    f = L.Flatten()(p)
    h = L.Dense(7, name="fc1", activation="relu")(f)
    out = L.Dense(4, name="out")(h)
    return keras.Model(inp, out, name="mixed")


# ------------------------------------------------------------------ numpy rules
def test_rank_keys_rank_fractions():
    np.testing.assert_allclose(rank_keys(np.array([3.0, 1.0, 2.0, 5.0])), [0.75, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(rank_keys(np.array([1.0, 1.0])), [0.5, 1.0])  # ties: stable


def test_max_normalised_and_all_zero_group():
    np.testing.assert_allclose(max_normalised(np.array([1.0, 4.0, 2.0])), [0.25, 1.0, 0.5])
    np.testing.assert_array_equal(max_normalised(np.zeros(3)), np.ones(3))


def allocation_keys(scores, allocation, importances=None, gamma=1.0):
    imps = np.ones(len(scores)) if importances is None and allocation != "importance" else importances
    return group_keys(allocation)(scores, np.zeros(0) if imps is None else imps, gamma)


def test_group_keys_of_each_allocator():
    scores = [np.array([1.0, 2.0]), np.array([3.0, 6.0])]
    g = allocation_keys(scores, "global_ratio")
    np.testing.assert_allclose(g[0], [0.5, 1.0])
    np.testing.assert_allclose(g[1], [0.5, 1.0])
    raw = allocation_keys(scores, "global")
    np.testing.assert_allclose(raw[1], [3.0, 6.0])
    lamp = allocation_keys(scores, "lamp")  # s^2 / sum of s^2 over the channels at least as large
    np.testing.assert_allclose(lamp[0], [1.0 / 5.0, 1.0])
    uni = allocation_keys(scores, "uniform")
    same = allocation_keys(scores, "importance", np.array([2.0, 2.0]))
    for a, b in zip(same, uni):  # equal importances: uniform
        np.testing.assert_allclose(a, b)
    imp = allocation_keys(scores, "importance", np.array([1.0, 4.0]))
    np.testing.assert_allclose(imp[0], [0.125, 0.25])  # uniform keys [0.5, 1] times (1/4): the less important group goes first
    np.testing.assert_allclose(imp[1], [0.5, 1.0])
    sq = allocation_keys(scores, "importance", np.array([1.0, 4.0]), gamma=2.0)
    np.testing.assert_allclose(sq[0], [0.5 / 16, 1.0 / 16])
    with pytest.raises(ValueError, match="allocates weights only"):
        allocation_keys(scores, "erk")
    with pytest.raises(ValueError, match="one importance per group"):
        allocation_keys(scores, "importance")


def test_importance_removes_fractions_inverse_to_importance_and_never_collapses():
    rng = np.random.default_rng(0)
    scores = [rng.random(40), rng.random(40), rng.random(40)]
    imps = np.array([1.0, 0.5, 0.25])
    keys = allocation_keys(scores, "importance", imps)
    for t in (0.1, 0.2):
        removed = [float(np.mean(k <= t)) for k in keys]
        np.testing.assert_allclose(removed, [t, 2 * t, 4 * t], atol=1 / 40)  # fraction removed = t / w_g
    # near-equal importances (as capacities of channel groups often are) stay near uniform: no group is emptied
    close = allocation_keys(scores, "importance", np.array([0.53, 0.52, 0.54]))
    g, c = removal_order(close, min_channels=1)
    per_group = np.bincount(g[: 60], minlength=3)  # half of all channels
    assert per_group.min() >= 18 and per_group.max() <= 22


def test_removal_order_keeps_min_channels_and_sorts():
    keys = [np.array([0.9, 0.1, 0.5]), np.array([0.2, 0.3])]
    g, c = removal_order(keys, min_channels=1)
    assert list(zip(g.tolist(), c.tolist())) == [(0, 1), (1, 0), (0, 2)]  # group 0 keeps channel 0, group 1 channel 1
    g, c = removal_order(keys, min_channels=2)
    assert list(zip(g.tolist(), c.tolist())) == [(0, 1)]
    g, c = removal_order(keys, min_channels=5)
    assert g.size == 0


def test_smallest_prefix_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        costs = np.concatenate([[100.0], 100.0 - np.cumsum(rng.uniform(0, 5, 30))])
        target = rng.uniform(costs[-1] - 5, 105)
        k = smallest_prefix(costs.__getitem__, costs.size - 1, target)
        ok = np.flatnonzero(costs <= target)
        assert k == (ok[0] if ok.size else costs.size - 1)


def test_group_importance_by_name_suffix_and_fill():
    imp = group_importance([["a", "b"], ["inner/c"], ["zz"]], {"a": 1.0, "b": 3.0, "outer/c": 4.0})
    np.testing.assert_allclose(imp, [2.0, 4.0, 3.0])  # "zz" unscored: mean of the others


# ------------------------------------------------------------------ the cost model
def test_cost_model_equals_profile_of_shrunk_model():
    model = mixed_model()
    cg = channel_graph(model)
    cost = CostModel(cg)
    assert cost.dense == (profile(model).macs, profile(model).params)
    rng = np.random.default_rng(1)
    for trial in range(3):
        remove = {g.name: sorted(rng.choice(g.channels, rng.integers(1, g.channels), replace=False).tolist()) for g in cg.prunable}
        labels = np.array([int(g.labels[j]) for g in cg.prunable for j in remove[g.name]])
        est = cost.estimate(cost.removed_mask(labels))
        small, _ = shrink(model, remove)
        assert est == (profile(small).macs, profile(small).params), trial


# ------------------------------------------------------------------ tfprune.plan(granularity="channel")
@pytest.mark.parametrize("allocation", ["uniform", "global_ratio", "importance"])
def test_plan_reaches_macs_target_and_keeps_min_channels(allocation):
    model = tfprune.models.resnet_cifar(20, (16, 16, 1))
    snap = snapshot(model)
    plan = tfprune.plan(model, macs=0.5, granularity="channel", allocation=allocation, min_channels=4)
    small, rep = shrink(model, plan.remove)
    assert_unchanged(model, snap)
    assert abs(plan.achieved - 0.5) <= 0.02  # one channel of the stage-1 residual group is ~1.5% of the MACs
    assert plan.achieved == pytest.approx(1 - profile(small).macs / profile(model).macs)
    assert plan.macs_after == profile(small).macs and plan.params_after == profile(small).params
    assert all(g.kept >= 4 for g in plan.groups)
    assert sum(g.removed for g in plan.groups) == sum(len(v) for v in plan.remove.values()) > 0
    assert "fc" in plan.frozen  # the output layer is never pruned by default
    assert plan.allocator in plan.table() and plan.budget == "macs" and plan.granularity == "channel"


def test_plan_params_target_and_uniform_fractions():
    model = tfprune.models.resnet_cifar(20, (16, 16, 1))
    plan = tfprune.plan(model, params=0.4, allocation="uniform", granularity="channel")
    assert plan.budget == "params" and abs(plan.achieved - 0.4) <= 0.02
    assert plan.params_removed == pytest.approx(plan.achieved)
    fracs = [g.removed / g.channels for g in plan.groups]
    assert max(fracs) - min(fracs) <= 1 / 16 + 1e-9  # same fraction up to one channel of the smallest group


def test_plan_importance_moves_channels_to_less_important_groups():
    model = mixed_model()
    uni = tfprune.plan(model, macs=0.4, allocation="global_ratio", granularity="channel")
    imp = tfprune.plan(model, macs=0.4, allocation="importance", granularity="channel")
    # the group importances are what the registry's capacity says of the producers
    scores = tfprune.score_layers(model, "capacity").scores
    for g in imp.groups:
        producers = [n for n in channel_graph(model).group(g.group).producers if n in scores]
        if producers:
            assert g.importance == pytest.approx(np.mean([scores[n] for n in producers]))
    assert {g.group for g in uni.groups} == {g.group for g in imp.groups}


def test_plan_importance_from_activation_capacity_needs_data():
    model = mixed_model()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="pass data"):
        tfprune.plan(model, macs=0.4, allocation="importance", layer_importance="capacity_activation", granularity="channel")
    x = np.random.default_rng(1).random((48, 12, 12, 3), dtype=np.float32)
    plan = tfprune.plan(model, macs=0.4, allocation="importance", layer_importance="capacity_activation", data=x, granularity="channel")
    assert plan.layer_importance == "capacity_activation" and abs(plan.achieved - 0.4) <= 0.05
    caps = tfprune.score_layers(model, "capacity_activation", data=x).scores
    for g in plan.groups:
        producers = [n for n in channel_graph(model).group(g.group).producers if n in caps]
        if producers:
            assert g.importance == pytest.approx(np.mean([caps[n] for n in producers]), rel=1e-6)
    assert_unchanged(model, snap)


def test_plan_errors_name_the_fix():
    model = mixed_model()
    with pytest.raises(ValueError, match="exactly one budget"):
        tfprune.plan(model, macs=0.5, params=0.5, granularity="channel")
    with pytest.raises(ValueError, match="counted in MACs or parameters"):
        tfprune.plan(model, 0.5, granularity="channel")
    with pytest.raises(ValueError, match="needs physical removal"):
        tfprune.plan(model, macs=0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        tfprune.plan(model, macs=1.2, granularity="channel")
    with pytest.raises(ValueError, match="for channel groups choose one of"):
        tfprune.plan(model, macs=0.5, allocation="erk", granularity="channel")
    with pytest.raises(ValueError, match="min_channels"):
        tfprune.plan(model, macs=0.5, min_channels=0, granularity="channel")


def test_plan_unreachable_target_raises_like_the_weight_plan():
    """A budget no plan can reach raises the same error type at both granularities, naming the reachable maximum."""
    from tfprune.validation import UnreachableTarget

    model = mixed_model()
    with pytest.raises(UnreachableTarget, match=r"macs=0.95: removing every channel.*removes only 0\.\d+.*Fix: ask for macs <="):
        tfprune.plan(model, macs=0.95, min_channels=4, granularity="channel")
    with pytest.raises(UnreachableTarget, match="allow at most"):
        tfprune.plan(model, 0.95, max_sparsity=0.5)


def test_plan_missing_its_target_by_a_channel_step_warns():
    """Reachable only to within one channel step: the plan is made, with a warning and MISSED in its table."""
    model = mixed_model()
    with pytest.warns(UserWarning, match="one channel step is larger than the tolerance"):
        plan = tfprune.plan(model, macs=0.3, tolerance=1e-6, granularity="channel")
    assert abs(plan.achieved - 0.3) > 1e-6
    assert "MISSED" in plan.table()


# ------------------------------------------------------------------ prune_channels
def test_top1_accuracy():
    assert top1_accuracy(np.array([0, 1, 1]), np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]])) == pytest.approx(2 / 3)
    assert top1_accuracy(np.eye(2)[[0, 1]], np.array([[2.0, 1.0], [0.0, 1.0]])) == 1.0


def test_prune_channels_one_shot_with_finetune():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 12, 12, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int64") + 2 * (x[..., 1].mean(axis=(1, 2)) > 0).astype("int64")
    model = mixed_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    snap = snapshot(model)
    small, report = prune_channels(model, macs=0.4, data=(x[:384], y[:384]), eval_data=(x[384:], y[384:]), finetune_epochs=2,
                                   batch_size=64)
    assert_unchanged(model, snap)
    assert profile(small).macs == report.plan.macs_after < profile(model).macs
    assert abs(report.plan.achieved - 0.4) <= 0.05
    ref = top1_accuracy(y[384:], model.predict(x[384:], verbose=0))
    assert report.acc_before == pytest.approx(ref)
    assert report.acc_after == pytest.approx(top1_accuracy(y[384:], small.predict(x[384:], verbose=0)))
    assert report.acc_shrunk is not None and report.finetune_epochs == 2
    assert report.loss_source == "the model's compiled loss"
    assert report.max_abs_diff <= 1e-4 * 10
    assert "fine-tuned 2 epochs" in report.table()
    d = report.to_dict()
    assert d["macs_removed"] == pytest.approx(report.plan.macs_removed)


def test_prune_channels_without_data_and_errors():
    model = mixed_model()
    small, report = prune_channels(model, macs=0.3)
    assert report.acc_before is None and report.finetune_epochs == 0
    assert profile(small).macs < profile(model).macs
    with pytest.raises(ValueError, match="needs labelled training data"):
        prune_channels(model, macs=0.3, finetune_epochs=1)


def test_prune_channels_reestimates_batchnorm():
    """A trained ResNet-8 shrunk by 50% of its MACs with ``recalibrate_bn=300``: every BatchNorm's moving mean and
    variance are the exact (population) statistics of its input over the first 300 training inputs, computed here
    independently with a sub-model of the shrunk model (``reestimate_batchnorm`` makes one pass over the 300 inputs
    as one batch, no momentum, so each BN's input already goes through the earlier BNs' final statistics). The input
    model is untouched; without re-estimation each BN keeps the dense model's statistics (of its kept channels)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(768, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype("int64")
    model = tfprune.models.resnet_cifar(8, (12, 12, 1), num_classes=2)
    tfprune.models.compile_classifier(model, 1e-3)
    model.fit(x[:512], y[:512], epochs=4, batch_size=64, verbose=0)
    snap = snapshot(model)
    data, ev = (x[:512], y[:512]), (x[512:], y[512:])
    stale_model, stale = prune_channels(model, macs=0.5, data=data, eval_data=ev, recalibrate_bn=0)
    small, fresh = prune_channels(model, macs=0.5, data=data, eval_data=ev, recalibrate_bn=300)
    assert_unchanged(model, snap)
    bns = [layer for layer in small.layers if isinstance(layer, L.BatchNormalization)]
    assert stale.bn_recalibrated == 0 and fresh.bn_recalibrated == len(bns) > 0
    assert any("re-estimated on 300 training samples" in n for n in fresh.notes)
    for bn in bns:
        a = keras.Model(small.inputs, bn.input)(x[:300], training=False).numpy().astype("float64")
        a = a.reshape(-1, a.shape[-1])  # (samples * positions, channels)
        mean, var = a.mean(0), a.var(0)  # population variance, as BatchNormalization keeps it
        scale = float(np.abs(mean).max() + np.sqrt(var.max()))
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5 * scale, err_msg=bn.name)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-5 * scale**2, err_msg=bn.name)
    # without re-estimation each BN keeps the dense model's statistics of its kept channels (copied, bit for bit)
    for bn in (layer for layer in stale_model.layers if isinstance(layer, L.BatchNormalization)):
        dense = model.get_layer(bn.name)
        assert np.isin(bn.moving_mean.numpy(), dense.moving_mean.numpy()).all(), bn.name
        assert np.isin(bn.moving_variance.numpy(), dense.moving_variance.numpy()).all(), bn.name
    _, nodata = prune_channels(model, macs=0.5)
    assert nodata.bn_recalibrated == 0 and any("not re-estimated" in n for n in nodata.notes)
