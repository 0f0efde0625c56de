"""Property-based tests (hypothesis) over the public entry points: a clear error or a correct result, never a silent wrong one.

Every case also checks that the user's model is not modified. "Clear" means:
a ValueError/TypeError whose message names the argument at fault.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfprune
from tfprune._keras import keras
from tfprune.evaluate import OneShotEvaluator

FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
ANY_NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(), st.none(), st.text(max_size=3))


def _dense():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="h")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(h))


def _conv():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(h)))


DENSE, CONV = _dense(), _conv()
X = np.random.default_rng(0).random((32, 6), dtype=np.float32)


def _snapshot(model):
    return [w.copy() for w in model.get_weights()]


def _unchanged(model, before):
    return len(before) == len(model.get_weights()) and all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def _is_fraction(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1


@FUZZ
@given(ANY_NUMBER)
def test_plan_total_sparsity(value):
    before = _snapshot(DENSE)
    if _is_fraction(value):
        p = tfprune.plan(DENSE, value, include_outputs=True)
        n = sum(p.n_units.values())
        assert abs(p.achieved - value) <= 1.0 / n + 1e-12  # one weight
        assert all(0 <= t < 1 for t in p.targets.values())
    else:
        with pytest.raises((ValueError, TypeError), match="sparsity"):
            tfprune.plan(DENSE, value)
    assert _unchanged(DENSE, before)


@FUZZ
@given(st.dictionaries(st.sampled_from(["h", "out", "nope"]), ANY_NUMBER, max_size=3))
def test_obs_per_layer_targets(targets):
    before = _snapshot(DENSE)
    valid = bool(targets) and all(k in ("h", "out") and _is_fraction(v) for k, v in targets.items())
    if valid:
        pruned, report = tfprune.obs.prune(DENSE, X, targets=targets, solver="magnitude", progress=False)
        for name, t in targets.items():
            k = pruned.get_layer(name).get_weights()[0]
            assert np.count_nonzero(k == 0) >= round(t * k.size)  # at least the target (a zero weight may already be zero)
    else:
        with pytest.raises((ValueError, TypeError), match="targets"):
            tfprune.obs.prune(DENSE, X, targets=targets, solver="magnitude", progress=False)
    assert _unchanged(DENSE, before)


@FUZZ
@given(st.lists(st.one_of(st.integers(-2, 6), st.floats(-1, 5), st.just(float("nan"))), max_size=5))
def test_shrink_channel_lists(chans):
    before = _snapshot(CONV)
    whole = all(isinstance(c, int) or (isinstance(c, float) and math.isfinite(c) and c.is_integer()) for c in chans)
    ids = [int(c) for c in chans] if whole else []
    valid = whole and all(0 <= i < 4 for i in ids) and len(set(ids)) == len(ids) and len(ids) < 4
    if valid:
        small, report = tfprune.shrink(CONV, remove={"c1": chans})
        assert small.get_layer("c1").filters == 4 - len(ids)
        kept = [j for j in range(4) if j not in ids]
        np.testing.assert_array_equal(small.get_layer("c1").get_weights()[0], CONV.get_layer("c1").get_weights()[0][..., kept])
    else:
        with pytest.raises(ValueError, match=r"remove|channels"):
            tfprune.shrink(CONV, remove={"c1": chans})
    assert _unchanged(CONV, before)


@FUZZ
@given(st.sampled_from(["sparsity", "begin_step", "end_step", "frequency", "power", "ramp_fraction", "initial_sparsity", "min_channels"]),
       ANY_NUMBER)
def test_callback_arguments(name, value):
    kw = {"sparsity": 0.5}
    if name == "sparsity":
        kw = {}
    try:
        cb = tfprune.Pruning(**kw, **{name: value})
    except (ValueError, TypeError) as err:
        assert name in str(err) or (value is None and name == "sparsity"), str(err)
        return
    stored = {"sparsity": cb.sparsity, "begin_step": cb.begin_step, "end_step": cb.end_step, "frequency": cb.frequency, "power": cb.power,
              "ramp_fraction": cb.ramp_fraction, "initial_sparsity": cb.initial_sparsity,
              "min_channels": cb.channel_kwargs["min_channels"]}[name]
    if value is None:
        assert name in ("end_step", "frequency") and stored is None
        return
    assert not isinstance(value, (bool, str))
    assert math.isfinite(float(value)) and float(stored) == float(value)
    if name in ("sparsity", "initial_sparsity"):
        assert 0 <= value < 1
    if name in ("begin_step", "end_step"):
        assert value >= 0 and float(value).is_integer()
    if name in ("frequency", "min_channels"):
        assert value >= 1 and float(value).is_integer()
    if name in ("power", "ramp_fraction"):
        assert value > 0


@FUZZ
@given(st.sampled_from(["int", "float_ids", "fractional", "one_hot", "strings", "out_of_range", "negative", "nan"]),
       st.sampled_from(["sparse", "categorical", None]))
def test_labels_against_the_loss(kind, loss):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 3, 32)
    y = {"int": ids, "float_ids": ids.astype(np.float32), "fractional": ids + 0.5, "one_hot": np.eye(3, dtype=np.float32)[ids],
         "strings": np.array(["a", "b", "c"])[ids], "out_of_range": ids + 3, "negative": ids - 3,
         "nan": np.where(ids == 0, np.nan, ids)}[kind]
    model = _dense()
    if loss is not None:
        model.compile(loss={"sparse": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                            "categorical": keras.losses.CategoricalCrossentropy(from_logits=True)}[loss])
    before = _snapshot(model)
    fits = (kind in ("int", "float_ids") and loss != "categorical") or (kind == "one_hot" and loss != "sparse")
    if fits:
        ev = OneShotEvaluator(model, X, y)
        pred = model.predict(X, verbose=0).argmax(-1)
        assert ev.dense.accuracy == pytest.approx(float(np.mean(pred == ids)))
    else:
        with pytest.raises(ValueError, match=r"labels|\(y\)"):
            OneShotEvaluator(model, X, y)
    assert _unchanged(model, before)


@FUZZ
@given(st.tuples(st.integers(1, 40), st.integers(1, 8)), st.sampled_from([np.float32, np.float64, np.int32]))
def test_one_shot_evaluator_input_shapes(shape, dtype):
    """Inputs of the wrong width are refused (no broadcasting into a silent result)."""
    n, width = shape
    x = np.ones((n, width), dtype)
    y = np.zeros(n, np.int64)
    if width == 6:
        assert OneShotEvaluator(DENSE, x, y).dense.accuracy >= 0
    else:
        with pytest.raises((ValueError, TypeError)):
            OneShotEvaluator(DENSE, x, y)
