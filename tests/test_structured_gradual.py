"""Channel groups pruned gradually by the one `Pruning` callback (ChannelMask wrappers), then removed by ``finalize()``.

Each test trains a small model wrapped with ``granularity="channel"`` on random
data, then checks what the keep-vectors did (the same channels masked in every
layer of a group, the plan's channels, the polynomial ramp in whole channels),
that ``finalize()`` removes exactly the masked channels (the shrunk model's
MACs equal the plan's, its outputs equal the masked model's) and that the
user's model is never changed.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune._keras import keras
from tfprune.inventory.profiling import profile
from tfprune.masks.channel_mask import NEVER, ChannelMask, keep_vector
from tfprune.masks.schedule import polynomial_sparsity
from tfprune.masks.wrapping import channel_masks
from tfprune.structured import channel_graph

L = keras.layers
ATOL = 1e-4


# ------------------------------------------------------------------ the rule: numpy and graph agree
def test_keep_vector_rounds_whole_channels_monotone_and_reaches_the_count():
    rank = np.array([0, 1, 2, 0, 1, NEVER, 3, 2])
    count = np.array([3, 3, 3, 2, 2, 2, 10, 10])
    np.testing.assert_array_equal(keep_vector(rank, count, 0.0), np.ones(8))
    np.testing.assert_array_equal(keep_vector(rank, count, 1.0), [0, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(keep_vector(rank, count, 0.5), [0, 0, 1, 0, 1, 1, 0, 0])  # round half up: 1.5 -> 2, 1 -> 1, 5
    prev = keep_vector(rank, count, 0.0)
    for r in np.linspace(0, 1, 31):
        now = keep_vector(rank, count, r)
        assert (now <= prev).all()  # a masked channel stays masked
        prev = now


def test_channel_mask_keep_in_graph_equals_numpy_at_every_step():
    layer = ChannelMask(L.Dense(6))
    layer.build((None, 3))
    layer.rank.assign([4, 0, 2, NEVER, 1, 3])
    layer.count.assign([5, 5, 5, 5, 5, 5])
    layer.pruning_schedule.set(begin_step=3, end_step=17, frequency=2, power=3.0)
    fn = tf.function(lambda x: layer(x, training=True))
    x = tf.ones((2, 3))
    keeps = []
    for step in range(1, 22):
        out = fn(x).numpy()
        keep = layer.keep.numpy()
        keeps.append(keep.copy())
        assert int(layer.pruning_step.numpy()) == step
        due = 3 <= step <= 17 and ((step - 3) % 2 == 0 or step == 17)
        if due:
            np.testing.assert_array_equal(keep, keep_vector(layer.rank.numpy(), layer.count.numpy(), polynomial_sparsity(step, 0, 1, 3, 17, 3.0)))
        else:
            np.testing.assert_array_equal(keep, keeps[-2] if len(keeps) > 1 else np.ones(6))
        assert np.all(out[:, keep == 0] == 0)
    np.testing.assert_array_equal(keeps[-1], [0, 0, 0, 1, 0, 0])


# ------------------------------------------------------------------ models
def mixed_model():
    """Residual Add with BN on both branches, depthwise + BN, separable, concat, Flatten -> Dense, logits."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    s = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(6, 3, padding="same", name="b1")(s)
    y = L.BatchNormalization(name="b1_bn")(y)
    y = L.ReLU(name="b1_relu")(y)
    y = L.Conv2D(8, 3, padding="same", name="b2")(y)
    y = L.BatchNormalization(name="b2_bn")(y)
    r = L.ReLU(name="res_relu")(L.Add(name="add")([s, y]))
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(r)
    d = L.BatchNormalization(name="dw_bn")(d)
    d = L.ReLU(6.0, name="dw_relu")(d)
    a = L.Conv2D(6, 1, activation="relu", name="pw")(d)
    c = L.SeparableConv2D(4, 3, padding="same", activation="relu", name="sep")(r)
    x = L.Concatenate(name="cat")([a, c])
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(12, activation="relu", name="fc1")(x)
    return keras.Model(inp, L.Dense(4, name="logits")(x), name="mixed")


def mobile_se():
    """Inverted residual with depthwise and squeeze-and-excitation."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    s = L.ReLU(6.0, name="stem_relu")(x)
    e = L.Conv2D(16, 1, use_bias=False, name="expand")(s)
    e = L.BatchNormalization(name="expand_bn")(e)
    e = L.ReLU(6.0, name="expand_relu")(e)
    e = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(e)
    e = L.BatchNormalization(name="dw_bn")(e)
    e = L.ReLU(6.0, name="dw_relu")(e)
    q = L.GlobalAveragePooling2D(keepdims=True, name="se_gap")(e)
    q = L.Conv2D(4, 1, activation="relu", name="se_reduce")(q)
    q = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(q)
    e = L.Multiply(name="se_mul")([e, q])
    p = L.Conv2D(8, 1, use_bias=False, name="project")(e)
    p = L.BatchNormalization(name="project_bn")(p)
    x = L.Add(name="add")([s, p])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(5, name="logits")(x), name="mobile_se")


def compiled(model, lr=1e-2):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def random_data(model, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *model.input_shape[1:])).astype(np.float32)
    return x, rng.integers(0, model.output_shape[-1], n)


def weights_of(model):
    return {w.name: w.numpy().copy() for w in model.weights}


class MaskedCounts(keras.callbacks.Callback):
    """After every batch: (pruning step, channels masked over all groups) read from the wrappers."""

    def __init__(self, pruning):
        super().__init__()
        self.pruning, self.rows = pruning, []

    def on_train_batch_end(self, batch, logs=None):
        step = int(channel_masks(self.model)[0].pruning_step.numpy())
        self.rows.append((step, sum(len(v) for v in self.pruning.channels_masked().values())))


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("make,allocation", [(mixed_model, "importance"), (mobile_se, "uniform")])
def test_gradual_masks_groups_then_finalize_removes_all_of_them(make, allocation):
    model = make()
    snap = json.dumps(model.get_config(), sort_keys=True, default=str), weights_of(model)
    x, y = random_data(model)
    w = compiled(tfprune.wrap(model, granularity="channel"))
    cb = tfprune.Pruning(macs=0.4, allocation=allocation, end_step=12, frequency=4)
    w.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[cb])  # 16 optimizer steps
    plan = cb.plan_
    assert plan.granularity == "channel" and plan.budget == "macs" and abs(plan.achieved - 0.4) <= 0.05
    assert cb.channels_masked() == plan.remove  # every group reached its planned channels
    text = cb.summary()
    assert "granularity channel" in text and all(g in text for g in plan.remove)
    assert "macs_masked" in w.history.history and w.history.history["macs_masked"][-1] == pytest.approx(plan.macs_removed, abs=1e-9)

    # the stripped model holds the masks as zeros in every producer, BN and depthwise of the group; consumers untouched
    plain = tfprune.strip(w)
    cg = channel_graph(plain)
    for gname, chans in plan.remove.items():
        g = cg.group(gname)
        for pname in g.producers:
            layer = plain.get_layer(pname)
            k = layer.pointwise_kernel if isinstance(layer, L.SeparableConv2D) else layer.kernel
            assert np.all(k.numpy()[..., chans] == 0), pname
            if getattr(layer, "bias", None) is not None:
                assert np.all(layer.bias.numpy()[chans] == 0)
        for mname in g.members:
            layer = plain.get_layer(mname)
            if isinstance(layer, L.BatchNormalization):
                for v in (layer.gamma, layer.beta, layer.moving_mean):
                    assert np.all(v.numpy()[chans] == 0), mname
        for cname in g.consumers:
            layer = plain.get_layer(cname)
            if isinstance(layer, L.Conv2D) and not isinstance(layer, L.SeparableConv2D) and layer.kernel.shape[-2] == g.channels:
                assert np.all(np.any(layer.kernel.numpy()[..., chans, :] != 0, axis=(0, 1, 3))), cname
    np.testing.assert_allclose(plain.predict(x, verbose=0), w.predict(x, verbose=0), atol=ATOL)  # strip folds exactly

    small = cb.finalize(x=x[:8])
    rep = cb.shrink_report_
    assert rep.removed == plan.remove and not rep.kept
    assert (rep.macs_after, rep.params_after) == (plan.macs_after, plan.params_after)  # achieved after finalize == the plan
    assert profile(small).macs == plan.macs_after
    np.testing.assert_allclose(small.predict(x, verbose=0), w.predict(x, verbose=0), atol=ATOL)
    assert small.get_layer("logits").units == model.get_layer("logits").units
    small2, rep2 = tfprune.shrink(plain, x=x[:8])  # read from the zeros: the same channels
    assert rep2.removed == plan.remove and profile(small2).macs == plan.macs_after
    # the user's model: never changed
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == snap[0]
    assert all(np.array_equal(snap[1][k], v) for k, v in weights_of(model).items())


def test_ramp_is_polynomial_in_whole_channels_and_holds_between_updates():
    model = mixed_model()
    x, y = random_data(model)
    w = compiled(tfprune.wrap(model, granularity="channel"))
    cb = tfprune.Pruning(macs=0.5, allocation="uniform", begin_step=2, end_step=18, frequency=4)
    rec = MaskedCounts(cb)
    w.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[cb, rec])  # 24 steps
    counts = {g: len(c) for g, c in cb.plan_.channels.items()}
    last = 0
    for step, masked in rec.rows:
        update = max([s for s in (*range(2, 19, 4), 18) if s <= step], default=None)
        want = 0 if update is None else sum(int(np.floor(n * polynomial_sparsity(update, 0, 1, 2, 18, 3.0) + 0.5)) for n in counts.values())
        assert masked == want, (step, masked, want)
        assert masked >= last
        last = masked
    assert last == sum(counts.values())


@pytest.mark.slow  # 15 s quiet, 34 s loaded; the smaller residual + BN models above cover the same path
def test_resnet20_gradual_matches_plan():
    model = tfprune.models.resnet20((16, 16, 3), 10)
    x, y = random_data(model, n=32)
    w = compiled(tfprune.wrap(model, granularity="channel"), lr=1e-3)
    cb = tfprune.Pruning(macs=0.5, end_step=6, frequency=2, min_channels=2)
    w.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert abs(cb.plan_.achieved - 0.5) <= cb.plan_.tolerance
    small = cb.finalize(x=x[:4])
    assert profile(small).macs == cb.plan_.macs_after and cb.shrink_report_.removed == cb.plan_.remove
    assert min(small.get_layer(n).filters for n in ("stem_conv", "stage1_block1_conv1", "stage3_block3_conv1")) >= 2
    np.testing.assert_allclose(small.predict(x, verbose=0), w.predict(x, verbose=0), atol=ATOL)
    assert small.get_layer("fc").units == 10


def test_errors_name_the_problem_and_the_fix():
    with pytest.raises(ValueError, match="exactly one target"):
        tfprune.Pruning()
    with pytest.raises(ValueError, match="exactly one target"):
        tfprune.Pruning(macs=0.5, params=0.5)
    with pytest.raises(ValueError, match=r"macs must be in \[0, 1\)"):
        tfprune.Pruning(macs=1.2)
    with pytest.raises(ValueError, match="give macs= or params="):
        tfprune.Pruning(0.5, granularity="channel")
    with pytest.raises(ValueError, match="for channel groups choose one of"):
        tfprune.Pruning(macs=0.5, allocation="erk")
    model = mixed_model()
    x, y = random_data(model, n=16)
    w = compiled(tfprune.wrap(model))  # weight wrappers, channel request
    with pytest.raises(ValueError, match="granularity='channel'"):
        w.fit(x, y, epochs=1, verbose=0, callbacks=[tfprune.Pruning(macs=0.5, end_step=1)])
    plain = compiled(mixed_model())
    with pytest.raises(ValueError, match=r"tfprune.wrap\(model, granularity='channel'\)"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[tfprune.Pruning(macs=0.5, end_step=1)])
    with pytest.raises(ValueError, match="targets= sets per-layer"):
        tfprune.wrap(model, 0.5, granularity="channel")


def test_channels_shrink_could_not_remove_are_never_planned():
    """sigmoid(0) = 0.5 into a padded 3x3 conv cannot be folded: the plan takes channels of the ReLU branch only."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    a = L.Conv2D(4, 1, activation="relu", name="relu_branch")(inp)
    b = L.Conv2D(4, 1, activation="sigmoid", name="sigmoid_branch")(inp)
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="mix")(L.Concatenate(name="cat")([a, b]))
    model = keras.Model(inp, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x)), name="sig")
    x_, y_ = random_data(model, n=16)
    w = compiled(tfprune.wrap(model, granularity="channel"))
    cb = tfprune.Pruning(params=0.2, end_step=2, frequency=1, tolerance=0.2)
    w.fit(x_, y_, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert "sigmoid_branch" not in cb.plan_.remove
    small = cb.finalize(x=x_[:4])
    assert small.get_layer("sigmoid_branch").filters == 4 and not cb.shrink_report_.kept
    np.testing.assert_allclose(small.predict(x_, verbose=0), w.predict(x_, verbose=0), atol=ATOL)


@pytest.mark.parametrize("importance", [pytest.param("bn_scale", marks=pytest.mark.slow), "taylor"])  # bn_scale: make test-all
def test_other_channel_scorers_drive_the_plan(importance):
    model = mixed_model()
    x, y = random_data(model, n=32)
    data = (x[:16], y[:16]) if importance == "taylor" else None
    w = compiled(tfprune.wrap(model, granularity="channel"))
    cb = tfprune.Pruning(macs=0.3, importance=importance, data=data, allocation="uniform", end_step=4, frequency=2)
    w.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert cb.plan_.importance_name == importance and cb.channels_masked() == cb.plan_.remove
    small = cb.finalize(x=x[:4])
    assert profile(small).macs == cb.plan_.macs_after
    np.testing.assert_allclose(small.predict(x, verbose=0), w.predict(x, verbose=0), atol=ATOL)


@pytest.mark.slow  # about 25 s: a model we did not write, as a user would bring it
def test_gradual_on_keras_applications_mobilenetv2():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)
    w = tfprune.wrap(model, granularity="channel")
    w.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 96, 96, 3), dtype=np.float32), rng.integers(0, 10, 128)
    cb = tfprune.Pruning(macs=0.3, end_step=6, frequency=2)
    w.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    small = cb.finalize()
    removed = 1 - tfprune.profile(small).macs / tfprune.profile(model).macs
    assert abs(removed - 0.3) < 0.01
    assert small.output_shape == (None, 10)
    np.testing.assert_allclose(small.predict(x[:8], verbose=0), w.predict(x[:8], verbose=0), atol=1e-4)


@pytest.mark.slow  # about 40 s: grouped convolutions (general groups and depthwise written as groups) through the one callback
def test_gradual_on_grouped_convolutions_regnetx002():
    model = keras.applications.RegNetX002(weights=None, include_top=False, input_shape=(32, 32, 3))
    model = keras.Model(model.inputs, L.Dense(4, name="logits")(L.GlobalAveragePooling2D()(model.outputs[0])))
    w = compiled(tfprune.wrap(model, granularity="channel"), lr=1e-3)
    x, y = random_data(w, n=32)
    cb = tfprune.Pruning(macs=0.3, end_step=4, frequency=2)
    w.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert cb.channels_masked() == cb.plan_.remove and abs(cb.plan_.achieved - 0.3) <= cb.plan_.tolerance
    small = cb.finalize(x=x[:4])
    assert tfprune.profile(small).macs == cb.plan_.macs_after and not cb.shrink_report_.kept
    grouped = [layer for layer in small.layers if isinstance(layer, L.Conv2D) and layer.groups > 1]
    assert grouped and all(layer.filters % layer.groups == 0 for layer in grouped)  # still valid grouped convolutions
    np.testing.assert_allclose(small.predict(x, verbose=0), w.predict(x, verbose=0), atol=1e-4)
