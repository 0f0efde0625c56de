"""Channel graph and shrink coverage of the layers shipped models use (issue 19, item 3).

Grouped convolutions (depthwise written as ``Conv2D(groups=C)``, and G = 2 / 4
groups), per-channel scales (ConvNeXt's ``LayerScale``), LayerNormalization
over the channels (stays frozen, with a plain reason), ``Lambda`` (freezes only
its own groups), `channel_weights`, and tf_keras.applications ConvNeXtTiny and
RegNetX002. Exactness is checked by `shrink` itself (every tensor of the shrunk
model against the masked model's, computed by Keras) and again here on the
outputs. Every assertion is on deterministic properties (group structure,
layer configs, exact zeros); random weights only feed the exactness checks.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.inventory.profiling import profile
from tfprune.structured import ChannelWeight, channel_graph, channel_weights, shrink
from tfprune.structured.plan import CostModel

L = keras.layers
ATOL = 1e-4


def layer_scale(init, dim, name):
    from tf_keras.src.applications.convnext import LayerScale

    return LayerScale(init, dim, name=name)


def randomize(model, seed=0):
    """Random BatchNorm statistics and LayerScale gammas (far from the defaults, so a mistake in slicing them shows)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(size=c), rng.normal(size=c) * 0.3, rng.uniform(0.5, 2.0, c)])
        elif type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.uniform(0.5, 1.5, layer.gamma.shape[0])])
    return model


def inputs_for(model, n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype(np.float32)


def masked_outputs_equal(masked, new):
    x = inputs_for(masked)
    a, b = masked(x, training=False).numpy(), new(x, training=False).numpy()
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= ATOL * max(1.0, float(np.max(np.abs(a))))


def by_producer(cg):
    return {g.producers[0] if g.producers else g.name: g for g in cg.groups}


def grouped_model():
    """conv -> BN -> grouped conv (G=4) -> BN -> grouped 1x1 (G=2) -> depthwise as groups (M=1) -> BN -> depthwise as groups (M=2)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(16, 3, padding="valid", groups=4, name="g4")(x)  # 2 inputs, 4 outputs per group
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.Conv2D(8, 1, groups=2, name="g2")(x)  # 8 inputs, 4 outputs per group
    x = L.Conv2D(8, 3, padding="same", groups=8, name="dwg")(x)  # depthwise, M = 1
    x = L.BatchNormalization(name="bn3")(x)
    x = L.ReLU(name="r3")(x)
    x = L.Conv2D(16, 3, padding="same", groups=8, name="dwg2")(x)  # depthwise, M = 2
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="fc")(x), name="grouped"))


# ------------------------------------------------------------------ grouped convolutions
def test_grouped_graph_ties_channel_i_of_every_group():
    cg = channel_graph(grouped_model())
    groups = by_producer(cg)
    assert len(cg.prunable) == 3
    c1, g4, g2 = groups["c1"], groups["g4"], groups["g2"]
    # g4 reads 2 inputs per group: c1's entry i is tied to entries i+2, i+4, i+6 -> 2 channels of 4 entries
    assert c1.channels == 2 and c1.prunable
    assert [cg.positions(c1, ("c1", 0))[j].tolist() for j in range(2)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert c1.consumers == ["g4"] and {"bn1", "r1"} <= set(c1.members)
    # g4 makes 4 outputs per group: filter j of every group is one channel
    assert g4.channels == 4 and g4.consumers == ["g2"]
    assert cg.positions(g4, ("g4", 0))[1].tolist() == [1, 5, 9, 13]
    # g2 (4 outputs per group of 2) through two depthwise-as-groups layers: the same group, M = 2 at dwg2
    assert g2.channels == 4 and g2.consumers == ["fc"] and {"dwg", "bn3", "dwg2"} <= set(g2.members)
    assert cg.positions(g2, ("dwg2", 0))[0].tolist() == [0, 1, 8, 9]
    assert cg.nodes["dwg"].kind == cg.nodes["dwg2"].kind == "depthwise_groups"


def test_grouped_shrink_is_exact_and_stays_a_valid_grouped_conv():
    model = grouped_model()
    cg = channel_graph(model)
    groups = by_producer(cg)
    remove = {groups["c1"].name: [1], groups["g4"].name: [0, 2], groups["g2"].name: [3]}
    new, rep = shrink(model, remove)
    assert rep.max_rel_diff_tensors <= ATOL and rep.channels_removed == 4
    cfg = {n: new.get_layer(n).get_config() for n in ("c1", "g4", "g2", "dwg", "dwg2")}
    assert cfg["c1"]["filters"] == 4
    assert (cfg["g4"]["filters"], cfg["g4"]["groups"]) == (8, 4)
    assert new.get_layer("g4").kernel.shape == (3, 3, 1, 8)
    assert (cfg["g2"]["filters"], cfg["g2"]["groups"]) == (6, 2)
    assert new.get_layer("g2").kernel.shape == (1, 1, 4, 6)
    assert (cfg["dwg"]["filters"], cfg["dwg"]["groups"]) == (6, 6)
    assert (cfg["dwg2"]["filters"], cfg["dwg2"]["groups"]) == (12, 6)
    masked = tfprune.structured.mask_channels(model, remove)
    masked_outputs_equal(masked, new)
    # the cost model (plan) and tfprune.profile of the shrunk model agree, MACs and params
    cost = CostModel(cg)
    labels = [int(cg.group(g).labels[j]) for g, js in remove.items() for j in js]
    assert cost.estimate(cost.removed_mask(np.asarray(labels))) == (profile(new).macs, profile(new).params)
    assert (rep.macs_after, rep.params_after) == (profile(new).macs, profile(new).params)
    g4_macs = {r.name: r.macs for r in profile(new).layers}["g4"]
    assert g4_macs == 6 * 6 * 8 * 9 * 1  # positions * filters * kernel * inputs per group


def test_grouped_consumer_folds_a_constant_channel():
    """Only c1's filters of channel 1 (entries 1, 3, 5, 7) zeroed: after BN+ReLU it is a constant that g4 (valid padding) folds."""
    model = grouped_model()
    w = model.get_layer("c1").get_weights()
    w[0][..., [1, 3, 5, 7]] = 0
    w[1][[1, 3, 5, 7]] = 0
    model.get_layer("c1").set_weights(w)
    bn = model.get_layer("bn1").get_weights()
    bn[1][[1, 3, 5, 7]] = np.abs(bn[1][[1, 3, 5, 7]]) + 1.0  # beta > 0: ReLU keeps a non-zero constant
    bn[2][[1, 3, 5, 7]] = 0.0
    model.get_layer("bn1").set_weights(bn)
    new, rep = shrink(model)
    assert rep.removed == {by_producer(channel_graph(model))["c1"].name: [1]}
    assert rep.folded == {"g4": 4}
    masked_outputs_equal(model, new)


def test_grouped_depthwise_same_padding_keeps_a_nonzero_constant():
    """g2's channel 0 (entries 0 and 4) masked in g2 only: BN3 makes it the constant beta > 0, which the 3x3 "same" dwg2 cannot keep."""
    model = grouped_model()
    w = model.get_layer("g2").get_weights()
    w[0][..., [0, 4]] = 0
    w[1][[0, 4]] = 0
    model.get_layer("g2").set_weights(w)
    d = model.get_layer("dwg").get_weights()
    d[1][[0, 4]] = 0
    model.get_layer("dwg").set_weights(d)
    bn = model.get_layer("bn3").get_weights()
    bn[1][[0, 4]] = np.abs(bn[1][[0, 4]]) + 1.0
    bn[2][[0, 4]] = 0.0
    model.get_layer("bn3").set_weights(bn)
    new, rep = shrink(model)
    assert not rep.removed and len(rep.kept) == 1
    assert "'dwg2' (padding='same')" in next(iter(rep.kept.values()))
    masked_outputs_equal(model, new)
    _, rep = shrink(model, {by_producer(channel_graph(model))["g2"].name: [0]})  # masked in the whole group (BN3 too): exact
    assert rep.channels_removed == 1


# ------------------------------------------------------------------ LayerScale, LayerNorm, Lambda
def scale_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = layer_scale(0.1, 8, "ls1")(x)
    x = L.Activation("gelu", name="act")(x)
    x = L.Conv2D(8, 3, padding="same", groups=8, name="dwg")(x)
    x = layer_scale(0.1, 8, "ls2")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="fc")(x), name="scaled"))


def test_layer_scale_is_a_value_layer_sliced_by_shrink():
    model = scale_model()
    cg = channel_graph(model)
    g = by_producer(cg)["c1"]
    assert g.prunable and g.channels == 8 and {"ls1", "act", "dwg", "ls2"} <= set(g.members)
    assert cg.nodes["ls1"].kind == "value"
    new, rep = shrink(model, {g.name: [0, 3, 5]})
    assert new.get_layer("ls1").get_config()["projection_dim"] == 5
    np.testing.assert_array_equal(new.get_layer("ls2").gamma.numpy(), model.get_layer("ls2").gamma.numpy()[[1, 2, 4, 6, 7]])
    masked_outputs_equal(tfprune.structured.mask_channels(model, {g.name: [0, 3, 5]}), new)


def convnext_block():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 2, strides=2, name="stem")(inp)
    r = L.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    y = L.Conv2D(8, 3, padding="same", groups=8, name="dw")(r)
    y = L.LayerNormalization(epsilon=1e-6, name="ln")(y)
    y = L.Dense(32, name="pw1")(y)
    y = L.Activation("gelu", name="gelu")(y)
    y = L.Dense(8, name="pw2")(y)
    y = layer_scale(0.5, 8, "ls")(y)
    x = L.Add(name="add")([r, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="fc")(x), name="convnext_block"))


def test_layernorm_over_channels_stays_frozen_with_a_plain_reason():
    model = convnext_block()
    cg = channel_graph(model)
    groups = by_producer(cg)
    assert [g.name for g in cg.prunable] == ["pw1"]  # the MLP's hidden channels
    residual = groups["pw2"]  # pw2 -> LayerScale -> Add -> residual stream read by dw, made by stem_ln
    assert {"ls", "add", "dw"} <= set(residual.members) and not residual.prunable
    for g in (residual, groups["stem"]):
        assert "mean and variance mix all channels" in g.frozen and "not exact" in g.frozen
    new, rep = shrink(model, {"pw1": list(range(0, 32, 3))})
    assert new.get_layer("pw1").units == 21
    masked_outputs_equal(tfprune.structured.mask_channels(model, {"pw1": list(range(0, 32, 3))}), new)


def lambda_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(8, 3, padding="same", name="a")(inp)
    b = L.Lambda(lambda t: t * 2.0, name="lam")(a)
    c = L.Conv2D(6, 3, padding="same", name="c")(b)
    c = L.BatchNormalization(name="bn")(c)
    c = L.ReLU(name="relu")(c)
    d = L.Conv2D(5, 1, name="d")(c)
    return randomize(keras.Model(inp, L.GlobalAveragePooling2D(name="gap")(d), name="with_lambda"))


def test_lambda_freezes_only_the_groups_it_touches():
    model = lambda_model()
    cg = channel_graph(model)  # the whole model was rejected before (Lambda could not be rebuilt in Keras' safe mode)
    groups = by_producer(cg)
    for key in ("a", "lam"):
        assert "Lambda 'lam'" in groups[key].frozen and "cannot read" in groups[key].frozen
    assert [g.name for g in cg.prunable] == ["c"]
    new, rep = shrink(model, {"c": [1, 4]})
    assert new.get_layer("c").filters == 4 and isinstance(new.get_layer("lam"), L.Lambda)
    masked_outputs_equal(tfprune.structured.mask_channels(model, {"c": [1, 4]}), new)


# ------------------------------------------------------------------ channel_weights
def depthwise_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    x = L.ReLU(name="r3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return randomize(keras.Model(inp, L.Dense(3, name="fc")(x), name="depthwise"))


def test_channel_weights_lists_every_channel_variable():
    listed = {(w.layer, w.weight, w.producer) for w in channel_weights(channel_graph(grouped_model()))}
    assert {("c1", "kernel", True), ("c1", "bias", False), ("g4", "kernel", True), ("g2", "bias", False), ("dwg", "kernel", False),
            ("dwg2", "bias", False), ("bn1", "gamma", False), ("bn2", "beta", False), ("bn3", "moving_mean", False),
            ("fc", "kernel", True)} <= listed
    assert not any(w == "moving_variance" for _, w, _ in listed)
    listed = {(w.layer, w.weight) for w in channel_weights(channel_graph(scale_model()))}
    assert {("ls1", "gamma"), ("ls2", "gamma"), ("dwg", "kernel")} <= listed
    cg = channel_graph(depthwise_model())
    dw = [w for w in channel_weights(cg) if (w.layer, w.weight) == ("dw", "depthwise_kernel")]
    assert len(dw) == 1 and dw[0].labels.shape == (1, 1, 6, 2) and dw[0].axis == 2
    assert {("sep", "pointwise_kernel"), ("sep", "bias"), ("bn2", "gamma")} <= {(w.layer, w.weight) for w in channel_weights(cg)}
    with pytest.raises(TypeError, match="cg must be a ChannelGraph"):
        channel_weights(depthwise_model())


def group_tensor_values(cg, group, x):
    """{tensor: its values} for every tensor of ``group`` in the graph's flat copy."""
    keys = list(group.tensors)
    outs = [tf.nest.flatten(cg.flat.get_layer(n).output)[i] for n, i in keys]
    return dict(zip(keys, (np.asarray(v) for v in tf.nest.flatten(keras.Model(cg.flat.inputs, outs)(x, training=False)))))


@pytest.mark.parametrize("build", [grouped_model, scale_model, depthwise_model, convnext_block])
def test_channel_weights_zero_one_channel_exactly(build):
    """Multiplying the listed variables by the keep-vector of one channel makes it exactly 0 in every tensor of its group."""
    model = build()
    x = inputs_for(model)
    for group in channel_graph(model).prunable:
        for j in (0, group.channels - 1):
            cg = channel_graph(model)  # a fresh flat copy to mask
            g = cg.group(group.name)
            label = int(g.labels[j])
            for w in channel_weights(cg):
                var = w.variable(cg, source=False)
                var.assign(var.numpy() * w.keep([label]))
            values = group_tensor_values(cg, g, x)
            for key, v in values.items():
                at = cg.labels[key] == label
                assert at.any() and np.all(v[..., at] == 0.0), (group.name, j, key)
                assert np.any(v[..., ~at] != 0.0), (group.name, j, key)


def test_channel_weights_on_the_users_model_then_shrink():
    """Masking the input model's own variables (``source=True``) is what ``shrink(model)`` reads as masked: it removes them exactly."""
    model = grouped_model()
    cg = channel_graph(model)
    g = by_producer(cg)["g4"]
    labels = [int(g.labels[1]), int(g.labels[3])]
    for w in channel_weights(cg):
        var = w.variable(cg)
        var.assign(var.numpy() * w.keep(labels))
    assert isinstance(channel_weights(cg)[0], ChannelWeight)
    new, rep = shrink(model)
    assert rep.removed == {g.name: [1, 3]} and new.get_layer("g4").filters == 8
    masked_outputs_equal(model, new)


# ------------------------------------------------------------------ keras.applications
#: frozen / all groups of channel_graph(app(weights=None, include_top=False, input_shape=(32, 32, 3))) at 8db7aa9 (before this work)
BEFORE = {"ConvNeXtTiny": (64, 82), "RegNetX002": (28, 32)}
AFTER = {"ConvNeXtTiny": (28, 46), "RegNetX002": (2, 32)}


@pytest.mark.slow  # ConvNeXtTiny ~12 s, RegNetX002 ~8 s: make test-all (the synthetic grouped / scale / depthwise models above stay)
@pytest.mark.parametrize("app", ["ConvNeXtTiny", "RegNetX002"])
def test_applications_frozen_groups_and_plan_shrink(app):
    import tf_keras

    keras.utils.set_random_seed(0)
    model = getattr(tf_keras.applications, app)(weights=None, include_top=False, input_shape=(32, 32, 3))
    cg = channel_graph(model)
    assert (len(cg.frozen), len(cg.groups)) == AFTER[app]
    assert len(cg.frozen) < BEFORE[app][0] and len(cg.prunable) >= BEFORE[app][1] - BEFORE[app][0]
    reasons = {r for why in cg.frozen.values() for r in why.split("; ")}
    assert not any("grouped convolution" in r or "LayerScale" in r for r in reasons)
    if app == "ConvNeXtTiny":  # what stays frozen is LayerNorm (and the model's input and output), said plainly
        assert all("LayerNormalization" in r or r.startswith("model input") or r.startswith("model output") for r in reasons)
    plan = tfprune.plan(model, macs=0.3, granularity="channel")
    small, rep = shrink(model, plan.remove)
    assert abs(plan.achieved - 0.3) <= plan.tolerance
    cost = CostModel(cg)  # the planner's estimate is the shrunk model's profile (grouped convs, LayerScale included)
    labels = np.asarray([int(cg.group(g).labels[j]) for g, js in plan.remove.items() for j in js])
    assert cost.estimate(cost.removed_mask(labels)) == (profile(small).macs, profile(small).params)
    assert rep.max_abs_diff <= rep.tolerance and rep.max_rel_diff_tensors <= ATOL  # shrink's own check (it raises otherwise)
    assert (plan.macs_after, plan.params_after) == (profile(small).macs, profile(small).params)


# ------------------------------------------------------------------ channel scores on grouped convolutions
def test_l2_scores_count_a_grouped_consumers_rows():
    """Channel 0 of c1's group is entries 0, 2, 4, 6 of c1 and bn1, and row 0 of every group of g4's (3, 3, 2, 16) kernel."""
    model = grouped_model()
    cg = channel_graph(model)
    g = by_producer(cg)["c1"]
    score = tfprune.structured.channel_importance(model, "l2", graph=cg).scores[g.name]
    k, b = model.get_layer("c1").get_weights()
    gamma, beta = model.get_layer("bn1").get_weights()[:2]
    g4 = model.get_layer("g4").kernel.numpy()
    for j in range(2):
        at = [j, j + 2, j + 4, j + 6]
        want = np.sum(k[..., at] ** 2) + np.sum(b[at] ** 2) + np.sum(gamma[at] ** 2) + np.sum(beta[at] ** 2) + np.sum(g4[:, :, j, :] ** 2)
        assert score[j] == pytest.approx(np.sqrt(want), rel=1e-6)


def test_data_scorers_on_grouped_convolutions():
    model = grouped_model()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = inputs_for(model, n=16)
    y = np.arange(16) % 3
    cg = channel_graph(model)
    taylor = tfprune.structured.channel_importance(model, "taylor", graph=cg, data=(x, y))
    assert all(taylor.scores[g.name].shape == (g.channels,) for g in cg.prunable)
    assert np.all(taylor.scores[by_producer(cg)["c1"].name] > 0)  # read only by the grouped g4: its rows are counted
    obs = tfprune.structured.channel_importance(model, "obs", graph=cg, data=x)
    assert any("g4 (grouped convolution, groups=4)" in n for n in obs.notes)
    assert any("scored by 'l2'" in n and by_producer(cg)["c1"].name in n for n in obs.notes)  # its only consumer is g4


def test_grouped_conv1d_shrinks_exactly():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 6))
    x = L.Conv1D(8, 3, name="c1")(inp)
    x = L.ReLU(name="r1")(x)
    x = L.Conv1D(12, 3, groups=2, name="g2")(x)  # 4 inputs, 6 outputs per group
    x = L.Conv1D(12, 3, padding="same", groups=12, name="dw")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    model = keras.Model(inp, L.Dense(3, name="fc")(x), name="conv1d")
    cg = channel_graph(model)
    groups = by_producer(cg)
    assert (groups["c1"].channels, groups["g2"].channels) == (4, 6)
    remove = {groups["c1"].name: [2], groups["g2"].name: [0, 5]}
    new, rep = shrink(model, remove)
    assert new.get_layer("g2").kernel.shape == (3, 3, 8) and new.get_layer("g2").groups == 2
    assert (new.get_layer("dw").filters, new.get_layer("dw").groups) == (8, 8)
    masked_outputs_equal(tfprune.structured.mask_channels(model, remove), new)
