"""Channel groups (tfprune.structured.channel_graph) and physical channel removal (tfprune.structured.removal).

Most tests mask channels by hand in a copy of a tiny model (zero filters and
biases, and the BatchNorm channel where the rule needs it), shrink it, and
compare the new model's outputs with the masked model's own outputs: the
reference is computed by Keras on the masked model, not by tfprune.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.structured import channel_graph, channel_importance, lowest_channels, mask_channels, removable_channels, shrink
from tfprune.structured.removal import _check_inputs, _compare, fold_delta

L = keras.layers
ATOL = 1e-4


# ------------------------------------------------------------------ helpers
def snapshot(model):
    return json.dumps(model.get_config(), sort_keys=True, default=str), [w.copy() for w in model.get_weights()]


def assert_unchanged(model, snap):
    config, weights = snap
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == config
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def copy_model(model):
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    return new


def randomize_bn(model, seed=0):
    """BatchNorm statistics far from the defaults, so a masked channel becomes a non-zero constant after BN."""
    rng = np.random.default_rng(seed)

    def visit(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                visit(layer)
            elif isinstance(layer, L.BatchNormalization):
                c = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(size=c), rng.normal(size=c) * 0.3, rng.uniform(0.5, 2.0, c)])

    visit(model)
    return model


def zero_filters(layer, channels, bn=None):
    """Mask output channels of a Conv/Dense (filter and bias) and, if given, of the BatchNorm after it (gamma, beta, mean)."""
    ws = layer.get_weights()
    k = 1 if isinstance(layer, L.SeparableConv2D) else 0  # separable: [depthwise, pointwise, bias]
    if isinstance(layer, L.Conv2DTranspose):  # kernel (kh, kw, out, in)
        ws[0][:, :, channels, :] = 0
    else:
        ws[k][..., channels] = 0
    if len(ws) > k + 1:
        ws[k + 1][channels] = 0
    layer.set_weights(ws)
    if bn is not None:
        g, b, m, v = bn.get_weights()
        g[channels], b[channels], m[channels] = 0, 0, 0
        bn.set_weights([g, b, m, v])


def inputs_for(model, n=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *model.input_shape[1:])).astype(np.float32)


def assert_same_outputs(masked, new, x=None):
    x = inputs_for(masked) if x is None else x
    a, b = masked(x, training=False).numpy(), new(x, training=False).numpy()
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= ATOL, np.max(np.abs(a - b))


def assert_smaller(report, model, new):
    before, after = tfprune.profile(model), tfprune.profile(new)
    assert (report.params_before, report.macs_before) == (before.params, before.macs)
    assert (report.params_after, report.macs_after) == (after.params, after.macs)
    assert after.params < before.params and after.macs < before.macs
    assert report.max_abs_diff <= report.tolerance and report.max_rel_diff_tensors <= ATOL


def groups_by_producers(cg):
    return {tuple(g.producers): g for g in cg.groups}


# ------------------------------------------------------------------ models
def seq_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        L.Conv2D(8, 3, padding="same", name="c1"), L.BatchNormalization(name="bn1"), L.ReLU(name="r1"),
        L.MaxPooling2D(name="pool"),
        L.Conv2D(6, 3, padding="same", name="c2"), L.BatchNormalization(name="bn2"), L.Activation("relu", name="a2"),
        L.Dropout(0.3, name="drop"),
        L.Flatten(name="flat"),
        L.Dense(5, name="fc"),
    ], name="seq")


def resnet_block():
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    s = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(6, 3, padding="same", name="b_conv1")(s)
    y = L.BatchNormalization(name="b_bn1")(y)
    y = L.ReLU(name="b_relu1")(y)
    y = L.Conv2D(8, 3, padding="same", name="b_conv2")(y)
    y = L.BatchNormalization(name="b_bn2")(y)
    x = L.Add(name="add")([s, y])
    x = L.ReLU(name="out_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="resnet")


def concat_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    a = L.Conv2D(4, 1, activation="relu", name="ca")(inp)
    b = L.Conv2D(6, 3, padding="same", activation="relu", name="cb")(inp)
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(5, 1, activation="relu", name="mix")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="fc")(x), name="concat")


def mobile_block():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0, name="dw_relu")(x)
    x = L.Conv2D(12, 1, use_bias=False, name="pw")(x)
    x = L.BatchNormalization(name="pw_bn")(x)
    x = L.ReLU(6.0, name="pw_relu")(x)
    x = L.SeparableConv2D(10, 3, padding="same", name="sep")(x)
    x = L.ReLU(name="sep_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="fc")(x), name="mobile")


def se_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    s = L.GlobalAveragePooling2D(name="se_gap")(x)
    s = L.Reshape((1, 1, 8), name="se_reshape")(s)
    s = L.Dense(3, activation="relu", name="se_reduce")(s)
    s = L.Dense(8, activation="sigmoid", name="se_expand")(s)
    x = L.Multiply(name="se_mul")([x, s])
    x = L.Conv2D(6, 1, activation="relu", name="after")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="fc")(x), name="se")


def nested_model():
    keras.utils.set_random_seed(0)
    block = keras.Sequential([keras.Input((8, 8, 6)), L.Conv2D(6, 3, padding="same", name="inner_conv"), L.BatchNormalization(name="inner_bn"),
                              L.ReLU(name="inner_relu")], name="block")
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="outer_conv")(inp)
    x = block(x)
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="head_conv")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="fc")(x), name="nested")


# ------------------------------------------------------------------ groups
def test_groups_sequential_flatten_and_outputs():
    cg = channel_graph(seq_cnn())
    g1, g2 = cg.group("c1"), cg.group("c2")
    assert (g1.channels, g1.producers, g1.consumers) == (8, ["c1"], ["c2"])
    assert {"bn1", "r1", "pool"} <= set(g1.members)
    assert (g2.channels, g2.consumers) == (6, ["fc"])
    # Flatten: channel c of c2 is entry p*6+c of the flat vector, for each of the 6x6 positions
    pos = cg.positions("c2", ("flat", 0))
    assert [len(p) for p in pos] == [36] * 6
    np.testing.assert_array_equal(pos[2], np.arange(36) * 6 + 2)
    assert g1.prunable and g2.prunable
    # the output layer and the model input never shrink
    assert not cg.group("fc").prunable and "model output" in cg.frozen["fc"]
    assert "model input" in next(v for k, v in cg.frozen.items() if k != "fc")
    assert "c1" in cg.table() and "frozen" in cg.to_markdown()
    json.dumps(cg.to_dict())


def test_groups_residual_concat_depthwise_se_nested():
    res = groups_by_producers(channel_graph(resnet_block()))
    assert ("stem", "b_conv2") in res  # the Add ties the stem's channels to the branch's last conv
    g = res[("stem", "b_conv2")]
    assert g.channels == 8 and set(g.consumers) == {"b_conv1", "fc"} and "add" in g.members

    cg = channel_graph(concat_model())
    ga, gb = cg.group("ca"), cg.group("cb")
    assert ga.consumers == ["mix"] == gb.consumers
    assert [int(p[0]) for p in cg.positions("cb", ("cat", 0))] == list(range(4, 10))  # channel offset 4

    cg = channel_graph(mobile_block())
    g = cg.group("stem")
    assert {"dw", "dw_bn"} <= set(g.members) and g.consumers == ["pw"]  # depthwise ties its input and output
    assert cg.group("pw").consumers == ["sep"]

    cg = channel_graph(se_model())
    g = cg.group("conv")
    assert set(g.producers) == {"conv", "se_expand"}  # x * s: s's channels are x's
    assert set(g.consumers) == {"se_reduce", "after"}
    assert cg.group("se_reduce").prunable

    cg = channel_graph(nested_model())
    assert cg.group("outer_conv").consumers == ["inner_conv"]
    assert {"inner_bn", "inner_relu"} <= set(cg.group("inner_conv").members)


def test_unknown_op_freezes_its_groups_with_reason():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    x = tf.reverse(a, axis=[-1])  # a TFOpLambda tfprune cannot read (it permutes the channels)
    b = L.Conv2D(5, 3, padding="same", activation="relu", name="b")(x)
    y = L.LayerNormalization(name="ln")(b)
    c = L.Conv2D(4, 3, padding="same", activation="relu", name="c")(y)
    out = L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(c))
    model = keras.Model(inp, out)
    cg = channel_graph(model)
    assert "TFOpLambda" in cg.frozen["a"] and "tf.reverse" in cg.frozen["a"] and "Fix" in cg.frozen["a"]
    assert "LayerNormalization" in cg.frozen["b"] and "normalizes over the channels" in cg.frozen["b"]
    assert cg.group("c").prunable
    with pytest.raises(ValueError, match="TFOpLambda"):
        shrink(model, {"a": [0]})
    zero_filters(model.get_layer("a"), [1])  # masked, but frozen: nothing happens to it
    zero_filters(model.get_layer("c"), [0, 2])
    snap = snapshot(model)
    new, rep = shrink(model)
    assert rep.removed == {"c": [0, 2]}
    assert new.get_layer("a").filters == 6 and new.get_layer("c").filters == 2
    assert "a" in rep.frozen
    assert_same_outputs(model, new)
    assert_unchanged(model, snap)


def test_elementwise_tf_ops_are_followed():
    """Hard-swish written with TF ops (as in MobileNetV3): x * relu6(x + 3) * (1/6); a Dense-free SE with tf.math.multiply."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    hs = L.ReLU(6.0, name="hs_relu")(x + 3.0) * (1.0 / 6.0)
    x = L.Multiply(name="hs_mul")([x, hs])
    s = L.Conv2D(8, 1, activation="sigmoid", name="gate")(L.GlobalAveragePooling2D(keepdims=True, name="gap1")(x))
    x = tf.math.multiply(x, s)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="head")(tf.nn.relu6(x))
    model = randomize_bn(keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap2")(x))))
    cg = channel_graph(model)
    g = cg.group("conv")
    assert g.prunable and set(g.producers) == {"conv", "gate"} and set(g.consumers) == {"gate", "head"}
    assert any(m.startswith("tf.") for m in g.members)
    new, rep = shrink(model, {"conv": [0, 6]})
    assert new.get_layer("conv").filters == 6 and new.get_layer("gate").filters == 6
    assert_same_outputs(mask_channels(model, {"conv": [0, 6]}), new)
    assert_smaller(rep, model, new)
    # the constant a masked filter leaves after BN is carried through TF ops (computed by the op) and folded into the Dense
    inp = keras.Input((8, 8, 3))
    x = L.BatchNormalization(name="bn")(L.Conv2D(5, 3, padding="same", name="conv")(inp))
    x = tf.clip_by_value(tf.nn.relu(x) * 2.0 + 0.5, 0.0, 1.7)
    model = randomize_bn(keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(x))), seed=2)
    zero_filters(model.get_layer("conv"), [1, 3])
    new, rep = shrink(model)
    assert rep.removed == {"conv": [1, 3]} and rep.folded == {"fc": 2}
    assert_same_outputs(model, new)


def test_tf_split_and_concat_on_channels():
    """A YOLOv8 C2f block: tf.split in two halves, a bottleneck on the second, tf.concat of all three."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 1, activation="swish", name="pre")(inp)
    a, b = tf.split(x, 2, axis=-1)
    y = L.Conv2D(4, 3, padding="same", activation="swish", name="bott1")(b)
    y = L.Conv2D(4, 3, padding="same", name="bott2")(y)
    y = b + y
    x = L.Conv2D(6, 1, activation="swish", name="post")(tf.concat([a, b, y], axis=-1))
    model = keras.Model(inp, L.Dense(3, name="fc")(L.GlobalAveragePooling2D()(x)))
    cg = channel_graph(model)
    first, second = cg.group("pre[0:4]"), cg.group("pre[4:8]")
    assert first.consumers == ["post"] and set(second.producers) == {"pre", "bott2"}
    assert set(second.consumers) == {"bott1", "post"}
    remove = {"pre[0:4]": [1], "pre[4:8]": [0, 3], "bott1": [2]}
    new, rep = shrink(model, remove)
    assert new.get_layer("pre").filters == 5 and new.get_layer("post").kernel.shape == (1, 1, 3 + 2 + 2, 6)
    assert_same_outputs(mask_channels(model, remove), new)
    assert_smaller(rep, model, new)


def test_keras_cv_backbone():
    """A keras-cv functional subclass (get_config returns constructor arguments) is read through its inputs and outputs."""
    keras_cv = pytest.importorskip("keras_cv")
    keras.utils.set_random_seed(0)
    model = keras_cv.models.YOLOV8Backbone(stackwise_channels=[8, 16, 16, 32], stackwise_depth=[1, 1, 1, 1], include_rescaling=True,
                                           input_shape=(32, 32, 3))
    cg = channel_graph(model)
    assert len(cg.prunable) >= len(cg.groups) - 2  # all but the input and the output
    remove = lowest_channels(channel_importance(model, graph=cg), 0.25)
    new, rep = shrink(model, remove)
    assert rep.channels_removed == sum(len(v) for v in remove.values()) > 0
    assert_smaller(rep, model, new)


# ------------------------------------------------------------------ shrink
def test_shrink_sequential_read_from_zeros():
    model = randomize_bn(seq_cnn())
    masked = copy_model(model)
    zero_filters(masked.get_layer("c1"), [0, 3, 5], masked.get_layer("bn1"))
    zero_filters(masked.get_layer("c2"), [1, 4])  # BN after c2 not masked: its constant reaches Dense through Flatten: folded
    snap = snapshot(masked)
    new, rep = shrink(masked)
    assert rep.removed == {"c1": [0, 3, 5], "c2": [1, 4]}
    assert new.get_layer("c1").filters == 5 and new.get_layer("c2").filters == 4
    assert new.get_layer("fc").kernel.shape == (36 * 4, 5)  # one channel = 36 rows of the Dense
    assert rep.folded == {"fc": 2 * 36}
    assert_same_outputs(masked, new)
    assert_smaller(rep, masked, new)
    assert_unchanged(masked, snap)
    assert new is not masked and isinstance(new, keras.Model)
    assert "params" in rep.table() and json.dumps(rep.to_dict())


def test_shrink_remove_masks_the_whole_group():
    model = randomize_bn(resnet_block())
    snap = snapshot(model)
    cg = channel_graph(model)
    group = groups_by_producers(cg)[("stem", "b_conv2")]
    new, rep = shrink(model, {group.name: [1, 6], "b_conv1": [0, 2, 3]})
    assert new.get_layer("stem").filters == 6 and new.get_layer("b_conv2").filters == 6 and new.get_layer("b_conv1").filters == 3
    assert new.get_layer("stem_bn").gamma.shape == (6,) and new.get_layer("fc").kernel.shape == (6, 4)
    # the reference, masked by hand: both producers of the residual group and their BatchNorms
    ref = copy_model(model)
    zero_filters(ref.get_layer("stem"), [1, 6], ref.get_layer("stem_bn"))
    zero_filters(ref.get_layer("b_conv2"), [1, 6], ref.get_layer("b_bn2"))
    zero_filters(ref.get_layer("b_conv1"), [0, 2, 3], ref.get_layer("b_bn1"))
    assert_same_outputs(ref, new)
    assert_same_outputs(mask_channels(model, {group.name: [1, 6], "b_conv1": [0, 2, 3]}), new)
    assert_smaller(rep, model, new)
    assert_unchanged(model, snap)


def test_residual_masked_in_one_branch_only_is_kept_with_reason():
    model = randomize_bn(resnet_block())
    zero_filters(model.get_layer("stem"), [2], model.get_layer("stem_bn"))  # b_conv2 still computes channel 2
    zero_filters(model.get_layer("b_conv1"), [4], model.get_layer("b_bn1"))
    new, rep = shrink(model)
    assert rep.removed == {"b_conv1": [4]}
    (key, why), = rep.kept.items()
    assert key.endswith("[2]") and "'b_conv2' still computes it" in why
    assert_same_outputs(model, new)


def test_batchnorm_constant_rule():
    """conv -> BN -> ReLU: a masked filter leaves the constant relu(beta - gamma*mean/sqrt(var+eps)).

    Folded exactly into a Dense (after global pooling) and into a 'valid' conv;
    kept (or an error) before a 'same' 3x3 conv, where zero padding makes it position-dependent.
    """
    def model_with(padding):
        keras.utils.set_random_seed(0)
        inp = keras.Input((9, 9, 2))
        x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
        x = L.BatchNormalization(name="bn1")(x)
        x = L.ReLU(name="r1")(x)
        x = L.Conv2D(5, 3, padding=padding, use_bias=False, name="c2")(x)
        x = L.BatchNormalization(name="bn2")(x)
        x = L.ReLU(name="r2")(x)
        x = L.GlobalAveragePooling2D(name="gap")(x)
        return randomize_bn(keras.Model(inp, L.Dense(3, name="fc")(x)), seed=3)

    for padding in ("valid", "same"):
        model = model_with(padding)
        bn = model.get_layer("bn1")
        g, b, m, v = bn.get_weights()
        b[[0, 1]] = [2.0, -5.0]  # channel 0: relu(...) > 0 (a real constant); channel 1: relu(...) = 0
        bn.set_weights([g, b, m, v])
        zero_filters(model.get_layer("c1"), [0, 1])
        zero_filters(model.get_layer("c2"), [3])  # bn2 after it: a constant reaching fc (folded)
        new, rep = shrink(model)
        if padding == "valid":
            assert rep.removed == {"c1": [0, 1], "c2": [3]} and not rep.kept
            assert new.get_layer("c2").use_bias  # the constant needed a bias to go into
            assert set(rep.folded) == {"c2", "fc"}
        else:
            assert rep.removed == {"c1": [1], "c2": [3]}
            assert "padding='same'" in rep.kept["c1[0]"] and "constant" in rep.kept["c1[0]"]
            with pytest.raises(ValueError, match="cannot remove these channels exactly"):
                shrink(model, on_inexact="error")
        assert_same_outputs(model, new)
        assert_smaller(rep, model, new)


def test_shrink_concat_offsets():
    model = concat_model()
    zero_filters(model.get_layer("ca"), [1])
    zero_filters(model.get_layer("cb"), [0, 4])
    new, rep = shrink(model)
    assert rep.removed == {"ca": [1], "cb": [0, 4]}
    assert new.get_layer("mix").kernel.shape == (1, 1, 7, 5)
    np.testing.assert_array_equal(new.get_layer("mix").kernel.numpy()[0, 0],
                                  model.get_layer("mix").kernel.numpy()[0, 0][[0, 2, 3, 5, 6, 7, 9]])
    assert_same_outputs(model, new)
    assert_smaller(rep, model, new)


def test_shrink_depthwise_separable():
    model = randomize_bn(mobile_block())
    snap = snapshot(model)
    new, rep = shrink(model, {"stem": [0, 5], "pw": [2, 3, 11], "sep": [7]})
    assert new.get_layer("dw").depthwise_kernel.shape == (3, 3, 6, 1)
    assert new.get_layer("sep").depthwise_kernel.shape == (3, 3, 9, 1)
    assert new.get_layer("sep").pointwise_kernel.shape == (1, 1, 9, 9)
    ref = copy_model(model)
    zero_filters(ref.get_layer("stem"), [0, 5], ref.get_layer("stem_bn"))
    dw = ref.get_layer("dw")  # the depthwise filter and BN of the channel belong to the group: masked too
    k = dw.get_weights()[0]
    k[:, :, [0, 5]] = 0
    dw.set_weights([k])
    zero_filters(ref.get_layer("pw"), [2, 3, 11], ref.get_layer("pw_bn"))
    zero_filters(ref.get_layer("sep"), [7])
    g, b, m, v = ref.get_layer("dw_bn").get_weights()
    g[[0, 5]], b[[0, 5]], m[[0, 5]] = 0, 0, 0
    ref.get_layer("dw_bn").set_weights([g, b, m, v])
    assert_same_outputs(ref, new)
    assert_smaller(rep, model, new)
    assert_unchanged(model, snap)


def test_shrink_squeeze_excitation():
    model = se_model()
    new, rep = shrink(model, {"conv": [1, 2, 7], "se_reduce": [0]})
    assert new.get_layer("conv").filters == 5 and new.get_layer("se_expand").units == 5 and new.get_layer("se_reduce").units == 2
    assert tuple(new.get_layer("se_reshape").target_shape) == (1, 1, 5)
    assert_same_outputs(mask_channels(model, {"conv": [1, 2, 7], "se_reduce": [0]}), new)
    assert_smaller(rep, model, new)


def test_shrink_nested_model():
    model = randomize_bn(nested_model())
    masked = copy_model(model)
    zero_filters(masked.get_layer("outer_conv"), [0, 3])
    inner = masked.get_layer("block")
    zero_filters(inner.get_layer("inner_conv"), [2], inner.get_layer("inner_bn"))
    snap = snapshot(masked)
    new, rep = shrink(masked)
    assert rep.removed == {"outer_conv": [0, 3], "inner_conv": [2]}
    assert new.get_layer("inner_conv").kernel.shape == (3, 3, 4, 5)  # flat: the nested block is inlined
    assert_same_outputs(masked, new)
    assert_smaller(rep, masked, new)
    assert_unchanged(masked, snap)


def test_shrink_wrapped_model_after_channel_pruning():
    keras.utils.set_random_seed(0)
    model = concat_model()
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 2)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    wrapped = tfprune.wrap(model, granularity="channel")
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = tfprune.Pruning(macs=0.4, granularity="channel", importance="l1", allocation="uniform", end_step=4, frequency=2)
    wrapped.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    masked = tfprune.strip(wrapped)
    expected = removable_channels(wrapped)
    assert sum(len(v) for v in expected.values()) > 0 and expected == cb.plan_.remove
    new, rep = shrink(wrapped)
    assert rep.removed == expected
    for name in expected:  # the removed channels are the ones whose filters are zero
        kernel = masked.get_layer(name).kernel.numpy()
        assert sorted(np.flatnonzero(~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)).tolist()) == expected[name]
    assert_same_outputs(masked, new)
    assert_smaller(rep, masked, new)


def test_include_outputs_and_transpose():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", activation="relu", name="up")(inp)
    x = L.Conv2D(4, 3, padding="same", name="head")(x)
    model = keras.Model(inp, x)
    zero_filters(model.get_layer("up"), [1, 2])
    k, b = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.where(np.arange(4) == 3, 0, k), np.where(np.arange(4) == 3, 0, b)])
    new, rep = shrink(model)
    assert rep.removed == {"up": [1, 2]} and new.output_shape == model.output_shape
    assert new.get_layer("up").kernel.shape == (3, 3, 3, 3)
    assert_same_outputs(model, new)
    new2, rep2 = shrink(model, include_outputs=True)
    assert rep2.removed == {"up": [1, 2], "head": [3]} and new2.output_shape == (None, 12, 12, 3)
    x = inputs_for(model)
    np.testing.assert_allclose(new2(x).numpy(), model(x).numpy()[..., :3], atol=ATOL)


def test_errors_name_the_problem():
    model = seq_cnn()
    with pytest.raises(ValueError, match="cannot be pruned: model output"):
        shrink(model, {"fc": [0]})
    with pytest.raises(ValueError, match="would leave a layer with none"):
        shrink(model, {"c1": list(range(8))})
    with pytest.raises(ValueError, match=r"8 channels \(0\.\.7\)"):
        shrink(model, {"c1": [8]})
    with pytest.raises(ValueError, match="no channel group named 'nope'"):
        shrink(model, {"nope": [0]})
    with pytest.raises(ValueError, match="on_inexact"):
        shrink(model, on_inexact="maybe")


def test_all_masked_group_keeps_one_channel():
    model = concat_model()
    zero_filters(model.get_layer("ca"), [0, 1, 2, 3])
    new, rep = shrink(model)
    assert rep.removed == {"ca": [0, 1, 2]} and new.get_layer("ca").filters == 1
    assert "last channel" in rep.kept["ca[3]"]
    assert_same_outputs(model, new)


def test_the_check_catches_a_wrong_weight():
    """The comparison shrink runs before returning sees a small error anywhere, even behind a softmax output."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(L.MaxPooling2D()(x))
    out = L.Dense(10, activation="softmax", name="fc")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    zero_filters(model.get_layer("c1"), [2])
    new, rep = shrink(model)
    cg = channel_graph(model)
    keep = cg.keep_masks([int(cg.group("c1").labels[2])])
    assert _compare(cg, cg.flat, new, _check_inputs(cg.flat, None), keep)[2] <= ATOL
    k, b = new.get_layer("c2").get_weights()
    k[0, 0, 0, 0] += 0.01
    new.get_layer("c2").set_weights([k, b])
    _, _, rel = _compare(cg, cg.flat, new, _check_inputs(cg.flat, None), keep)
    assert rel > 10 * ATOL


def test_fold_delta_matches_keras():
    """The bias change that replaces a constant input channel equals what the layer computes (valid padding / Dense)."""
    rng = np.random.default_rng(0)
    v = np.array([0.0, 1.5, 0.0, -0.7])
    for layer, shape, kind in ((L.Dense(3), (1, 4), "dense"), (L.Conv2D(3, 3), (1, 5, 5, 4), "conv"),
                               (L.SeparableConv2D(3, 3, depth_multiplier=2), (1, 5, 5, 4), "separable")):
        layer.build(shape)
        w = {a: getattr(layer, a).numpy() for a in ("kernel", "depthwise_kernel", "pointwise_kernel") if hasattr(layer, a)}
        x = np.broadcast_to(v, shape).astype(np.float32)
        got = layer(x).numpy().reshape(-1, 3)[0] - layer.bias.numpy()
        np.testing.assert_allclose(fold_delta(kind, w, v), got, atol=1e-5)
    assert rng is not None


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_mobilenetv2_groups_and_shrink():
    """MobileNetV2 (alpha 0.35, 96x96, weights=None: no download): about 5 s."""
    keras.utils.set_random_seed(0)
    model = randomize_bn(keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None))
    snap = snapshot(model)
    cg = channel_graph(model)
    assert len(cg.prunable) >= 20
    # residual stages: the projections of a stage share one group
    assert any({"block_3_project", "block_4_project", "block_5_project"} <= set(g.producers) for g in cg.groups)
    assert "model output" in cg.frozen["predictions"]
    rng = np.random.default_rng(0)
    remove = {g.name: rng.choice(g.channels, size=max(1, g.channels // 8), replace=False).tolist() for g in cg.prunable}
    new, rep = shrink(model, remove)
    assert rep.channels_removed == sum(len(v) for v in remove.values())
    assert_smaller(rep, model, new)
    assert_same_outputs(mask_channels(model, remove), new)
    assert_unchanged(model, snap)


# ------------------------------------------------------------- importance
def test_group_importance_sums_every_coupled_weight():
    model = randomize_bn(seq_cnn())
    scores = channel_importance(model, "l2")
    assert set(scores.scores) == {"c1", "c2"}
    j = 4
    c2, bn2, fc = model.get_layer("c2"), model.get_layer("bn2"), model.get_layer("fc")
    rows = fc.kernel.numpy()[np.arange(36) * 6 + j]  # Flatten: channel j is every 6th row
    expected = np.sqrt(np.sum(c2.kernel.numpy()[..., j] ** 2) + c2.bias.numpy()[j] ** 2 + bn2.gamma.numpy()[j] ** 2
                       + bn2.beta.numpy()[j] ** 2 + np.sum(rows ** 2))
    np.testing.assert_allclose(scores.scores["c2"][j], expected, rtol=1e-6)
    l1 = channel_importance(model, "l1").scores["c1"]
    c1, bn1, k2 = model.get_layer("c1"), model.get_layer("bn1"), c2.kernel.numpy()
    exp1 = (np.abs(c1.kernel.numpy()[..., 2]).sum() + abs(c1.bias.numpy()[2]) + abs(bn1.gamma.numpy()[2]) + abs(bn1.beta.numpy()[2])
            + np.abs(k2[:, :, 2, :]).sum())
    np.testing.assert_allclose(l1[2], exp1, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown channel importance"):
        channel_importance(model, "no_such_scorer")
    assert "c2" in scores.table()


def test_group_importance_residual_and_one_shot_shrink():
    model = randomize_bn(resnet_block())
    cg = channel_graph(model)
    group = groups_by_producers(cg)[("stem", "b_conv2")]
    s = channel_importance(model, graph=cg).scores[group.name]
    j = 5
    parts = [model.get_layer("stem").kernel.numpy()[..., j], model.get_layer("stem").bias.numpy()[j],
             model.get_layer("b_conv2").kernel.numpy()[..., j], model.get_layer("b_conv2").bias.numpy()[j],
             model.get_layer("b_conv1").kernel.numpy()[:, :, j, :], model.get_layer("fc").kernel.numpy()[j]]
    parts += [getattr(model.get_layer(bn), a).numpy()[j] for bn in ("stem_bn", "b_bn2") for a in ("gamma", "beta")]
    np.testing.assert_allclose(s[j], np.sqrt(sum(np.sum(np.square(p)) for p in parts)), rtol=1e-6)
    remove = lowest_channels(channel_importance(model, graph=cg), 0.25)
    assert remove[group.name] == sorted(np.argsort(s, kind="stable")[:2].tolist())
    new, rep = shrink(model, remove)
    assert rep.removed == remove
    assert_same_outputs(mask_channels(model, remove), new)
    assert_smaller(rep, model, new)
