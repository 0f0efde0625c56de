"""Gradual channel pruning during fit (tfprune.structured.gradual.ChannelPruning), then physical removal with shrink.

Each test trains a small model with the callback on random data, then checks
what the masks did to the model's own variables (zeros in every coupled
layer, consumers untouched, held after optimizer steps), that the ramp
follows the polynomial schedule in whole channels, and that `shrink` removes
exactly the masked channels: the shrunk model's MACs equal the plan's and its
outputs equal the masked model's (computed by Keras on the masked model).
"""

import json
import warnings

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.profiling import profile
from tfprune.schedule import polynomial_sparsity
from tfprune.structured import ChannelPruning, channel_graph, plan_channels
from tfprune.structured.gradual import channels_at, choose_channels

L = keras.layers
ATOL = 1e-4


# ------------------------------------------------------------------ numpy rules
def test_channels_at_rounds_whole_channels_and_reaches_the_plan():
    final = np.array([0, 1, 3, 10])
    np.testing.assert_array_equal(channels_at(final, 0.0), [0, 0, 0, 0])
    np.testing.assert_array_equal(channels_at(final, 0.5), [0, 1, 2, 5])  # half up
    np.testing.assert_array_equal(channels_at(final, 0.34), [0, 0, 1, 3])
    np.testing.assert_array_equal(channels_at(final, 1.0), final)
    np.testing.assert_array_equal(channels_at(final, 7.0), final)  # clipped
    prev = channels_at(final, 0.0)
    for f in np.linspace(0, 1, 23):  # monotone in the ramp
        now = channels_at(final, f)
        assert (now >= prev).all()
        prev = now


def test_choose_channels_keeps_masked_adds_lowest_and_respects_allowed():
    s = np.array([5.0, 1.0, 4.0, 0.5, 3.0, 2.0])
    none = np.zeros(6, bool)
    allowed = np.ones(6, bool)
    np.testing.assert_array_equal(choose_channels(s, 2, none, allowed), [1, 3])
    masked = np.zeros(6, bool)
    masked[0] = True  # masked earlier, now scores highest: stays masked, one more added
    np.testing.assert_array_equal(choose_channels(s, 2, masked, allowed), [0, 3])
    np.testing.assert_array_equal(choose_channels(s, 1, masked | (np.arange(6) == 2), allowed), [0, 2])  # never unmasks
    np.testing.assert_array_equal(choose_channels(s, 2, masked, allowed, revive=True), [1, 3])  # afresh
    allowed[3] = False
    np.testing.assert_array_equal(choose_channels(s, 2, none, allowed), [1, 5])
    with pytest.raises(ValueError, match="only 5 of 6"):
        choose_channels(s, 6, none, allowed)


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


class Recorder(keras.callbacks.Callback):
    """After every batch (listed after ChannelPruning): the masked channels' producer filters (must be zero)."""

    def __init__(self, pruning, layer):
        super().__init__()
        self.pruning, self.layer, self.bad = pruning, layer, []

    def on_train_batch_end(self, batch, logs=None):
        chans = self.pruning.masked_.get(self.layer, [])
        k = self.model.get_layer(self.layer).kernel.numpy()
        if chans and np.any(k[..., chans] != 0):
            self.bad.append(batch)


def weights_of(model):
    return {w.name: w.numpy().copy() for w in model.weights}


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("make,allocation", [(mixed_model, "importance"), (mobile_se, "uniform")])
def test_gradual_masks_groups_then_shrink_removes_all_of_them(make, allocation):
    model = compiled(make())
    x, y = random_data(model)
    cg = channel_graph(model)
    cb = ChannelPruning(macs=0.4, allocation=allocation, end_step=12, frequency=4)
    rec = Recorder(cb, "stem")
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[cb, rec])  # 16 optimizer steps
    plan = cb.plan_
    assert plan is not None and abs(plan.achieved - 0.4) <= 0.05  # one channel of a tiny model is a few % of its MACs
    planned = {g.group: g.removed for g in plan.groups if g.removed}
    assert cb.counts_ == planned
    assert {k: len(v) for k, v in cb.masked_.items()} == planned  # every group reached its count
    assert rec.bad == []  # held after every optimizer step (Adam would move them)

    # one keep-vector per group: zeros in every producer, BN and depthwise of the group; consumers' rows untouched
    for gname, chans in cb.masked_.items():
        g = cg.group(gname)
        for pname in g.producers:
            layer = model.get_layer(pname)
            k = layer.pointwise_kernel if isinstance(layer, L.SeparableConv2D) else layer.kernel
            assert np.all(k.numpy()[..., chans] == 0), pname
            if getattr(layer, "bias", None) is not None:
                assert np.all(layer.bias.numpy()[chans] == 0)
        for mname in g.members:
            layer = model.get_layer(mname)
            if isinstance(layer, L.BatchNormalization):
                for v in (layer.gamma, layer.beta, layer.moving_mean):
                    assert np.all(v.numpy()[chans] == 0), mname
            if isinstance(layer, L.DepthwiseConv2D):
                assert np.all(layer.depthwise_kernel.numpy()[..., chans, :] == 0)
        for cname in g.consumers:
            layer = model.get_layer(cname)
            if isinstance(layer, L.Conv2D) and not isinstance(layer, L.SeparableConv2D) and layer.kernel.shape[-2] == g.channels:
                assert np.all(np.any(layer.kernel.numpy()[..., chans, :] != 0, axis=(0, 1, 3))), cname

    before = weights_of(model)
    small, rep = cb.shrink(x=x[:8])
    assert weights_of(model).keys() == before.keys() and all(np.array_equal(before[k], v) for k, v in weights_of(model).items())
    assert rep.removed == cb.remove and not rep.kept
    assert (rep.macs_after, rep.params_after) == (plan.macs_after, plan.params_after)  # achieved after shrink == the plan
    assert profile(small).macs == plan.macs_after
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=ATOL)
    logits = small.get_layer("logits")
    assert logits.units == model.get_layer("logits").units
    assert np.all(np.any(model.get_layer("logits").kernel.numpy() != 0, axis=0))  # no logits column masked

    small2, rep2 = tfprune.shrink(model, x=x[:8])  # read from the zeros: the same channels
    assert rep2.removed == cb.remove and profile(small2).macs == plan.macs_after


def test_ramp_is_polynomial_in_whole_channels_and_resumes():
    model = compiled(mixed_model())
    x, y = random_data(model)
    cb = ChannelPruning(macs=0.5, allocation="uniform", begin_step=2, end_step=18, frequency=4, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])  # 8 steps: stops mid-ramp
    assert any("ramp ends at step 18" in str(w.message) for w in caught)
    final = np.array(list(cb.counts_.values()))
    steps = [h["step"] for h in cb.history_]
    assert steps == [2, 6]
    for h in cb.history_:
        assert h["channels_masked"] == channels_at(final, polynomial_sparsity(h["step"], 0.0, 1.0, 2, 18, 3.0)).sum()
    assert 0 < cb.history_[-1]["channels_masked"] < final.sum()
    assert [h["macs_masked"] for h in cb.history_] == sorted(h["macs_masked"] for h in cb.history_)

    # resume in a new process: model (with optimizer) saved and loaded, masks read back from the zeros, same counts
    path = pytest.importorskip("tempfile").mkdtemp() + "/mid.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert int(loaded.optimizer.iterations.numpy()) == 8
    cb2 = ChannelPruning(plan=cb.counts_, begin_step=2, end_step=18, frequency=4)
    cb2.set_model(loaded)
    cb2.on_train_begin()
    assert cb2.masked_ == cb.masked_
    loaded.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[cb2])
    assert [h["step"] for h in cb2.history_] == [8, 10, 14, 18]  # first batch, then the ramp's own steps and its end
    assert {k: len(v) for k, v in cb2.masked_.items()} == cb.counts_
    assert all(set(cb.masked_[k]) <= set(cb2.masked_[k]) for k in cb.masked_)  # masked channels stayed masked
    small, rep = cb2.shrink(x=x[:8])
    np.testing.assert_allclose(small.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=ATOL)
    assert rep.channels_removed == int(final.sum())


def test_finish_end_step_from_fit_and_revive():
    model = compiled(mobile_se())
    x, y = random_data(model)
    cb = ChannelPruning(params=0.3, allocation="global", begin_step=0, end_step=1000, frequency=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert not cb.status().done
    cb.finish()
    assert cb.status().done and {k: len(v) for k, v in cb.masked_.items()} == cb.counts_
    small, rep = cb.shrink(x=x[:8])
    assert abs(rep.params_after / rep.params_before - (1 - cb.plan_.achieved)) < 1e-9
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=ATOL)

    model = compiled(mobile_se())
    cb = ChannelPruning(macs=0.3, allocation="uniform", revive=True, ramp_fraction=0.5)  # end_step from this fit: 8 steps
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[cb])
    assert (cb.begin_step_, cb.end_step_, cb.frequency_) == (0, 8, 1)
    assert cb.status().done and "channels_masked" in model.history.history
    small, rep = cb.shrink(x=x[:8])
    assert profile(small).macs == cb.plan_.macs_after
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=ATOL)


@pytest.mark.slow  # 15 s quiet, 34 s loaded; the smaller residual + BN models above cover the same path
def test_resnet20_gradual_matches_plan():
    model = compiled(tfprune.models.resnet20((16, 16, 3), 10), lr=1e-3)
    x, y = random_data(model, n=32)
    cb = ChannelPruning(macs=0.5, end_step=6, frequency=2, min_channels=2)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert abs(cb.plan_.achieved - 0.5) <= cb.plan_.tolerance
    small, rep = cb.shrink(x=x[:4])
    assert profile(small).macs == cb.plan_.macs_after and rep.removed == cb.remove
    assert min(small.get_layer(n).filters for n in ("stem_conv", "stage1_block1_conv1", "stage3_block3_conv1")) >= 2
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=ATOL)
    assert small.get_layer("fc").units == 10


def test_constructing_and_shrinking_never_change_the_model():
    model = compiled(mixed_model())
    snap = json.dumps(model.get_config(), sort_keys=True, default=str), weights_of(model)
    cb = ChannelPruning(macs=0.3)
    plan = plan_channels(model, macs=0.3)
    cb2 = ChannelPruning(plan=plan)
    cb2.set_model(model)
    cb2.on_train_begin()  # reads masks (none): nothing written yet
    assert cb2.masked_ == {}
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == snap[0]
    assert all(np.array_equal(snap[1][k], v) for k, v in weights_of(model).items())
    assert cb.model is None


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="exactly one of macs="):
        ChannelPruning()
    with pytest.raises(ValueError, match="exactly one of macs="):
        ChannelPruning(macs=0.5, params=0.5)
    with pytest.raises(ValueError, match="fraction removed"):
        ChannelPruning(macs=1.2)
    with pytest.raises(ValueError, match="unknown channel importance"):
        ChannelPruning(macs=0.5, importance="nope")
    with pytest.raises(ValueError, match="end_step"):
        ChannelPruning(macs=0.5, begin_step=5, end_step=2)
    model = compiled(mixed_model())
    x, y = random_data(model, n=16)
    cb = ChannelPruning(macs=0.5)
    cb.set_model(tfprune.wrap(model))
    with pytest.raises(ValueError, match="pruning wrappers"):
        cb.on_train_begin()
    with pytest.raises(ValueError, match="not a prunable group|no channel group"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ChannelPruning(plan={"nope": 1}, end_step=1)])
    with pytest.raises(ValueError, match="at most"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ChannelPruning(plan={"b1": 6}, end_step=1)])
    with pytest.raises(ValueError, match="cannot be pruned"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ChannelPruning(plan={"logits": 1}, end_step=1)])


def test_channels_shrink_could_not_remove_are_never_masked():
    """sigmoid(0) = 0.5 into a padded 3x3 conv cannot be folded: those channels stay (listed); the ReLU branch's go."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    a = L.Conv2D(4, 1, activation="relu", name="relu_branch")(inp)
    b = L.Conv2D(4, 1, activation="sigmoid", name="sigmoid_branch")(inp)
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="mix")(L.Concatenate(name="cat")([a, b]))
    model = compiled(keras.Model(inp, L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(x)), name="sig"))
    x_, y_ = random_data(model, n=16)
    cb = ChannelPruning(plan={"relu_branch": 2}, end_step=2, frequency=1)
    model.fit(x_, y_, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert sorted(cb.unremovable_) == [f"sigmoid_branch[{j}]" for j in range(4)]
    assert "padding='same'" in cb.unremovable_["sigmoid_branch[0]"]
    assert {k: len(v) for k, v in cb.masked_.items()} == {"relu_branch": 2}
    small, rep = cb.shrink(x=x_[:4])
    assert small.get_layer("relu_branch").filters == 2 and small.get_layer("sigmoid_branch").filters == 4
    np.testing.assert_allclose(small.predict(x_, verbose=0), model.predict(x_, verbose=0), atol=ATOL)
    with pytest.raises(ValueError, match="cannot be removed exactly"):
        model.fit(x_, y_, epochs=1, verbose=0, callbacks=[ChannelPruning(plan={"sigmoid_branch": 1}, end_step=1)])


@pytest.mark.parametrize("importance", ["bn_scale", "taylor"])
def test_other_channel_scorers_drive_the_masks(importance):
    model = compiled(mixed_model())
    x, y = random_data(model, n=32)
    data = (x[:16], y[:16]) if importance == "taylor" else None
    cb = ChannelPruning(macs=0.3, importance=importance, data=data, allocation="uniform", end_step=4, frequency=2)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    assert cb.plan_.importance == importance and cb.status().done
    small, rep = cb.shrink(x=x[:4])
    assert profile(small).macs == cb.plan_.macs_after
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=ATOL)
    with pytest.raises(ValueError, match="needs calibration data"):
        ChannelPruning(macs=0.3, importance="taylor")


@pytest.mark.slow  # about 25 s: a model we did not write, as a user would bring it
def test_gradual_on_keras_applications_mobilenetv2():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 96, 96, 3), dtype=np.float32), rng.integers(0, 10, 128)
    cb = tfprune.ChannelPruning(macs=0.3, end_step=6, frequency=2)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    small, report = cb.shrink()
    removed = 1 - tfprune.profile(small).macs / tfprune.profile(model).macs
    assert abs(removed - 0.3) < 0.01
    assert small.output_shape == (None, 10)
    np.testing.assert_allclose(small.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0), atol=1e-4)
