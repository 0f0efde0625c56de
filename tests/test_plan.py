"""Mask rules (numpy reference == graph version) and the one plan every entry point uses."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import tfprune
from tfprune._keras import keras
from tfprune.masks import granularity as G
from tfprune.planning import output_layer_names, round_to_units


# ---------------------------------------------------------------- mask rules
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.99), st.sampled_from(["unstructured", "block", "2:4", "1:4"]),
       st.sampled_from([(8, 12), (3, 3, 8, 6), (1, 1, 4, 5), (16, 4)]), st.booleans())
def test_graph_rule_equals_numpy_reference(seed, s, rule, shape, transpose):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal(shape).astype(np.float32)
    k[rng.random(shape) < 0.1] = 0.0  # ties at zero must break the same way
    g = G.parse_granularity(rule, (4, 1) if shape[0] % 4 == 0 else (1, 1))
    transpose = transpose and len(shape) == 4
    if g.kind == "n:m" and G.layer_units(shape, g, transpose)[2] is not None:
        return
    got = G.mask_tf(tf.constant(k), tf.constant(s), g, transpose=transpose).numpy()
    if g.kind == "unstructured" or (g.kind == "block" and len(shape) != 2):
        ref = G.unstructured_mask_np(k, s)
    elif g.kind == "block":
        ref = G.block_mask_np(k, s, g.block_size)
    else:
        ref = G.nm_mask_np(k, s, g.n, g.m, transpose=transpose)
    np.testing.assert_array_equal(got, ref)


def test_rules_remove_whole_units_and_exact_counts():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((3, 3, 8, 10)).astype(np.float32)
    assert G.channels_to_remove(10, 0.35) == 4 and G.channels_to_remove(10, 0.99) == 9  # one channel always stays
    assert int((G.unstructured_mask_np(k, 0.9) == 0).sum()) == k.size - G.kept_count(k.size, 0.9)
    nm = G.nm_mask_np(k, 0.5, 2, 4)
    assert np.all(np.moveaxis(nm, -2, -1).reshape(-1, 4).sum(1) == 2)
    ramp = G.nm_mask_np(k, 0.3, 2, 4)  # mid-ramp: floor(0.3 * 4) = 1 zero per group
    assert np.all(np.moveaxis(ramp, -2, -1).reshape(-1, 4).sum(1) == 3)
    d = rng.standard_normal((8, 6)).astype(np.float32)
    b = G.block_mask_np(d, 0.5, (4, 1))
    assert np.all(b.reshape(2, 4, 6).std(1) == 0) and (b == 0).sum() == 24
    assert G.layer_units((3, 3, 6, 8), G.parse_granularity("2:4")) == (0, 0, "input size 6 is not a multiple of M=4")
    with pytest.raises(ValueError, match="granularity='channel'"):  # channels are planned by coupled group, not per layer
        G.layer_units((3, 3, 8, 16), G.parse_granularity("channel"))


def test_parse_granularity_errors_name_the_valid_values():
    assert G.parse_granularity("2:4").name == "2:4" and G.parse_granularity(" Channel ").kind == "channel"
    for bad in ("row", "4:2", "0:4", 3, None):
        with pytest.raises(ValueError, match="unstructured|N:M"):
            G.parse_granularity(bad)
    with pytest.raises(ValueError, match="block_size"):
        G.parse_granularity("block", (0, 1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 40)), min_size=1, max_size=6), st.floats(0, 0.95))
def test_round_to_units_is_within_one_unit_of_the_budget(layers, s):
    units = np.array([u for u, _ in layers])
    uw = np.array([w for _, w in layers])
    n = units * uw
    max_units = units - 1
    budget = int(round(s * n.sum()))
    budget = min(budget, int((max_units * uw).sum()))
    real = np.minimum(n * budget / n.sum(), max_units * uw)
    got = round_to_units(real, uw, max_units, budget)
    assert np.all(got >= 0) and np.all(got <= max_units)
    assert abs(int((got * uw).sum()) - budget) <= uw.max()


# ---------------------------------------------------------------------- plan
def test_plan_defaults_and_exact_unstructured_budget(trained_tiny):
    p = tfprune.plan(trained_tiny, 0.9)
    assert p.importance.method == "capacity_energy" and p.allocator == "importance" and p.granularity == "unstructured"
    inv = tfprune.prunable_layers(trained_tiny)
    assert sum(p.removed.values()) == round(0.9 * inv.n_params)
    assert p.targets == pytest.approx(p.allocation.targets)
    assert "fc1" in p.table() and "fc1" in p.to_markdown() and p.to_dict()["achieved"] == pytest.approx(p.achieved)


def test_plan_accepts_importance_scores_and_skips_scoring_for_score_free_allocators(trained_tiny, monkeypatch):
    scores = tfprune.score_layers(trained_tiny, "magnitude")
    p = tfprune.plan(trained_tiny, 0.8, importance=scores)
    assert p.importance is scores
    import tfprune.planning.planner as planning

    monkeypatch.setattr(planning, "score_layers", lambda *a, **k: pytest.fail("uniform needs no scores"))
    u = tfprune.plan(trained_tiny, 0.8, allocation="uniform")
    assert u.importance is None and u.allocator == "uniform"
    inv = tfprune.prunable_layers(trained_tiny)
    for q in inv:
        assert u.targets[q.name] == pytest.approx(0.8, abs=1 / q.n_params + 1e-9)


def test_plan_channel_groups_outputs_and_bounds(trained_tiny):
    p = tfprune.plan(trained_tiny, macs=0.4, granularity="channel")
    assert p.granularity == "channel" and p.budget == "macs" and "fc2" in p.excluded and "fc2" not in p.channels
    assert output_layer_names(trained_tiny) == {"fc2"}
    for g, chans in p.channels.items():
        assert len(chans) == round(p.targets[g] * p.n_units[g]) and len(chans) <= p.n_units[g] - 1  # a channel stays
    assert abs(p.achieved - 0.4) <= p.tolerance
    q = tfprune.plan(trained_tiny, macs=0.4, granularity="channel", include_outputs=True, min_channels=4)
    assert "fc2" not in q.excluded and all(p.n_units[g] - len(c) >= 4 for g, c in q.channels.items())
    with pytest.raises(ValueError, match="counted in MACs or parameters"):
        tfprune.plan(trained_tiny, 0.5, granularity="channel")
    with pytest.raises(ValueError, match="PruneLayer masks weights of one layer"):
        tfprune.wrap(trained_tiny, granularity="unstructured").layers[1].set_granularity("channel")


def test_output_layers_through_activations_and_sequential():
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b"), keras.layers.Softmax()])
    assert output_layer_names(seq) == {"b"}
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    y = keras.layers.BatchNormalization()(x)
    y = keras.layers.Activation("relu")(y)
    pooled = keras.layers.GlobalAveragePooling2D()(y)
    box = keras.layers.Dense(4, name="box")(pooled)
    cls = keras.layers.Dense(3, name="cls")(pooled)
    m = keras.Model(inp, [box, keras.layers.Activation("softmax")(cls), y])
    assert output_layer_names(m) == {"box", "cls", "c"}
    assert output_layer_names(tfprune.wrap(m)) == {"box", "cls", "c"}


def test_plan_n_m_and_bad_names(trained_tiny):
    p = tfprune.plan(trained_tiny, 0.5, granularity="2:4")
    assert p.excluded == {"conv1": "input size 1 is not a multiple of M=4"}
    assert set(p.targets.values()) <= {0.0, 0.5}
    with pytest.raises(ValueError, match="unknown allocation 'nope'; valid: .*lamp"):
        tfprune.plan(trained_tiny, 0.5, allocation="nope")
    with pytest.raises(ValueError, match="unknown importance method 'nope'"):
        tfprune.plan(trained_tiny, 0.5, importance="nope")
    with pytest.raises(ValueError, match="sparsity must be in"):
        tfprune.plan(trained_tiny, 1.0)
    with pytest.raises(ValueError, match="exclude names unknown"):
        tfprune.plan(trained_tiny, 0.5, exclude=["zz"])
    with pytest.raises(ValueError, match="needs calibration data"):
        tfprune.plan(trained_tiny, 0.5, importance="sensitivity")


def test_wrap_frozen_keeps_zeros_without_any_callback(trained_tiny, digits_data):
    (xt, yt), _ = digits_data
    pruned = tfprune.clone(trained_tiny)
    k = pruned.get_layer("fc1").kernel
    k.assign(k.numpy() * (np.random.default_rng(0).random(k.shape) > 0.7))
    zeros = k.numpy() == 0
    w = tfprune.wrap(pruned, granularity="frozen")
    w.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    w.fit(xt[:256], yt[:256], batch_size=64, epochs=2, verbose=0)
    out = tfprune.strip(w)
    assert np.array_equal(out.get_layer("fc1").kernel.numpy() == 0, zeros)
    assert not np.allclose(out.get_layer("fc1").kernel.numpy(), k.numpy())  # it did train
    assert np.count_nonzero(out.get_layer("conv1").kernel.numpy() == 0) == np.count_nonzero(trained_tiny.get_layer("conv1").kernel.numpy() == 0)
