"""Issue 13: `global_ratio` normalisations and the `output_error` allocator (numpy only, fast)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfprune
from tfprune.allocation import allocate_sparsity
from tfprune.allocation.global_ratio import NORMALIZATIONS, energy_removed_scores, normalized_scores
from tfprune.allocation.output_error import error_curve, lower_hull, min_cost_removals, removal_grid


def fake_layers(kernels, types=None):
    """Inventory-like entries with fixed kernels (no TensorFlow)."""
    types = types or ["Dense"] * len(kernels)
    out = []
    for i, (k, t) in enumerate(zip(kernels, types)):
        p = tfprune.inventory.layers.PrunableLayer(f"l{i}", f"l{i}", t, "kernel", tuple(k.shape), int(k.size))
        p.kernel = lambda k=k: k
        out.append(p)
    return out


def random_layers(seed=0, shapes=((20, 8), (60, 30), (3, 3, 4, 6)), scales=(1.0, 0.1, 0.5)):
    rng = np.random.default_rng(seed)
    kernels = [rng.standard_t(4, size=s) * c for s, c in zip(shapes, scales)]
    types = ["Conv2D" if len(s) == 4 else "Dense" for s in shapes]
    return fake_layers(kernels, types), kernels


# ------------------------------------------------------------ global_ratio
def test_energy_scores_definition():
    w = np.array([3.0, -1.0, 2.0, 0.5])
    # ascending |w|: 0.5, 1, 2, 3 ; cumulative energy 0.25, 1.25, 5.25, 14.25
    assert energy_removed_scores(w).tolist() == pytest.approx([1.0, 1.25 / 14.25, 5.25 / 14.25, 0.25 / 14.25])
    assert energy_removed_scores(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_normalisations_are_monotone_in_magnitude_and_scale_free():
    rng = np.random.default_rng(1)
    w = rng.normal(size=200)
    order = np.argsort(np.abs(w), kind="stable")
    for norm in NORMALIZATIONS:
        s = normalized_scores(w, norm)
        assert np.all(np.diff(s[order]) >= -1e-12), norm  # the layer's own mask order is kept
        if norm != "raw":
            assert normalized_scores(7.0 * w, norm) == pytest.approx(s), norm  # a layer's scale does not matter
    with pytest.raises(ValueError, match="normalization must be one of"):
        normalized_scores(w, "max")


def test_global_ratio_rankings_match_named_allocators():
    layers, _ = random_layers()
    for s in (0.5, 0.9, 0.97):
        assert allocate_sparsity(layers, s, "global_ratio", normalization="raw").removed == allocate_sparsity(layers, s, "global").removed
        assert allocate_sparsity(layers, s, "global_ratio", normalization="lamp").removed == allocate_sparsity(layers, s, "lamp").removed
        assert allocate_sparsity(layers, s, "global_ratio").removed == allocate_sparsity(layers, s, "lamp").removed  # the default


def test_global_ratio_energy_equalises_removed_energy():
    """One threshold on the removed energy share: every layer loses about the same share of its energy."""
    layers, kernels = random_layers(shapes=((200, 50), (300, 40), (100, 80)))
    a = allocate_sparsity(layers, 0.8, "global_ratio", normalization="energy")
    shares = []
    for p, k in zip(layers, kernels):
        r = a.removed[p.name]
        w2 = np.sort(np.square(k).ravel())
        shares.append(w2[:r].sum() / w2.sum())
    assert max(shares) - min(shares) < 0.01
    assert len({a.removed[p.name] / p.n_params for p in layers}) == 3  # but different weight shares


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), total=st.floats(0.0, 0.99), norm=st.sampled_from(NORMALIZATIONS), min_density=st.floats(0, 0.2))
def test_property_global_ratio_exact_budget(seed, total, norm, min_density):
    layers, _ = random_layers(seed)
    try:
        a = allocate_sparsity(layers, total, "global_ratio", normalization=norm, min_density=min_density, exclude=["l0"])
    except ValueError as err:
        assert "allow at most" in str(err)
        return
    n = sum(p.n_params for p in layers)
    assert sum(a.removed.values()) == round(total * n)
    assert a.removed["l0"] == 0
    for p in layers:
        assert p.n_params - a.removed[p.name] >= max(1, np.ceil(min_density * p.n_params - 1e-9))


# ----------------------------------------------------------- output_error
def test_removal_grid():
    g = removal_grid(1000, 990, 16)
    assert g[0] == 0 and g[-1] == 990 and np.all(np.diff(g) > 0)
    assert removal_grid(10, 7, "full").tolist() == list(range(8))
    assert removal_grid(10, 0, 8).tolist() == [0]
    with pytest.raises(ValueError, match="grid must be"):
        removal_grid(10, 5, 1)


def test_error_curve_matches_direct_computation():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(12, 5))
    X = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))  # correlated inputs
    H = X.T @ X / len(X)
    counts = np.array([0, 1, 7, 20, 45, 59, 60])
    got = error_curve(W, counts, H)
    order = np.argsort(np.abs(W).ravel(), kind="stable")
    for r, e in zip(counts, got):
        D = np.zeros(W.size)
        D[order[:r]] = W.ravel()[order[:r]]
        D = D.reshape(W.shape)
        assert e == pytest.approx(np.sum((X @ D) ** 2) / np.sum((X @ W) ** 2), rel=1e-9, abs=1e-12)
    assert got[-1] == pytest.approx(1.0)
    # H = I (or no H): the removed share of the weight energy; a bias row/column is ignored
    np.testing.assert_allclose(error_curve(W, counts, np.eye(12)), error_curve(W, counts), atol=1e-12)
    Hb = np.eye(13)
    Hb[-1, :] = Hb[:, -1] = 5.0
    np.testing.assert_allclose(error_curve(W, counts, Hb), error_curve(W, counts), atol=1e-12)
    with pytest.raises(ValueError, match="hessian must be"):
        error_curve(W, counts, np.eye(5))


def test_lower_hull():
    x = np.array([0.0, 1, 2, 3, 4])
    y = np.array([0.0, 3, 1, 2, 6])
    assert lower_hull(x, y).tolist() == [0, 2, 3, 4]
    assert lower_hull(x, 2 * x).tolist() == [0, 4]  # collinear points dropped


def test_min_cost_removals_is_optimal_on_convex_curves():
    rng = np.random.default_rng(3)
    curves = []
    for cap in (4, 6, 5):
        c = np.concatenate([[0.0], np.cumsum(np.sort(rng.uniform(0, 1, cap)))])  # convex, increasing
        curves.append((np.arange(cap + 1), c))
    for budget in range(0, 16):
        got = min_cost_removals(curves, budget)
        assert got.sum() == budget
        best = min(
            sum(c[1][r] for c, r in zip(curves, rs))
            for rs in itertools.product(*(range(len(c[0])) for c in curves))
            if sum(rs) == budget
        )
        assert sum(c[1][r] for c, r in zip(curves, got)) == pytest.approx(best)
    with pytest.raises(ValueError, match="budget"):
        min_cost_removals(curves, 16)


def test_output_error_without_hessians_on_every_count_is_lamp():
    """With H = I, log cost and every count sampled, the convex minimisation is LAMP's global ranking."""
    layers, _ = random_layers(seed=4)
    for s in (0.3, 0.8, 0.95):
        a = allocate_sparsity(layers, s, "output_error", grid="full")
        b = allocate_sparsity(layers, s, "lamp")
        assert a.removed == b.removed


def test_output_error_uses_hessians():
    layers, kernels = random_layers(seed=5, shapes=((20, 8), (30, 6)), scales=(1.0, 1.0))
    base = allocate_sparsity(layers, 0.7, "output_error")
    H = [100.0 * np.eye(20), np.eye(30)]
    assert allocate_sparsity(layers, 0.7, "output_error", hessians=H).removed == base.removed  # errors are relative: a layer's scale cancels
    rng = np.random.default_rng(6)
    X = rng.normal(size=(500, 20))
    X[:, :10] *= 10.0  # half the inputs dominate layer 0's output
    H0 = X.T @ X / len(X)
    a = allocate_sparsity(layers, 0.7, "output_error", hessians={"l0": H0, "l1": None})
    b = allocate_sparsity(layers, 0.7, "output_error", hessians=[H0, None])
    assert a.removed == b.removed and sum(a.removed.values()) == round(0.7 * 340)
    assert a.removed != base.removed  # uneven inputs change what layer 0's removals cost
    s = allocate_sparsity(layers, 0.7, "output_error", hessians=[H0, None], objective="sum")
    assert sum(s.removed.values()) == round(0.7 * 340)
    with pytest.raises(ValueError, match="unknown option"):
        allocate_sparsity(layers, 0.7, "output_error", damp=1.0)
    with pytest.raises(ValueError, match="objective must be"):
        allocate_sparsity(layers, 0.7, "output_error", objective="max")
    with pytest.raises(ValueError, match="one per layer"):
        allocate_sparsity(layers, 0.7, "output_error", hessians=[H0])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), total=st.floats(0.0, 0.94), objective=st.sampled_from(["log", "sum"]), grid=st.sampled_from([2, 9, 48]))
def test_property_output_error_exact_budget(seed, total, objective, grid):
    layers, kernels = random_layers(seed)
    a = allocate_sparsity(layers, total, "output_error", objective=objective, grid=grid, max_sparsity={"l2": 0.5})
    n = sum(p.n_params for p in layers)
    assert sum(a.removed.values()) == round(total * n)
    assert a.removed["l2"] <= 0.5 * layers[2].n_params
    assert all(0 <= a.removed[p.name] <= p.n_params - 1 for p in layers)
