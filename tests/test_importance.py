"""Issue 3: importance scorers, the reference allocators, Pruning, analyze."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfprune
from tfprune.allocation import allocate_sparsity, list_allocators
from tfprune.allocation.magnitude_rules import lamp_scores
from tfprune.importance import kernel_matrix, list_importance, score_layers
from tfprune.importance.capacity import effective_rank, energy_capacity, spectral_capacity

ALL = ["uniform", "global", "global_ratio", "lamp", "erk", "importance", "importance_fansum"]


# ---------------------------------------------------------------- numpy math
def test_effective_rank_and_capacities():
    assert effective_rank(np.eye(8)) == pytest.approx(8.0)
    rank1 = np.outer(np.arange(1, 7), np.arange(1, 5)).astype(float)
    assert effective_rank(rank1) == pytest.approx(1.0)
    assert spectral_capacity(rank1) == pytest.approx(1 / 4)
    assert energy_capacity(np.ones(100), 0.9) == pytest.approx(0.9)
    w = np.zeros(100)
    w[0] = 10.0
    w[1:] = 0.01
    assert energy_capacity(w, 0.9) == pytest.approx(0.01)
    assert kernel_matrix(np.zeros((3, 3, 4, 8)), "Conv2D").shape == (36, 8)
    assert kernel_matrix(np.zeros((3, 3, 8, 4)), "Conv2DTranspose").shape == (36, 8)


def test_lamp_scores_match_definition():
    w = np.array([3.0, -1.0, 2.0, 0.5])
    s = lamp_scores(w)
    # sorted by |w|: 3, 2, -1, 0.5 ; denominators 9, 13, 14, 14.25
    assert s.tolist() == pytest.approx([9 / 9, 1 / 14, 4 / 13, 0.25 / 14.25])
    assert s.max() == 1.0  # the largest weight is never removed by LAMP


# ------------------------------------------------------------------ scorers
def test_registry_lists_and_scores(trained_tiny, digits_data, capsys):
    assert {"capacity", "capacity_spectral", "capacity_energy", "magnitude", "sensitivity"} <= set(list_importance())
    for m in ("capacity", "capacity_energy", "magnitude"):
        s = score_layers(trained_tiny, m)
        assert set(s.scores) == {"conv1", "conv2", "fc1", "fc2"}
        assert all(0 < v <= 1 for v in s.scores.values()) and s.seconds >= 0
    assert score_layers(trained_tiny, "capacity").method == "capacity_energy"
    (xt, yt), _ = digits_data
    before = [v.numpy().copy() for v in trained_tiny.weights]
    sens = score_layers(trained_tiny, "sensitivity", data=(xt[:300], yt[:300]), sparsity=0.95)
    err = capsys.readouterr().err
    assert "sensitivity @ 0.950" in err and "%|" in err and "/4 [" in err  # the tqdm progress bar, on stderr
    assert max(sens.scores.values()) == pytest.approx(1.0) and min(sens.scores.values()) > 0
    assert sens.details["sparsity"] == 0.95
    pruned_loss, dense_loss = sens.details["pruned_loss"], sens.details["dense_loss"]
    for a in pruned_loss:  # a layer whose pruning raises the loss more scores higher
        for b in pruned_loss:
            if max(pruned_loss[a], dense_loss) > max(pruned_loss[b], dense_loss):
                assert sens.scores[a] > sens.scores[b], (a, b, pruned_loss, sens.scores)
    worst = max(pruned_loss, key=pruned_loss.get)
    assert sens.scores[worst] == pytest.approx(1.0) and pruned_loss[worst] > dense_loss
    for a, b in zip(before, [v.numpy() for v in trained_tiny.weights]):
        np.testing.assert_array_equal(a, b)  # the user's model is untouched
    with pytest.raises(ValueError, match="needs calibration data"):
        score_layers(trained_tiny, "sensitivity")
    with pytest.raises(ValueError, match="unknown importance"):
        score_layers(trained_tiny, "nope")


# --------------------------------------------------------------- allocators
def test_all_allocators_registered_exact_and_bounded(trained_tiny):
    assert set(ALL) <= set(list_allocators())
    scores = score_layers(trained_tiny, "capacity").scores
    n = tfprune.prunable_layers(trained_tiny).n_params
    for method in ALL:
        for total in (0.5, 0.9, 0.99):
            a = allocate_sparsity(trained_tiny, total, allocation=method, scores=scores, min_keep=2)
            assert sum(a.removed.values()) == round(total * n), method
            assert all(a.n_params[k] - r >= 2 for k, r in a.removed.items()), method


def test_global_collapses_without_floor_but_lamp_does_not():
    rng = np.random.default_rng(0)
    layers = [tfprune.inventory.layers.PrunableLayer(f"l{i}", f"l{i}", "Dense", "kernel", s, int(np.prod(s))) for i, s in enumerate([(50, 4), (400, 400)])]
    kernels = [rng.normal(0, 0.001, (50, 4)), rng.normal(0, 1, (400, 400))]
    for p, k in zip(layers, kernels):
        p.kernel = lambda k=k: k  # plain entries with fixed kernels
    g = allocate_sparsity(layers, 0.99, allocation="global")
    assert g.removed["l0"] == 199  # everything but the floor of one weight
    lamp = allocate_sparsity(layers, 0.99, allocation="lamp")
    assert lamp.removed["l0"] < 190


def test_importance_with_equal_scores_is_lamp(trained_tiny):
    names = tfprune.prunable_layers(trained_tiny).names
    a = allocate_sparsity(trained_tiny, 0.95, allocation="importance", scores={k: 1.0 for k in names})
    b = allocate_sparsity(trained_tiny, 0.95, allocation="lamp")
    assert a.removed == b.removed
    low = allocate_sparsity(trained_tiny, 0.95, allocation="importance", scores={k: (0.2 if k == "fc1" else 1.0) for k in names})
    assert low.removed["fc1"] > a.removed["fc1"]  # a less important layer loses more
    flat = allocate_sparsity(trained_tiny, 0.95, allocation="importance", scores={k: (0.2 if k == "fc1" else 1.0) for k in names}, gamma=0.0)
    assert flat.removed == b.removed  # gamma 0 ignores the scores: LAMP
    for bad in (-1.0, float("nan"), "high"):  # an inverted or void exponent is refused, not silently applied
        with pytest.raises((ValueError, TypeError), match=r"allocation_kwargs\[.gamma.\].*Fix"):
            allocate_sparsity(trained_tiny, 0.95, allocation="importance", scores={k: 1.0 for k in names}, gamma=bad)


def test_erk_caps_small_layers():
    layers = [
        tfprune.inventory.layers.PrunableLayer("small", "small", "Dense", "kernel", (10, 4), 40),
        tfprune.inventory.layers.PrunableLayer("big", "big", "Dense", "kernel", (1000, 1000), 10**6),
    ]
    a = allocate_sparsity(layers, 0.9, allocation="erk")
    assert a.targets["small"] < 0.2 and a.targets["big"] > 0.89
    with pytest.raises(ValueError, match="shapes"):
        allocate_sparsity({"a": 10, "b": 20}, 0.5, allocation="erk")
    with pytest.raises(ValueError, match="scores"):
        allocate_sparsity(layers, 0.5, allocation="importance")


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=5),
    total=st.floats(0.0, 0.98),
    method=st.sampled_from(ALL),
    seed=st.integers(0, 1000),
)
def test_property_every_allocator_exact_bounded_deterministic(shapes, total, method, seed):
    rng = np.random.default_rng(seed)
    layers = []
    for i, s in enumerate(shapes):
        p = tfprune.inventory.layers.PrunableLayer(f"l{i}", f"l{i}", "Dense", "kernel", s, s[0] * s[1])
        k = rng.normal(size=s)
        p.kernel = lambda k=k: k
        layers.append(p)
    scores = rng.uniform(0.1, 1.0, len(shapes))
    try:
        a = allocate_sparsity(layers, total, allocation=method, scores=scores, min_density=0.05)
    except ValueError as err:
        assert "allow at most" in str(err)
        return
    N = sum(p.n_params for p in layers)
    assert sum(a.removed.values()) == round(total * N)
    for p in layers:
        assert 0 <= a.removed[p.name] <= p.n_params - max(1, int(np.ceil(0.05 * p.n_params - 1e-9)))
    b = allocate_sparsity(layers, total, allocation=method, scores=scores, min_density=0.05)
    assert a.removed == b.removed


# ------------------------------------------------------------ the callback
@pytest.mark.parametrize("granularity,block", [("unstructured", None), ("block", (4, 1))])
def test_importance_pruning_flow(tiny, digits_data, granularity, block):
    (xt, yt), (xs, ys) = digits_data
    w = tfprune.models.compile_classifier(tfprune.wrap(tiny, block_size=block))
    cb = tfprune.Pruning(0.8, granularity=granularity, end_step=30, verbose=0)
    h = w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=2, callbacks=[cb], verbose=0)
    inv = tfprune.prunable_layers(w)
    assert cb.scores_.method == "capacity_energy" and cb.allocation_.method == "importance"
    assert h.history["importance_seconds"][-1] == pytest.approx(cb.importance_seconds_)
    for p in inv:
        assert p.sparsity() == pytest.approx(cb.targets_[p.name], abs=1e-6 if granularity == "unstructured" else 0.02)
    assert inv.total_sparsity() == pytest.approx(cb.allocation_.total_sparsity, abs=1e-9 if granularity == "unstructured" else 0.01)
    if granularity == "block":
        k = inv["fc1"].kernel()
        blocks = k.reshape(k.shape[0] // 4, 4, k.shape[1])
        assert np.all((np.abs(blocks).sum(1) == 0) | np.all(blocks != 0, axis=1))  # whole 4x1 blocks


def test_importance_allocation_over_channel_groups_weighs_groups_by_layer_capacity(tiny, digits_data):
    """The same allocator name over channel groups: each group's importance is the capacity of its producers."""
    (xt, yt), _ = digits_data
    w = tfprune.models.compile_classifier(tfprune.wrap(tiny, granularity="channel"))
    cb = tfprune.Pruning(macs=0.4, allocation="importance", end_step=20)
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=1, callbacks=[cb], verbose=0)
    p = cb.plan_
    assert p.allocator == "importance" and p.layer_importance == "capacity" and abs(p.achieved - 0.4) <= p.tolerance
    caps = tfprune.score_layers(tiny, "capacity").scores
    for g in p.groups:
        assert g.importance == pytest.approx(caps[g.group])  # one producer per group here, named as the group
    assert cb.channels_masked() == p.remove


def test_importance_pruning_with_data_and_reestimation(tiny, digits_data):
    (xt, yt), _ = digits_data
    w = tfprune.models.compile_classifier(tfprune.wrap(tiny))
    cb = tfprune.Pruning(0.7, importance="sensitivity", data=(xt[:300], yt[:300]), replan_every=1, end_step=40, verbose=0,
                                   importance_kwargs={"progress": False})
    w.fit(xt[:1280], yt[:1280], batch_size=64, epochs=2, callbacks=[cb], verbose=0)
    assert cb.scores_.method == "sensitivity"
    assert tfprune.prunable_layers(w).total_sparsity() == pytest.approx(0.7, abs=2e-3)
    with pytest.raises(ValueError, match="needs calibration data"):
        tfprune.Pruning(0.5, importance="sensitivity")
    with pytest.raises(ValueError, match="granularity"):
        tfprune.Pruning(0.5, granularity="row")
    with pytest.raises(ValueError, match="sparsity must be in"):
        tfprune.Pruning(1.0)


def _accuracy(model, x, y) -> float:
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def test_analyze_and_cli(trained_tiny, digits_data, tmp_path, capsys):
    _, (xs, ys) = digits_data
    x, y = xs[:500], ys[:500]
    r = tfprune.analyze(trained_tiny, (x, y), sparsity=0.9, grid=(0.5, 0.9, 0.99))
    err = capsys.readouterr().err
    assert "one-shot per layer" in err and "%|" in err and "/4 [" in err  # the tqdm progress bar, on stderr
    assert [row.name for row in r.layers] == ["conv1", "conv2", "fc1", "fc2"]
    tol = 1.5 / len(x)  # one traced forward pass vs predict: at most a borderline sample flips
    assert r.dense_acc == pytest.approx(_accuracy(trained_tiny, x, y), abs=tol) and r.dense_acc > 0.5  # trained: chance is 0.1
    assert all(row.max_sparsity_within_delta in (0.0, 0.5, 0.9, 0.99) for row in r.layers)
    # the one-shot column, recomputed: fc1 alone magnitude-pruned to its allocated sparsity, on a copy
    row = next(row for row in r.layers if row.name == "fc1")
    copy = tfprune.clone(trained_tiny)
    k = copy.get_layer("fc1").kernel.numpy()
    k.ravel()[np.argsort(np.abs(k).ravel(), kind="stable")[: round(row.allocated_sparsity * k.size)]] = 0
    copy.get_layer("fc1").kernel.assign(k)
    assert row.one_shot_acc_drop == pytest.approx(_accuracy(trained_tiny, x, y) - _accuracy(copy, x, y), abs=2 * tol)
    assert all(-1 <= row.one_shot_acc_drop <= 1 for row in r.layers)
    # "most compact": the layer that tolerates the largest sparsity alone (ties: the larger layer)
    best = max(row.max_sparsity_within_delta for row in r.layers)
    tied = [row for row in r.layers if row.max_sparsity_within_delta == best]
    assert r.most_compact == max(tied, key=lambda row: row.params).name
    assert f"most compact (tolerates the most sparsity alone): {r.most_compact}" in r.table()
    assert sum(row.allocated_sparsity * row.params for row in r.layers) == pytest.approx(0.9 * sum(row.params for row in r.layers), abs=1)
    assert r.plot(str(tmp_path / "a.png")).endswith("a.png") and (tmp_path / "a.png").stat().st_size > 0
    free = tfprune.analyze(trained_tiny, sparsity=0.5)
    assert free.dense_acc is None and free.layers[0].one_shot_acc_drop is None
    path = str(tmp_path / "m.keras")
    trained_tiny.save(path)
    from tests.test_data_models_cli import _cli

    out = _cli("analyze", path, "--sparsity", "0.8", "--plot", str(tmp_path / "cli.png"))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.split() and line.split()[0] in r_names(r)}
    assert list(rows) == r_names(r)  # one row per layer: name type params importance allocated
    params = {name: int(cols[2]) for name, cols in rows.items()}
    allocated = {name: float(cols[4]) for name, cols in rows.items()}
    assert params == {row.name: row.params for row in r.layers}
    assert sum(allocated[n] * params[n] for n in rows) == pytest.approx(0.8 * sum(params.values()), rel=1e-3)
    assert "analysis: importance 'capacity_energy', allocation 'importance', sparsity 0.8" in out.stdout
    assert (tmp_path / "cli.png").read_bytes()[:4] == b"\x89PNG"


def r_names(report) -> list[str]:
    return [row.name for row in report.layers]


def test_global_ratio_normalizations(trained_tiny):
    rms = allocate_sparsity(trained_tiny, 0.9, allocation="global_ratio")
    l2 = allocate_sparsity(trained_tiny, 0.9, allocation="global_ratio", normalization="l2")
    assert rms.total_sparsity == l2.total_sparsity
    assert l2.removed["conv1"] < rms.removed["conv1"]  # l2 favours the small layer
    with pytest.raises(ValueError, match="normalization"):
        allocate_sparsity(trained_tiny, 0.9, allocation="global_ratio", normalization="max")
