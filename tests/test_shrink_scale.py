"""`shrink`'s exactness check is relative to the output scale: a wrong removal is caught on outputs of 1e-8 too."""

from __future__ import annotations

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.structured import channel_graph, mask_channels, removal, shrink

L = keras.layers


def tiny_scale_model(seed: int = 0):
    """conv -> relu -> conv 1x1 -> GAP -> dense, weights scaled so every tensor is below 1e-5 and the outputs near 1e-8."""
    inp = keras.Input((8, 8, 3))
    x = L.ReLU(name="r1")(L.Conv2D(8, 3, name="c1")(inp))
    x = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(6, 1, name="c2")(x))
    model = keras.Model(inp, L.Dense(4, name="out")(x))
    rng = np.random.default_rng(seed)
    for name, scale in (("c1", 1e-6), ("c2", 1.0), ("out", 1e-3)):
        layer = model.get_layer(name)
        k, b = layer.get_weights()
        layer.set_weights([(rng.normal(size=k.shape) * scale).astype("float32"), np.zeros_like(b)])
    return model


def _c1_group(model):
    cg = channel_graph(model)
    return next(g.name for g in cg.prunable if g.channels == 8)


def _x(n: int = 4):
    return np.random.default_rng(1).normal(size=(n, 8, 8, 3)).astype("float32")


def test_correct_removal_at_output_scale_1e8_passes_and_reports_its_bound():
    model = tiny_scale_model()
    out = np.abs(model(_x(), training=False).numpy()).max()
    assert 1e-10 < out < 1e-7
    small, rep = shrink(model, remove={_c1_group(model): [0, 1, 2]}, x=_x())
    assert small.get_layer("c1").filters == 5 and rep.channels_removed == 3
    assert rep.atol == 1e-4 and rep.scale_floor == removal.SCALE_FLOOR
    assert rep.max_abs_output == pytest.approx(np.abs(mask_channels(model, {_c1_group(model): [0, 1, 2]})(_x(), training=False)).max(), rel=1e-6)
    assert rep.tolerance == pytest.approx(1e-4 * rep.max_abs_output) and rep.tolerance < 1e-11  # relative, not 1e-4 absolute
    assert rep.max_rel_diff <= 1e-4 and rep.max_rel_diff_tensors <= 1e-4
    assert rep.to_dict()["max_rel_diff"] == rep.max_rel_diff
    assert "relative to max |output|" in rep.table()


def test_wrong_removal_at_output_scale_1e8_is_detected(monkeypatch):
    """A removal that drops a kept filter: invisible under the old absolute bound (atol * max(1, max|out|)), caught now."""
    model = tiny_scale_model()
    group = _c1_group(model)
    real_build = removal._build
    built = []

    def wrong_build(cg, keep, fold, name):
        new, folded = real_build(cg, keep, fold, name)
        layer = new.get_layer("c1")
        k, b = layer.get_weights()
        k[..., 0] = 0.0  # a channel that was not masked loses its filter: a wrong removal
        layer.set_weights([k, b])
        built.append(new)
        return new, folded

    monkeypatch.setattr(removal, "_build", wrong_build)
    with pytest.raises(RuntimeError, match="differ from the masked model's") as err:
        shrink(model, remove={group: [1, 2]}, x=_x())
    assert "atol=0.0001" in str(err.value)
    masked = mask_channels(model, {group: [1, 2]})
    ref, got = masked(_x(), training=False).numpy(), built[0](_x(), training=False).numpy()
    diff, scale = float(np.abs(ref - got).max()), float(np.abs(ref).max())
    assert diff <= 1e-4 * max(1.0, scale)  # the old bound would have passed it
    assert diff > 1e-2 * scale  # yet it is a large error at this scale


def test_atol_is_checked():
    model = tiny_scale_model()
    for bad in (0.0, -1e-4, float("nan"), "1e-4"):
        with pytest.raises((ValueError, TypeError), match="atol must be"):
            shrink(model, remove={_c1_group(model): [0]}, atol=bad)


def test_finalize_documents_the_relative_atol():
    doc = tfprune.Pruning.finalize.__doc__
    assert "relative to the output scale" in doc
    assert "atol * max |masked|" in shrink.__doc__ and "max(1," not in shrink.__doc__
