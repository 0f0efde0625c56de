"""analyze: the fast one-shot evaluator gives the numbers of a per-layer clone-and-predict reference; labels and loss handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.evaluate import OneShotEvaluator, class_labels, resolve_loss
from tfprune.importance.sensitivity import layer_losses, magnitude_prune

GRID = (0.3, 0.6, 0.8, 0.9, 0.95, 0.99)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_analyze_equals_an_independent_reference(trained_tiny, digits_data):
    """Every accuracy column of `analyze` against `layer_losses` (a clone and ``predict`` per layer and grid point)."""
    _, (xs, ys) = digits_data
    x, y = xs[:256], ys[:256]
    tol = 1.5 / 256  # one sample's worth: the fast evaluator batches differently (float round-off may flip a close argmax)
    before = _weights(trained_tiny)
    fast = tfprune.analyze(trained_tiny, (x, y), sparsity=0.9, grid=GRID, delta=0.02, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(trained_tiny)))  # the user's model is untouched
    names = [r.name for r in fast.layers]
    drops = {}  # (layer, sparsity) -> reference accuracy drop
    dense_acc = None
    for s in GRID:
        _, _, dense_acc, accs = layer_losses(trained_tiny, x, y, names, s, progress=False)
        drops.update({(n, s): dense_acc - a for n, a in zip(names, accs)})
    assert fast.dense_acc == pytest.approx(dense_acc, abs=tol)
    for r in fast.layers:
        _, _, d_acc, (acc,) = layer_losses(trained_tiny, x, y, [r.name], r.allocated_sparsity, progress=False)
        assert r.one_shot_acc_drop == pytest.approx(d_acc - acc, abs=tol)
        # the largest grid point within delta: every larger one is beyond delta, it is within (both to the tolerance)
        assert all(drops[r.name, s] > 0.02 - tol for s in GRID if s > r.max_sparsity_within_delta), r.name
        if r.max_sparsity_within_delta > 0:
            assert drops[r.name, r.max_sparsity_within_delta] <= 0.02 + tol, r.name
    assert fast.most_compact == max(fast.layers, key=lambda r: (r.max_sparsity_within_delta, r.params)).name
    # the reference evaluates the dense model and every layer at every grid point, plus each layer at its allocation
    assert fast.evaluations < len(GRID) * (1 + len(names)) + 2 * len(names)
    assert fast.n_samples == 256 and fast.dense_loss > 0 and fast.loss.startswith("sparse_categorical_crossentropy")
    assert all(r.one_shot_loss_increase is not None for r in fast.layers)
    full = tfprune.analyze(trained_tiny, (x, y), sparsity=0.9, grid=GRID, delta=0.02, progress=False, curves=True)
    assert full.evaluations >= fast.evaluations
    for f, r in zip(full.layers, fast.layers):
        assert [s for s, _ in f.drop_curve] == list(GRID)
        assert all(d == pytest.approx(drops[f.name, s], abs=tol) for s, d in f.drop_curve)
        assert max([s for s, d in f.drop_curve if d <= 0.02], default=0.0) == r.max_sparsity_within_delta


def test_evaluator_traces_once_and_matches_magnitude_prune(trained_tiny, digits_data):
    _, (xs, ys) = digits_data
    ev = OneShotEvaluator(trained_tiny, xs[:200], ys[:200], batch_size=64)  # 200 = 3 full batches + 8
    for s in (0.5, 0.9, 0.99):
        for name in ev.names:
            got = ev.prune_one(name, s)
            ref = ev.with_kernel(name, magnitude_prune(ev.kernel(name), s))
            assert got == ref
    assert ev._forward.experimental_get_tracing_count() == 1
    out = trained_tiny.predict(xs[:200], verbose=0)
    assert ev.dense.accuracy == pytest.approx(float(np.mean(out.argmax(-1) == ys[:200])), abs=1.5 / 200)
    n = ev.evaluations
    ev.prune_one("fc1", 0.9)  # cached: same layer, same number of zeros
    assert ev.evaluations == n
    assert ev.prune_one("fc1", 0.0) == ev.dense


def test_labels_are_required(trained_tiny, digits_data):
    _, (xs, _) = digits_data
    with pytest.raises(ValueError, match="needs labels"):
        tfprune.analyze(trained_tiny, xs[:64], progress=False, grid=(0.5,))
    with pytest.raises(ValueError, match="grid"):
        tfprune.analyze(trained_tiny, (xs[:64], np.zeros(64)), progress=False, grid=(1.5,))


def test_compiled_loss_is_used_and_one_hot_labels(trained_tiny, digits_data):
    _, (xs, ys) = digits_data
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def doubled_ce(y, p):
        return 2.0 * ce(y, p)

    m = tfprune.clone(trained_tiny)
    m.compile(loss=doubled_ce)
    assert resolve_loss(m)[1] == "doubled_ce (the model's compiled loss)"
    x, y = xs[:128], ys[:128]
    plain = OneShotEvaluator(trained_tiny, x, y)
    assert plain.dense.loss == pytest.approx(float(ce(y, trained_tiny.predict(x, verbose=0))), rel=1e-5)
    doubled = OneShotEvaluator(m, x, y)
    assert doubled.dense.loss == pytest.approx(2 * plain.dense.loss, rel=1e-5)
    inp = keras.Input((28, 28, 1))
    soft = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="fc")(keras.layers.Flatten()(inp)))  # not compiled
    ev = OneShotEvaluator(soft, x, y)
    assert "softmax output" in ev.loss_name
    probs = soft.predict(x, verbose=0)
    assert ev.dense.loss == pytest.approx(float(keras.losses.SparseCategoricalCrossentropy()(y, probs)), rel=1e-5)
    onehot = np.eye(10)[y]
    assert np.array_equal(class_labels(onehot, 10), y)
    cat = OneShotEvaluator(trained_tiny, x, onehot, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    assert cat.dense.accuracy == plain.dense.accuracy and cat.dense.loss == pytest.approx(plain.dense.loss, rel=1e-5)


def test_report_table_markdown_and_json(trained_tiny, digits_data):
    _, (xs, ys) = digits_data
    r = tfprune.analyze(trained_tiny, (xs[:128], ys[:128]), progress=False, grid=(0.5, 0.9))
    r.layers[0].name = "a_very_long_layer_name_inside/a_nested_model/that_would_overflow_24_columns"
    text = r.table()
    assert r.layers[0].name in text and "most compact" in text
    header = next(line for line in text.splitlines() if line.startswith("layer"))
    rows = [line for line in text.splitlines() if any(line.startswith(x.name) for x in r.layers)]
    assert len(rows) == 4 and {len(line) for line in rows + [header]} == {len(header)}  # right-aligned last column: equal lengths
    assert "| layer | type |" in r.to_markdown()
    back = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert back["layers"][0]["max_sparsity_within_delta"] in (0.0, 0.5, 0.9) and back["evaluations"] == r.evaluations


def test_dataset_and_wrapped_model_inputs(trained_tiny, digits_data):
    import tensorflow as tf

    _, (xs, ys) = digits_data
    x, y = xs[:160], ys[:160]
    arrays = tfprune.analyze(trained_tiny, (x, y), progress=False, grid=(0.5, 0.9), n_samples=160)
    ds = tfprune.analyze(trained_tiny, tf.data.Dataset.from_tensor_slices((x, y)).batch(50), progress=False, grid=(0.5, 0.9), n_samples=160)
    assert ds.n_samples == 160 and ds.dense_acc == arrays.dense_acc
    assert [r.max_sparsity_within_delta for r in ds.layers] == [r.max_sparsity_within_delta for r in arrays.layers]
    wrapped = tfprune.wrap(trained_tiny)  # masks all ones: the same function as the plain model
    ev = OneShotEvaluator(wrapped, x, y)
    assert ev.dense == OneShotEvaluator(trained_tiny, x, y).dense
    with pytest.raises(ValueError, match="needs labels"):
        tfprune.analyze(trained_tiny, tf.data.Dataset.from_tensor_slices(x).batch(50), progress=False, grid=(0.5,))
