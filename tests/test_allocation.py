"""Item 7: allocation result type, exact budgets, bounds, the uniform allocator."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfprune
from tfprune.allocation import allocate_sparsity, fill_to_budget, integerize, list_allocators


def test_uniform_is_exact_and_equal():
    a = allocate_sparsity({"a": 1000, "b": 3000, "c": 6000}, 0.9)
    assert a.method == "uniform"
    assert a.removed == {"a": 900, "b": 2700, "c": 5400}
    assert a.total_sparsity == 0.9
    assert a.targets == {"a": 0.9, "b": 0.9, "c": 0.9}
    assert "uniform" in list_allocators()


def test_budget_counts_every_prunable_weight_including_excluded():
    a = allocate_sparsity({"a": 100, "b": 900}, 0.5, exclude=["a"])
    assert a.removed["a"] == 0
    assert a.removed["b"] == 500
    assert a.total_sparsity == 0.5


def test_caps_pass_their_share_to_others():
    a = allocate_sparsity({"a": 100, "b": 900}, 0.8, max_sparsity={"a": 0.5})
    assert a.removed["a"] == 50 and a.removed["b"] == 750
    b = allocate_sparsity({"a": 100, "b": 900}, 0.7, min_density=0.25)
    assert all(b.removed[k] <= 0.75 * n for k, n in b.n_params.items())
    assert sum(b.removed.values()) == 700


def test_infeasible_budget_and_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="allow at most"):
        allocate_sparsity({"a": 100, "b": 100}, 0.9, max_sparsity=0.5)
    with pytest.raises(ValueError, match="sparsity must be in"):
        allocate_sparsity({"a": 10}, 1.0)
    with pytest.raises(ValueError, match="sparsity must be in"):
        allocate_sparsity({"a": 10}, float("nan"))
    with pytest.raises(ValueError, match="unknown allocation"):
        allocate_sparsity({"a": 10}, 0.5, allocation="nope")
    with pytest.raises(ValueError, match="exclude names unknown"):
        allocate_sparsity({"a": 10}, 0.5, exclude=["zz"])
    with pytest.raises(ValueError, match="min_keep"):
        allocate_sparsity({"a": 10}, 0.5, min_keep=0)


def test_allocation_from_a_model(trained_tiny):
    a = allocate_sparsity(trained_tiny, 0.75)
    inv = tfprune.prunable_layers(trained_tiny)
    assert list(a.n_params) == inv.names
    assert sum(a.removed.values()) == round(0.75 * inv.n_params)
    assert "achieved" in a.table() and a.to_dict()["total_sparsity"] == a.total_sparsity


sizes = st.lists(st.integers(1, 5000), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(n=sizes, total=st.floats(0.0, 0.999), min_density=st.floats(0.0, 0.3), data=st.data())
def test_property_uniform_budget_exact_bounds_no_collapse(n, total, min_density, data):
    layers = {f"l{i}": v for i, v in enumerate(n)}
    excluded = data.draw(st.lists(st.sampled_from(list(layers)), max_size=len(n) - 1, unique=True))
    try:
        a = allocate_sparsity(layers, total, min_density=min_density, exclude=excluded)
    except ValueError as err:
        assert "allow at most" in str(err)
        return
    N = sum(n)
    assert sum(a.removed.values()) == round(total * N)
    for k, v in layers.items():
        r = a.removed[k]
        assert 0 <= r <= v - 1  # every layer keeps at least one weight
        assert v - r >= np.ceil(min_density * v - 1e-9)
        if k in excluded:
            assert r == 0
    b = allocate_sparsity(layers, total, min_density=min_density, exclude=excluded)
    assert a.removed == b.removed  # deterministic


@settings(max_examples=200, deadline=None)
@given(real=st.lists(st.floats(0, 1000), min_size=1, max_size=10), data=st.data())
def test_property_integerize_within_one_weight(real, data):
    real = np.array(real)
    caps = np.ceil(real).astype(np.int64) + data.draw(st.integers(0, 3))
    budget = int(round(real.sum()))
    out = integerize(real, caps, budget)
    assert out.sum() == budget
    assert (out >= 0).all() and (out <= caps).all()
    assert np.all(np.abs(out - real) < 1.0 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(base=st.lists(st.floats(0.01, 100), min_size=1, max_size=8), data=st.data())
def test_property_fill_to_budget(base, data):
    caps = np.array(data.draw(st.lists(st.integers(0, 500), min_size=len(base), max_size=len(base))))
    budget = data.draw(st.integers(0, int(caps.sum())))
    out = fill_to_budget(np.array(base), caps, budget)
    assert out.sum() == budget and (out <= caps).all() and (out >= 0).all()
