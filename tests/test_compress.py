"""`tfprune.compress`: the search reaches the table's budget, resumes exactly, and refuses bad input with the fix."""

from __future__ import annotations

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.latency import LatencyTable, LayerTiming, parse_latency, parse_size


def _cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(12, 3, strides=2, activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(24, 3, strides=2, activation="relu", name="c2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(10, name="fc2")(x))


def _table(model) -> LatencyTable:
    """A hand-made table (timings of tiny layers are mostly noise; the search is tested on a known cost): every layer costs
    1e-6 ms per multiply-accumulate at its channel counts, which is bilinear in (input, output) channels, so interpolation is exact."""
    timings, layers = {}, {}
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            continue
        n_in, n_out = int(layer.input.shape[-1]), int(layer.output.shape[-1])
        per_pair = float(np.prod(layer.output.shape[1:-1])) * (float(np.prod(layer.kernel_size)) if hasattr(layer, "kernel_size") else 1.0)
        g_in, g_out = np.unique([1, n_in]), np.unique([1, n_out])  # c1 reads one channel
        timings[layer.name] = LayerTiming(g_in, g_out, 1e-6 * per_pair * np.outer(g_in, g_out))
        layers[layer.name] = (layer.name, n_in, n_out)
    return LatencyTable(timings=timings, layers=layers, base_ms=0.001, device="a test table (MACs as time)", model=model.name)


@pytest.fixture(scope="module")
def setup(digits_data):
    (xt, yt), (xs, ys) = digits_data
    model = tfprune.models.compile_classifier(_cnn())
    model.fit(xt, yt, epochs=2, batch_size=64, verbose=0)
    return model, _table(model), (xt, yt), (xs[:300], ys[:300])


def _run(setup, **kw):
    model, table, train, val = setup
    args = dict(validation=val, table=table, latency=0.6, iterations=3, proposal_samples=200, finetune_steps=4, final_steps=6,
                batch_size=32, verbose=0, seed=3)
    args.update(kw)
    return tfprune.compress(model, train, **args)


def test_parse_latency_reads_ratios_and_milliseconds():
    assert parse_latency(0.5) == ("ratio", 0.5) and parse_latency(1) == ("ratio", 1.0) and parse_latency("3.5ms") == ("ms", 3.5)
    for bad in (0, 1.5, -0.1, "fast", "-2ms", True):
        with pytest.raises((ValueError, TypeError), match="latency"):
            parse_latency(bad)


def test_the_search_meets_the_predicted_budget_and_reports_its_path(setup, tmp_path):
    model, table, _, _ = setup
    before = [w.copy() for w in model.get_weights()]
    res = _run(setup, out=str(tmp_path / "small.tflite"))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the user's model is untouched
    assert res.steps and res.final_predicted_ms <= res.budget_ms * (1 + 1e-9)
    assert res.stop_reason == "the predicted latency meets the budget"
    assert res.budget_ms == pytest.approx(0.6 * res.dense_predicted_ms)
    # the budget's kind survives the search (a proposal's kind, "channels" / "layer" / "block", once overwrote it, and
    # meets_latency then compared milliseconds with the ratio 0.6)
    assert res.latency_kind == "ratio" and res.meets_latency == (res.latency_ratio <= 0.6) and "budget 0.6x dense" in res.table()
    assert [s.iteration for s in res.steps] == list(range(1, len(res.steps) + 1))
    assert all(a.predicted_ms > b.predicted_ms for a, b in zip(res.steps, res.steps[1:]))  # every accepted step is faster
    assert tfprune.profile(res.model).macs < tfprune.profile(model).macs
    assert (tmp_path / "small.tflite").stat().st_size == res.export.bytes and res.export.top1_agreement >= 0.99
    # quantize="auto": both files were made and timed; int8 is kept exactly when it is no slower and keeps the accuracy
    c = res.file_choice
    assert c["int8_bytes"] < 0.5 * c["float_bytes"] and res.export.bytes == c[f"{c['format']}_bytes"]
    keep = c["int8_ms"] <= 1.02 * c["float_ms"] and (res.dense_accuracy - c["int8_accuracy"] <= 0.01 or c["int8_accuracy"] >= c["float_accuracy"] - 0.002)
    assert c["format"] == ("int8" if keep else "float") and c["reason"] in res.table()
    d = res.to_dict()
    assert {"latency_ratio", "predicted_ratio", "table_error", "meets_latency", "meets_accuracy"} <= set(d)
    # the per-stage table: dense -> search -> fine-tune -> file, with parameters, bytes, latency and accuracy
    stages = {s["stage"]: s for s in d["stages"]}
    assert list(stages) == ["dense", "search", "fine-tune", "file"]
    assert stages["dense"]["params"] == model.count_params() and stages["fine-tune"]["params"] == res.model.count_params()
    assert stages["search"]["params"] == res.steps[-1].params == res.model.count_params() < model.count_params()
    assert 0 < stages["fine-tune"]["bytes"] < stages["dense"]["bytes"] and stages["file"]["bytes"] == res.export.bytes
    assert stages["fine-tune"]["latency_ratio"] == pytest.approx(res.latency_ratio)
    assert stages["fine-tune"]["accuracy"] == res.final_accuracy and stages["file"]["accuracy"] == c[f"{c['format']}_accuracy"]
    assert "stages:" in res.table() and "fine-tune" in res.to_markdown()
    assert "group cut" in res.table() and res.plot(str(tmp_path / "path.png")).endswith("path.png")
    assert (tmp_path / "path.png").read_bytes()[:4] == b"\x89PNG"


def test_an_interrupted_search_resumes_to_the_same_model(setup, tmp_path):
    reference = _run(setup, state_dir=str(tmp_path / "ref"), iterations=2)
    assert len(reference.steps) >= 2

    def stop_after_first(line: str) -> None:
        if line.startswith("[compress] step 1:"):
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        _run(setup, state_dir=str(tmp_path / "s"), progress=stop_after_first, iterations=2)
    lines = []
    assert (tmp_path / "s" / "table.json").is_file()
    resumed = _run(setup, state_dir=str(tmp_path / "s"), progress=lines.append, table=None, iterations=2)  # the saved table is used
    assert not any(ln.startswith("[latency]") for ln in lines)  # nothing timed again
    assert any("resumed" in ln for ln in lines)
    assert [s.group for s in resumed.steps] == [s.group for s in reference.steps]
    for a, b in zip(resumed.model.get_weights(), reference.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another model or with other settings"):
        _run(setup, state_dir=str(tmp_path / "s"), latency=0.7)


def test_bad_arguments_name_the_fix(setup):
    model, table, train, val = setup
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        _run(setup, max_accuracy_drop=2)
    with pytest.raises(TypeError, match="LatencyTable"):
        _run(setup, table={"a": 1})
    with pytest.raises(ValueError, match="max_step_drop.*Fix"):
        _run(setup, max_step_drop=-0.1)
    with pytest.raises(ValueError, match="quantize must be.*Fix"):
        _run(setup, quantize="int4")
    with pytest.raises(ValueError, match="validation=\\(x, y\\)"):
        import tensorflow as tf

        tfprune.compress(model, tf.data.Dataset.from_tensor_slices(train).batch(8), table=table, verbose=0)
    with pytest.raises(ValueError, match="x has 5 examples and y 4"):
        tfprune.compress(model, (train[0][:5], train[1][:4]), table=table, verbose=0)


def test_parse_size_reads_bytes_and_units():
    assert parse_size(None) is None and parse_size(400_000) == 400_000 and parse_size("400KB") == 400_000
    assert parse_size("1.5MB") == 1_500_000 and parse_size("512 KiB") == 524_288 and parse_size("2000") == 2000 and parse_size("3b") == 3
    for bad in (0, -5, "big", "KB", float("nan"), "0.5"):
        with pytest.raises(ValueError, match="size must be.*Fix"):
            parse_size(bad)
    for bad in (True, [1]):
        with pytest.raises(TypeError, match="size must be.*Fix"):
            parse_size(bad)


def test_a_size_budget_keeps_the_search_going_until_the_file_fits(setup, tmp_path):
    """The latency alone stops early; with ``size`` the search takes latency steps past it and stops at the first step whose
    file (as written: float here) fits, and the written file fits."""
    free = _run(setup, latency=0.9, quantize="float", out=str(tmp_path / "free.tflite"))
    assert free.size_budget is None and free.meets_size is None and "size:" not in free.table()
    size = int(0.85 * free.export.bytes)  # the latency-only result does not fit
    res = _run(setup, latency=0.9, quantize="float", out=str(tmp_path / "small.tflite"), size=size)
    latency_met = [s.predicted_ms <= res.budget_ms * (1 + 1e-9) for s in res.steps]
    assert all(s.file_bytes > 0 for s in res.steps) and res.size_format == "float"
    assert latency_met[-1] and res.steps[-1].file_bytes <= size  # both budgets hold where it stopped
    assert all(not met or s.file_bytes > size for met, s in zip(latency_met[:-1], res.steps[:-1]))  # ... and nowhere before
    assert any(latency_met[:-1])  # the size, not the latency, kept it going
    assert [s.group for s in res.steps[:len(free.steps)]] == [s.group for s in free.steps]  # the same path up to the latency
    assert "fits size" in res.stop_reason and res.meets_size and res.export.bytes <= size == res.size_budget
    assert (tmp_path / "small.tflite").stat().st_size == res.export.bytes and "(within)" in res.table()
    assert res.to_dict()["meets_size"] is True and "float file bytes" in res.table()
    # quantize="auto": a size between the int8 and the float file of the same model makes it write int8, however fast int8 is
    auto = _run(setup, latency=0.9, out=str(tmp_path / "auto.tflite"))
    c = auto.file_choice
    between = (c["int8_bytes"] + c["float_bytes"]) // 2
    sized = _run(setup, latency=0.9, out=str(tmp_path / "auto_sized.tflite"), size=between)
    assert sized.size_format == "int8" and [s.group for s in sized.steps] == [s.group for s in auto.steps]
    assert sized.file_choice["format"] == "int8" and sized.meets_size and sized.export.bytes <= between < sized.file_choice["float_bytes"]
    if c["format"] == "float":  # int8 was not kept on its own merits: the size made the choice, and says so
        assert "over size" in sized.file_choice["reason"]


def test_a_size_needs_a_file_and_bad_sizes_name_the_fix(setup):
    with pytest.raises(ValueError, match="size=.*out is None.*Fix"):
        _run(setup, size="100KB")
    with pytest.raises(ValueError, match="size must be.*Fix"):
        _run(setup, size="tiny", out="x.tflite")


def test_the_command_line_runs_the_same_engine(setup, tmp_path, capsys):
    import json

    from tfprune.cli import main

    model, table, (xt, yt), (xs, ys) = setup
    model.save(tmp_path / "m.keras")
    table.save(str(tmp_path / "table.json"))
    np.savez(tmp_path / "d.npz", x_train=xt[:1000], y_train=yt[:1000], x_test=xs, y_test=ys)
    rc = main(["compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--latency", "0.6", "--out", str(tmp_path / "s.tflite"),
               "--device-table", str(tmp_path / "table.json"), "--iterations", "2", "--finetune-steps", "3", "--final-steps", "3",
               "--plot", str(tmp_path / "p.png"), "--quiet", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["final_predicted_ms"] <= d["budget_ms"] * (1 + 1e-9) and d["steps"] and d["tflite_bytes"] == (tmp_path / "s.tflite").stat().st_size
    assert (tmp_path / "p.png").is_file()
    # --device-table macs: the same search on the MACs proxy (its "ms" are millions of MACs; nothing timed)
    rc = main(["compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--latency", "0.6", "--out", str(tmp_path / "m.tflite"),
               "--device-table", "macs", "--iterations", "1", "--finetune-steps", "0", "--final-steps", "0", "--quantize", "float",
               "--quiet", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["device"] == "macs" and d["final_predicted_ms"] <= d["budget_ms"] * (1 + 1e-9)
    assert d["dense_predicted_ms"] == pytest.approx(tfprune.profile(model).macs / 1e6)
    # --size: the same engine's size budget (generous here: the float file fits at once)
    rc = main(["compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--latency", "0.9", "--out", str(tmp_path / "z.tflite"),
               "--device-table", "macs", "--iterations", "1", "--finetune-steps", "0", "--final-steps", "0", "--quantize", "float",
               "--size", "10MB", "--quiet", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["size_budget"] == 10_000_000 and d["meets_size"] is True
    rc = main(["compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "z.tflite"), "--size", "big"])
    err = capsys.readouterr().err
    assert rc == 2 and "--size" in err and "Fix" in err, err


def test_the_readme_example_runs(setup, tmp_path, monkeypatch):
    """README section (g), as written, with the test's small CNN and its known-cost table in place of the host timing."""
    import os

    model, table, (xt, yt), (xs, ys) = setup
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        section = f.read().split("### (g) Compress to a latency budget", 1)[1]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    monkeypatch.setattr("tfprune.latency.search.build_table", lambda m, **k: table)
    code = code.replace("latency=0.5,", "latency=0.5, iterations=3, finetune_steps=5, final_steps=10, check_latency=False, "
                        "quantize='float',")  # fewer steps, no timing: the engine is tested above
    monkeypatch.chdir(tmp_path)
    scope = {"tfprune": tfprune, "model": model, "x": xt[:1000], "y": yt[:1000], "x_val": xs, "y_val": ys}
    exec(compile(code, "README.md (g)", "exec"), scope)  # noqa: S102  (our own README)
    result = scope["result"]
    assert result.final_predicted_ms <= result.budget_ms * (1 + 1e-9) and (tmp_path / "small.tflite").is_file()
    assert (tmp_path / "state" / "state.json").is_file()


@pytest.mark.slow  # make test-all; the default suite compresses a Keras 3 model in README (f) (tests/test_keras3.py)
def test_a_keras3_model_is_compressed_through_its_twin(setup):
    import keras as keras3

    from tfprune.keras3.convert import to_keras3

    model, table, (xt, yt), (xs, ys) = setup
    k3 = to_keras3(model)
    res = tfprune.compress(k3, (xt[:800], yt[:800]), validation=(xs, ys), table=table, latency=0.7, iterations=2, finetune_steps=2,
                           final_steps=2, verbose=0)
    assert isinstance(res.model, keras3.Model) and res.final_predicted_ms <= res.budget_ms * (1 + 1e-9)
    assert tfprune.profile(res.model).macs < tfprune.profile(k3).macs


def test_a_removable_layer_is_proposed_and_removed_when_it_saves_the_step(setup):
    """Shallowing's units join the proposals: an identity convolution inserted into the trained CNN costs most of the (MACs-as-time)
    latency; with every channel group held at 12 channels no channel cut can save the step, so removing the layer is the only
    proposal. The result is the trained CNN again (outputs equal); without shallowing the layer stays."""
    trained, _, train, val = setup
    model = keras.models.clone_model(trained)  # its layers are called on a new input below: the fixture's model stays as it is
    model.set_weights(trained.get_weights())
    inp = keras.Input((28, 28, 1))
    x = model.get_layer("c1")(inp)
    mid = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="mid")
    x = mid(x)
    kernel = np.zeros((3, 3, 12, 12), np.float32)
    kernel[1, 1] = np.eye(12)
    mid.set_weights([kernel, np.zeros(12, np.float32)])  # relu(identity) of relu outputs: the layer changes nothing
    for name in ("c2", "flatten", "fc1", "fc2"):
        layer = next(ly for ly in model.layers if ly.name == name or (name == "flatten" and isinstance(ly, keras.layers.Flatten)))
        x = layer(x)
    deeper = keras.Model(inp, x)
    deeper.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    table = _table(deeper)
    assert table.layer_ms("mid") > 0.5 * table.dense_ms
    args = dict(validation=val, table=table, latency=0.6, iterations=1, min_channels=12, proposal_samples=100, finetune_steps=0,
                final_steps=0, verbose=0, seed=1)
    res = tfprune.compress(deeper, train, **args)
    assert [(s.kind, s.group, s.removed) for s in res.steps] == [("layer", "mid", 1)]
    assert "mid" not in [ly.name for ly in res.model.layers] and res.final_predicted_ms <= res.budget_ms
    np.testing.assert_allclose(res.model.predict(val[0][:64], verbose=0), model.predict(val[0][:64], verbose=0), rtol=1e-4, atol=1e-4)
    assert "(layer removed)" in res.table()
    plain = tfprune.compress(deeper, train, shallowing=False, **args)  # channel cuts only (the step halves until a group can save it)
    assert all(s.kind == "channels" for s in plain.steps) and "mid" in [ly.name for ly in plain.model.layers]


def test_checked_latencies_stop_the_search_on_the_measured_budget_not_the_predicted_one(setup, monkeypatch):
    """With check_latency every accepted step is timed beside the dense model and the search stops when the *measured* ratio meets
    the budget. Timing is replaced here by a known stand-in (deterministic): pruned models measure 1.3x their predicted ratio, as a
    table that under-predicts would. The search then goes on past the predicted budget to 0.6 / 1.3 and stops at the first step
    whose measured ratio is within 0.6."""
    from tfprune.latency import LatencyCost, search
    from tfprune.structured.graph import channel_graph

    model, table, _, _ = setup
    dense_pred = table.dense_ms

    class File(bytes):  # a stand-in .tflite: some bytes that remember their model
        model = None

    def fake_bytes(m):
        f = File(b"\0" * m.count_params())
        f.model = m
        return f

    def fake_time(contents, threads=1, rounds=10, block=10, warmup=3):
        out = {}
        for key, f in contents.items():
            pred = LatencyCost(channel_graph(f.model), table).estimate()
            out[key] = pred if key == "dense" else dense_pred * min(1.0, 1.3 * pred / dense_pred)
        return out, "stand-in"

    monkeypatch.setattr(search, "tflite_bytes", fake_bytes)
    monkeypatch.setattr(search, "time_tflite", fake_time)
    res = _run(setup, check_latency=True, iterations=4, final_steps=0)
    ratios = [s.measured_ratio for s in res.steps]
    assert ratios[-1] <= 0.6 and all(r > 0.6 for r in ratios[:-1])
    assert all(r == pytest.approx(min(1.0, 1.3 * s.predicted_ms / dense_pred)) for r, s in zip(ratios, res.steps))
    assert res.steps[-1].predicted_ms <= 0.6 / 1.3 * dense_pred * (1 + 1e-9) < res.budget_ms
    assert "measured ratio" in res.table()


def test_propose_gives_each_group_its_smallest_cut_that_saves_the_step(setup):
    from tfprune.latency import LatencyCost
    from tfprune.latency.search import propose
    from tfprune.structured.graph import channel_graph

    model, table, _, _ = setup
    now = table.dense_ms
    step = 0.1 * now
    proposals = propose(model, table, step, 0.0)
    assert proposals and {kind for _, kind, _, _, _ in proposals} == {"channels"}  # this CNN has no removable layer
    assert [(w, c) for w, _, c, _, _ in propose(model, table, step, 0.0)] == [(w, c) for w, _, c, _, _ in proposals]  # deterministic
    for _, _, _, pred, build in proposals:
        assert pred <= now - step
        assert LatencyCost(channel_graph(build()), table).estimate() == pytest.approx(pred)
    assert all(p[3] < now for p in propose(model, table, 10 * now, 0.0))  # a step larger than the model halves until something fits


def _mixed_cnn() -> keras.Model:
    """Every layer kind a table prices: Conv2D, grouped Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, and a residual Add."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Conv2D(16, 1, groups=2, name="grouped")(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.SeparableConv2D(24, 3, strides=2, padding="same", activation="relu", name="sep")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(20, activation="relu", name="fc1")(x)
    return keras.Model(inp, keras.layers.Dense(10, name="fc2")(x))


def test_the_macs_table_prices_any_shrunk_model_at_its_exact_macs():
    """`macs_table`: the MACs proxy as a table. Its prediction for a shrunk copy (any plan: uniform and importance, several
    fractions) equals `tfprune.profile`'s MACs of that copy, layer kinds with bilinear and linear MACs alike."""
    from tfprune.latency import LatencyCost, macs_table
    from tfprune.structured.graph import channel_graph
    from tfprune.structured.plan import plan_and_shrink

    model = _mixed_cnn()
    table = macs_table(model, ms_per_mmac=2.0)
    assert table.device == "macs" and LatencyCost(channel_graph(model), table).estimate() == pytest.approx(2e-6 * tfprune.profile(model).macs)
    for allocation, macs in (("uniform", 0.3), ("uniform", 0.6), ("importance", 0.5)):
        _, small, _ = plan_and_shrink(model, macs=macs, allocation=allocation)
        assert tfprune.profile(small).macs < tfprune.profile(model).macs
        assert LatencyCost(channel_graph(small), table).estimate() == pytest.approx(2e-6 * tfprune.profile(small).macs, rel=1e-9)
    with pytest.raises(ValueError, match="ms_per_mmac"):
        macs_table(model, ms_per_mmac=0)


@pytest.mark.slow  # make test-all: about 5 minutes on 2 cores (about 30 proposals shrunk per iteration)
def test_compress_runs_on_a_keras_applications_mobilenet_v2(digits_data, tmp_path):
    """A model tfprune did not build: keras.applications' MobileNetV2 (ReLU6, zero padding, inverted residuals) is compressed to
    half its MACs (the MACs table: no timing noise), exported with parity, and the user's model is untouched."""
    from tfprune.latency import macs_table

    (xt, yt), (xs, ys) = digits_data
    rgb = lambda x: np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)  # noqa: E731  28x28x1 -> 32x32x3
    keras.utils.set_random_seed(0)
    model = tfprune.models.compile_classifier(keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                                                             classes=10, classifier_activation=None))
    model.fit(rgb(xt[:2000]), yt[:2000], epochs=1, batch_size=64, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    res = tfprune.compress(model, (rgb(xt[:1000]), yt[:1000]), validation=(rgb(xs[:200]), ys[:200]), table=macs_table(model), latency=0.5,
                           iterations=2, proposal_samples=100, finetune_steps=2, final_steps=2, verbose=0, quantize="float",
                           out=str(tmp_path / "small.tflite"))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert res.final_predicted_ms <= res.budget_ms * (1 + 1e-9) and res.steps
    assert tfprune.profile(res.model).macs <= 0.5 * tfprune.profile(model).macs * (1 + 1e-6)
    assert res.export.top1_agreement >= 0.98 and (tmp_path / "small.tflite").stat().st_size == res.export.bytes


def test_the_time_budget_counts_the_next_iteration_and_what_must_follow():
    from tfprune.latency.search import next_iteration_fits

    assert next_iteration_fits(10.0, 0.0, 0.0, None) and next_iteration_fits(1e9, 1e9, 1e9, None)
    assert next_iteration_fits(100.0, 0.0, 50.0, 3600.0)  # first iteration: allowed while the reserve fits
    assert next_iteration_fits(3000.0, 300.0, 300.0, 3600.0) and not next_iteration_fits(3000.0, 300.0, 301.0, 3600.0)
    assert not next_iteration_fits(3601.0, 0.0, 0.0, 3600.0)


def test_a_spent_time_budget_stops_the_search_and_says_so(setup):
    res = _run(setup, time_budget=1e-6)
    assert res.steps == [] and res.stop_reason == "time budget" and "stopped: time budget" in res.table()
    assert not res.meets_latency and res.final_predicted_ms == pytest.approx(res.dense_predicted_ms)


def test_pick_step_halves_until_a_try_keeps_the_accuracy():
    from tfprune.latency.search import STEP_HALVINGS, pick_step

    assert pick_step([0.90], 0.92, 0.05) == 0  # loses 2 points: the planned step is kept
    assert pick_step([0.80], 0.92, 0.05) is None  # loses 12: halve
    assert pick_step([0.80, 0.88], 0.92, 0.05) == 1  # the halved step loses 4: accept it
    assert pick_step([0.10], 0.92, None) == 0  # fixed steps (NetAdapt's): always the planned one
    tries = [0.5, 0.7, 0.6] + [0.2] * (STEP_HALVINGS - 2)
    assert pick_step(tries[:STEP_HALVINGS], 0.92, 0.05) is None
    assert pick_step(tries, 0.92, 0.05) == 1  # every halving lost too much: the most accurate try
    assert pick_step([0.7] * (STEP_HALVINGS + 1), 0.92, 0.05) == 0  # ties: the larger step
    assert pick_step([0.6, 0.8], 0.92, 0.05, can_halve=False) == 1  # a smaller step found no proposal: the best try
    assert pick_step([0.9], 0.92, 0.05, can_halve=False) == 0  # can_halve only matters when the last try loses too much
    with pytest.raises(ValueError, match="best_accuracies"):
        pick_step([], 0.9, 0.05)


def test_step_finetune_steps_scale_with_the_step():
    from tfprune.latency.search import step_finetune_steps

    assert step_finetune_steps(100, 0.5, 0.5) == 100 and step_finetune_steps(100, 0.25, 0.5) == 50
    assert step_finetune_steps(100, 0.5 / 8, 0.5) == 12 and step_finetune_steps(3, 1e-9, 0.5) == 1
    assert step_finetune_steps(100, 2.0, 0.5) == 100 and step_finetune_steps(0, 0.25, 0.5) == 0


def test_a_halved_step_proposes_again_fine_tunes_less_and_is_kept(setup, monkeypatch):
    """When pick_step asks for a halving, the iteration proposes at half the step, fine-tunes half as long, and later
    iterations keep the smaller step. (That max_step_drop=None accepts every planned step is pick_step's own test.)"""
    import tfprune.latency.search as search

    _, table, _, _ = setup
    planned = (1 - 0.6) * table.dense_ms / 3  # _run's budget and iterations: the planned step in ms
    asked = []

    def halve_once(best, reference, max_step_drop, **kw):
        asked.append((list(best), max_step_drop))
        return None if len(asked) == 1 else len(best) - 1

    monkeypatch.setattr(search, "pick_step", halve_once)
    lines = []
    res = _run(setup, progress=lines.append)
    assert len(asked[0][0]) == 1 and len(asked[1][0]) == 2  # the first iteration scored a second, halved try
    assert asked[0][1] == 0.05  # the default max_step_drop reaches pick_step
    assert sum("halving the step" in ln for ln in lines) == 1
    assert res.steps[0].step_ms == pytest.approx(planned / 2) and res.steps[0].finetune_steps == 2
    assert all(s.step_ms == pytest.approx(planned / 2) and s.finetune_steps == 2 for s in res.steps)
    assert res.final_predicted_ms <= res.budget_ms * (1 + 1e-9)
