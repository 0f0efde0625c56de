"""Latency lookup tables: the numpy side (interpolation, calibration, files) without TensorFlow, and a table built for a small CNN."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfprune.latency.table import FORMAT, LatencyTable, LayerTiming, calibrate_remainder, channel_grid, interpolate, monotone, step_grid


def test_channel_grid_is_ascending_distinct_and_ends_at_n():
    assert channel_grid(16, 4).tolist() == [4, 8, 12, 16]
    assert channel_grid(3, 6).tolist() == [1, 2, 3]
    assert channel_grid(1, 5).tolist() == [1]
    with pytest.raises(ValueError, match="n >= 1"):
        channel_grid(0, 3)


def test_interpolate_is_exact_on_a_bilinear_function_and_clamps():
    gi, go = np.array([2, 4, 8]), np.array([1, 3])
    f = lambda a, b: 0.5 + 0.25 * a + 0.1 * b + 0.01 * a * b  # noqa: E731  bilinear: interpolation reproduces it on each cell
    ms = np.array([[f(a, b) for b in go] for a in gi])
    for a, b in [(2, 1), (3, 2), (5.5, 1.5), (8, 3), (7, 2.9)]:
        assert interpolate(gi, go, ms, a, b) == pytest.approx(f(a, b))
    assert interpolate(gi, go, ms, 1, 0) == pytest.approx(f(2, 1))  # below the grid: its first point
    assert interpolate(gi, go, ms, 100, 100) == pytest.approx(f(8, 3))
    assert interpolate([4], [7], [[2.5]], 1, 100) == 2.5  # one point: constant


def test_step_grid_holds_every_multiple_and_n_and_widens_for_wide_layers():
    assert step_grid(64, 8).tolist() == [8, 16, 24, 32, 40, 48, 56, 64]
    assert step_grid(9, 8).tolist() == [8, 9] and step_grid(5, 8).tolist() == [5] and step_grid(1, 8).tolist() == [1]
    wide = step_grid(512, 8)
    assert wide.size <= 16 and wide[-1] == 512 and np.all(wide[:-1] % 8 == 0) and np.all(np.diff(wide[:-1]) == wide[0])
    assert step_grid(130, 8, max_points=16).tolist() == list(range(16, 129, 16)) + [130]
    with pytest.raises(ValueError, match="step_grid needs"):
        step_grid(8, 0)


def test_a_stepped_axis_reads_the_next_measured_count_up():
    """Kernels compute output channels in tiles: 17 to 32 outputs cost what 32 cost. A stepped axis never interpolates."""
    gi, go = np.array([8, 16]), np.array([16, 32, 48])
    ms = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    for n_out, want in [(1, 1.0), (16, 1.0), (17, 2.0), (31.5, 2.0), (32, 2.0), (33, 3.0), (100, 3.0)]:
        assert interpolate(gi, go, ms, 8, n_out, step_out=True) == want
    assert interpolate(gi, go, ms, 12, 20, step_out=True) == pytest.approx(3.0)  # linear in inputs, stepped in outputs
    assert interpolate(gi, go, ms, 8, 24) == pytest.approx(1.5)  # the linear read for comparison
    assert interpolate(gi, go, ms, 9, 16, step_in=True) == 2.0
    t = LayerTiming(gi, go, ms, "conv", step_out=True)
    back = LayerTiming.from_dict(t.to_dict())
    assert t.at(8, 20) == 2.0 and back.step_out and not back.step_in and back.at(8, 20) == 2.0


def test_monotone_removes_timing_noise_that_makes_more_channels_cheaper():
    noisy = np.array([[1.0, 0.9, 2.0], [0.8, 2.5, 2.4]])
    assert monotone(noisy).tolist() == [[1.0, 1.0, 2.0], [1.0, 2.5, 2.5]]


def test_calibration_recovers_a_linear_remainder():
    sums = [10.0, 7.0, 5.0]
    shares = [1.0, 0.7, 0.4]
    measured = [s + 0.3 + 2.0 * sh for s, sh in zip(sums, shares)]
    assert calibrate_remainder(measured, sums, shares) == pytest.approx((0.3, 2.0, 0.0))
    assert calibrate_remainder([11.0], [10.0], [1.0]) == pytest.approx((1.0, 0.0, 0.0))  # one variant: a constant
    assert calibrate_remainder([9.5], [10.0], [1.0]) == pytest.approx((-0.5, 0.0, 0.0))  # the layers' sum over-predicts: corrected
    base, per, weights = calibrate_remainder([10.0, 7.5, 5.5], sums, shares)  # less element-wise work costs more: a constant
    assert per == 0.0 and weights == 0.0 and base == pytest.approx(np.mean([0.0, 0.5, 0.5]))


def test_calibration_separates_the_weights_term_from_the_elementwise_one():
    """Uniform variants shrink activations and weights together; a variant that keeps most activations but half the weights
    tells the two terms apart, and the fit recovers both."""
    sums = [10.0, 8.0, 6.0, 9.0]
    shares = [1.0, 0.8, 0.6, 0.95]
    weight_shares = [1.0, 0.65, 0.36, 0.5]
    measured = [s + 0.1 + 0.5 * a + 3.0 * w for s, a, w in zip(sums, shares, weight_shares)]
    assert calibrate_remainder(measured, sums, shares, weight_shares) == pytest.approx((0.1, 0.5, 3.0))
    # without the weights column the element-wise term soaks up their cost and mispredicts the weight-only cut
    base, per, none = calibrate_remainder(measured, sums, shares)
    assert none == 0.0 and abs(sums[3] + base + per * shares[3] - measured[3]) > 0.5
    # a negative best fit for one term (less work never costs more): that term is dropped, the other refitted
    only_weights = [s + 0.2 + 2.0 * w - 0.4 * a for s, a, w in zip(sums, shares, weight_shares)]
    base, per, weights = calibrate_remainder(only_weights, sums, shares, weight_shares)
    assert per == 0.0 and weights > 0
    # signed=("elementwise",): the same data recovered exactly, negative term included (a candidate fit, see latency_table_error.py)
    assert calibrate_remainder(only_weights, sums, shares, weight_shares, signed=("elementwise",)) == pytest.approx((0.2, -0.4, 2.0))
    assert calibrate_remainder(only_weights, sums, shares, weight_shares, signed="elementwise") == pytest.approx((0.2, -0.4, 2.0))
    with pytest.raises(ValueError, match="signed: unknown terms.*Fix"):
        calibrate_remainder(measured, sums, shares, weight_shares, signed=("base",))
    # weight shares that never vary (a table imported without them): no weights term
    assert calibrate_remainder(measured, sums, shares, [1.0] * 4)[2] == 0.0
    with pytest.raises(ValueError, match="weights shares: 3 values for 4"):
        calibrate_remainder(measured, sums, shares, weight_shares[:3])


def _table() -> LatencyTable:
    t = LayerTiming(np.array([4, 8]), np.array([8, 16]), np.array([[1.0, 2.0], [2.0, 4.0]]), "conv")
    d = LayerTiming(np.array([16]), np.array([10]), np.array([[0.5]]), "dense")
    return LatencyTable(timings={"conv": t, "dense": d}, layers={"c1": ("conv", 8, 16), "c2": ("conv", 8, 16), "fc": ("dense", 16, 10)},
                        base_ms=0.2, elementwise_ms=1.0, model="m")


def test_speed_factor_compares_the_same_points_now_and_in_the_cache():
    from tfprune.latency.table import speed_factor

    assert speed_factor([0.2, 0.6], [0.1, 0.3]) == pytest.approx(2.0)  # a machine twice as slow now
    assert speed_factor([0.1, 0.1], [0.15, 0.05]) == pytest.approx(1.0)  # a sum: one layer's noise does not decide it
    assert speed_factor([0.1], [0.0]) == 1.0 and speed_factor([], []) == 1.0  # nothing to compare: no change
    with pytest.raises(ValueError, match="one of each per re-timed layer"):
        speed_factor([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="finite times >= 0"):
        speed_factor([float("nan")], [0.1])


def test_prediction_sums_the_layers_and_the_remainder():
    t = _table()
    assert t.dense_ms == pytest.approx(4.0 + 4.0 + 0.5 + 0.2 + 1.0)
    assert t.predict({"c1": (4, 8)}, share=0.5) == pytest.approx(1.0 + 4.0 + 0.5 + 0.2 + 0.5)
    t.weights_ms = 2.0
    assert t.predict({"c1": (4, 8)}, share=0.5, weight_share=0.25) == pytest.approx(1.0 + 4.0 + 0.5 + 0.2 + 0.5 + 0.5)
    assert t.dense_ms == pytest.approx(4.0 + 4.0 + 0.5 + 0.2 + 1.0 + 2.0)
    assert t.layer_ms("c1", 6, 12) == pytest.approx(2.25)
    with pytest.raises(KeyError, match="not in the latency table"):
        t.predict({"nope": (1, 1)})


def test_table_files_round_trip_and_bad_files_say_what_is_wrong(tmp_path):
    t = _table()
    path = tmp_path / "t.json"
    t.save(str(path))
    again = LatencyTable.load(str(path))
    assert again.to_dict() == t.to_dict() and json.loads(path.read_text())["format"] == FORMAT
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a tfprune latency table.*Fix"):
        LatencyTable.load(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        LatencyTable.load(str(bad))
    d = t.to_dict()
    d["timings"]["conv"]["ms"] = [[1.0, 2.0]]
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        LatencyTable.from_dict(d)
    d = t.to_dict()
    d["timings"]["conv"]["grid_in"] = [8, 4]
    with pytest.raises(ValueError, match="ascending"):
        LatencyTable.from_dict(d)
    d = t.to_dict()  # a format-1 table (every axis linear, no step fields) is still read
    d["format"] = "tfprune-latency-table/1"
    for v in d["timings"].values():
        del v["step_in"], v["step_out"]
    assert LatencyTable.from_dict(d).to_dict() == t.to_dict()
    d = t.to_dict()
    del d["timings"]["dense"]
    with pytest.raises(ValueError, match="signatures the table does not time"):
        LatencyTable.from_dict(d)


def test_build_table_times_every_layer_once_per_signature_and_caches(tmp_path, monkeypatch):
    import tfprune
    from tfprune.latency import LatencyCost, build_table, measure
    from tfprune.structured.graph import channel_graph

    keras = tfprune._keras.keras
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c3")(x)  # the same signature as c2
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, name="fc")(x))
    built = []
    real = measure.one_layer_model
    monkeypatch.setattr(measure, "one_layer_model", lambda *a: built.append(a[0].name) or real(*a))
    cache = str(tmp_path / "cache.json")
    table = build_table(model, points=2, channel_step=4, rounds=1, block=2, calibrate=(0.5,), calibrate_weights=0.5, cache=cache)
    assert set(table.layers) == {"c1", "c2", "c3", "fc"}
    assert table.layers["c2"][0] == table.layers["c3"][0] != table.layers["c1"][0]
    assert len(table.timings) == 3 and len(built) == 2 + 4 + 2  # c1: 2 outputs (3 inputs fixed); c2 = c3: 2 x 2; fc: 2 inputs
    t = table.timings[table.layers["c2"][0]]
    assert t.grid_in.tolist() == [4, 8] and t.grid_out.tolist() == [4, 8] and np.all(np.isfinite(t.ms)) and np.all(t.ms >= 0)
    assert t.step_out and not t.step_in and np.all(np.diff(t.ms, axis=0) >= 0) and np.all(np.diff(t.ms, axis=1) >= 0)
    assert table.timings[table.layers["fc"][0]].grid_out.tolist() == [4]  # the logits stay whole
    assert any(n.startswith("calibration dense: measured") for n in table.notes) and table.elementwise_ms >= 0
    assert any(n.startswith("calibration global params=0.5: measured") for n in table.notes) and table.weights_ms >= 0
    cost = LatencyCost(channel_graph(model), table)
    assert cost.estimate(np.zeros(cost.all_labels.size, bool)) == pytest.approx(table.dense_ms)
    assert table.weight_elements == 3 * 3 * (3 * 8 + 8 * 8 + 8 * 8) + 8 * 4  # the kernels, biases left out

    built.clear()
    again = build_table(model, points=2, channel_step=4, rounds=1, block=2, calibrate=(), calibrate_weights=None, cache=cache,
                        recheck_cache=False)
    assert not built and {s: t.ms.tolist() for s, t in again.timings.items()} == {s: t.ms.tolist() for s, t in table.timings.items()}

    # recheck_cache (the default): each cached signature timed once more at its own channel counts; a machine now twice as
    # slow as when the cache was written doubles every cached time (a deterministic clock stands in for the real one)
    own = {sig: (n_in, n_out) for sig, n_in, n_out in table.layers.values()}
    slow = {sig: 0.25 + 2 * table.timings[sig].at(*own[sig]) for sig in own}
    monkeypatch.setattr(measure, "time_tflite", lambda contents, *a, **k: ({key: slow.get(key, 0.25) for key in contents}, "fake"))
    built.clear()
    with open(cache) as f:
        stored = f.read()
    rescaled = build_table(model, points=2, channel_step=4, rounds=1, block=2, calibrate=(), calibrate_weights=None, cache=cache)
    assert len(built) == 3 and set(built) - {"c2", "c3"} == {"c1", "fc"}  # one layer per signature (c2 = c3), at its own counts
    for sig, t in rescaled.timings.items():
        np.testing.assert_allclose(t.ms, 2 * table.timings[sig].ms)
    assert any("3 cached layer(s) re-timed" in n and "2.000x" in n for n in rescaled.notes)
    with open(cache) as f:
        assert f.read() == stored  # the cache keeps the times it was written with

    # a factor no change of speed explains (layers near the clock's resolution): the cached times are kept, and the notes say so
    tenfold = {sig: 0.25 + 10 * table.timings[sig].at(*own[sig]) for sig in own}
    monkeypatch.setattr(measure, "time_tflite", lambda contents, *a, **k: ({key: tenfold.get(key, 0.25) for key in contents}, "fake"))
    kept = build_table(model, points=2, channel_step=4, rounds=1, block=2, calibrate=(), calibrate_weights=None, cache=cache)
    assert {s: t.ms.tolist() for s, t in kept.timings.items()} == {s: t.ms.tolist() for s, t in table.timings.items()}
    assert any("10.000x" in n and "cached times were kept" in n and "cache=False" in n for n in kept.notes)


def test_build_table_refuses_what_it_cannot_time():
    import tfprune
    from tfprune.latency import build_table

    keras = tfprune._keras.keras
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(4, 3)(inp))
    with pytest.raises(ValueError, match="unknown size.*Fix: build the model with a fixed input"):
        build_table(model, cache=False)
    with pytest.raises(ValueError, match="threads"):
        build_table(model, threads=0, cache=False)


def _cnn(keras):
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x))


def _linear_table() -> LatencyTable:
    """A hand-made table: each convolution costs 0.01 ms per (input x output) channel pair, exactly (bilinear, so interpolation is exact)."""
    conv = lambda n_in, n_out: LayerTiming(np.array([1, n_in]), np.array([1, n_out]),  # noqa: E731
                                           0.01 * np.outer([1, n_in], [1, n_out]).astype(float))
    return LatencyTable(timings={"c1": conv(3, 8), "c2": conv(8, 16), "fc": LayerTiming(np.array([16]), np.array([4]), np.array([[0.05]]))},
                        layers={"c1": ("c1", 3, 8), "c2": ("c2", 8, 16), "fc": ("fc", 16, 4)}, base_ms=0.1, elementwise_ms=0.2,
                        device="a test table", model="m")


def test_a_channel_plan_meets_a_latency_ratio_on_the_table():
    import tfprune

    model = _cnn(tfprune._keras.keras)
    table = _linear_table()
    dense = table.dense_ms
    plan = tfprune.plan(model, latency=0.6, latency_table=table, granularity="channel", tolerance=0.05)
    assert plan.budget == "latency" and plan.requested == pytest.approx(0.4)
    kept = {g: plan.n_units[g] - len(plan.channels[g]) for g in plan.channels}
    assert kept["c1"] < 8 and kept["c2"] < 16
    # the prediction at the kept channels, computed here by hand: c1 3 x k1, c2 k1 x k2, fc k2 rows (one point: constant)
    k1, k2 = kept["c1"], kept["c2"]
    share = k2 / 16  # the element-wise remainder: the pooling's output (the activations are fused into the convolutions)
    hand = 0.01 * (3 * k1 + k1 * k2) + 0.05 + 0.1 + 0.2 * share
    assert dense == pytest.approx(0.01 * (3 * 8 + 8 * 16) + 0.05 + 0.1 + 0.2)
    assert 1 - plan.achieved == pytest.approx(hand / dense, rel=1e-9)
    assert hand / dense <= 0.6 + 0.01 * 16 / dense  # reached (within one channel of c2)
    assert any("a test table" in n for n in plan.notes)
    with pytest.raises(ValueError, match="latency.*ratio of the dense model's latency"):
        tfprune.plan(model, latency=1.5, latency_table=table, granularity="channel")
    with pytest.raises(ValueError, match="granularity='channel' with latency="):
        tfprune.plan(model, latency=0.5, latency_table=table)
    with pytest.raises(TypeError, match="LatencyTable"):
        tfprune.plan(model, latency=0.5, latency_table={"not": "a table"}, granularity="channel")


def test_the_weight_term_scales_with_the_kernel_weights_kept_in_a_plan_and_in_its_shrunk_model():
    """weight_share: each timed layer keeps its kernel times the input and output fractions kept; the planner's estimate (on
    the dense graph, channels marked removed) and the shrunk model's (its own graph) agree, and match a count by hand."""
    import tfprune
    from tfprune.latency import LatencyCost
    from tfprune.structured.graph import channel_graph
    from tfprune.structured.plan import plan_and_shrink

    model = _cnn(tfprune._keras.keras)
    table = _linear_table()
    assert LatencyCost(channel_graph(model), table).weight_total == 9 * 3 * 8 + 9 * 8 * 16 + 16 * 4  # kernels only, no biases
    table.weights_ms, table.weight_elements = 0.3, 9 * 3 * 8 + 9 * 8 * 16 + 16 * 4
    table.elementwise_elements = LatencyCost(channel_graph(model), table).elementwise_total  # as build_table records them
    dense = table.dense_ms
    assert dense == pytest.approx(0.01 * (3 * 8 + 8 * 16) + 0.05 + 0.1 + 0.2 + 0.3)
    plan, small, _ = plan_and_shrink(model, latency=0.6, latency_cost=lambda cg: LatencyCost(cg, table), tolerance=0.05)
    k1, k2 = (plan.n_units[g] - len(plan.channels[g]) for g in ("c1", "c2"))
    weight_share = (9 * 3 * k1 + 9 * k1 * k2 + 4 * k2) / table.weight_elements
    hand = 0.01 * (3 * k1 + k1 * k2) + 0.05 + 0.1 + 0.2 * k2 / 16 + 0.3 * weight_share
    assert 1 - plan.achieved == pytest.approx(hand / dense, rel=1e-9)
    shrunk = LatencyCost(channel_graph(small), table)
    assert shrunk.weight_share(np.zeros(shrunk.all_labels.size, bool)) == pytest.approx(weight_share, rel=1e-12)
    assert shrunk.estimate() == pytest.approx(hand, rel=1e-9)


def test_benchmark_model_logs_are_read_in_milliseconds():
    from pathlib import Path

    from tfprune.latency import parse_benchmark_log

    example = Path(__file__).parent.parent / "examples" / "latency" / "benchmark_model_output.txt"
    assert parse_benchmark_log(example.read_text()) == pytest.approx(0.1529)
    assert parse_benchmark_log("INFO: count=50 first=900 curr=800 min=790 max=950 avg=812.5 std=3") == pytest.approx(0.8125)
    with pytest.raises(ValueError, match="Inference \\(avg\\).*Fix"):
        parse_benchmark_log("Segmentation fault")


def test_probes_exported_for_a_device_come_back_as_a_table(tmp_path):
    """export_probes writes every probe the host table would time; logs in benchmark_model's format (made up here, one number per
    file) are read back into the table: each layer's grid is its log less the empty model's, the remainder fitted on the variants."""
    import tfprune
    from tfprune.latency import export_probes, import_probe_logs
    from tfprune.latency.measure import probe_plan

    model = _cnn(tfprune._keras.keras)
    manifest_path = export_probes(model, str(tmp_path), points=2, calibrate=(0.5,), threads=2, runs=20)
    manifest = json.loads(open(manifest_path).read())
    assert "--num_threads=2 --num_runs=20" in (tmp_path / "run_on_device.sh").read_text()
    probes = sorted(p.name for p in (tmp_path / "probes").iterdir())
    fake_us = {name: 100.0 + 10.0 * i for i, name in enumerate(probes)}
    (tmp_path / "logs").mkdir()
    for name, us in fake_us.items():
        (tmp_path / "logs" / name.replace(".tflite", ".txt")).write_text(
            f"INFO: Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): {us}\n")
    table = import_probe_logs(str(tmp_path), device="a made-up phone")
    _, layers, todo = probe_plan(model, 2)
    assert table.layers == layers and set(table.timings) == set(todo) and table.device == "a made-up phone"
    empty = fake_us["empty.tflite"] / 1000
    for sig, entry in manifest["signatures"].items():
        want = [[fake_us[f.split("/")[-1]] / 1000 - empty for f in row] for row in entry["files"]]
        np.testing.assert_allclose(table.timings[sig].ms, monotone(want))
        assert table.timings[sig].step_out == entry["step_out"]
    assert set(manifest["variants"]) == {"dense", "uniform macs=0.5", "global params=0.5"}  # the last one: for the weight term
    assert all(0 < v["weight_share"] <= 1 for v in manifest["variants"].values()) and manifest["weight_elements"] > 0
    assert sum("calibration" in n for n in table.notes) == 3 and table.weights_ms >= 0 and table.elementwise_ms >= 0
    with pytest.raises(ValueError, match="no log for"):
        (tmp_path / "logs" / "empty.txt").unlink()
        import_probe_logs(str(tmp_path))
