"""The CIFAR-10 benchmark scripts on a tiny JPEG pack and a tiny dense checkpoint: schema, resume, budget guard."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

import tfprune
from tests.conftest import ROOT
from tests.test_cifar import write_pack
from tfprune import models
from tfprune.files import save_model


def _script(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pack = tmp_path / "pack.npz"
    write_pack(pack, n_train=64, n_test=20)
    ck = tmp_path / "ck"
    ck.mkdir()
    save_model(models.vgg_cifar(11, 0.125), ck / "vgg11_w0.125.keras")
    return pack, ck


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_allocation_cifar_schema_resume_and_budget_guard(tmp_path, tiny_setup):
    pack, ck = tiny_setup
    script = _script("allocation_cifar")
    out = tmp_path / "alloc.json"
    argv = ["--models", "vgg11_w0.125", "--allocations", "lamp,importance,uniform_plus,lamp_gradual", "--sparsities", "0.95,0.9",
            "--seeds", "2", "--ramp-epochs", "1", "--finetune-epochs", "0", "--batch-size", "32", "--data", str(pack),
            "--out", str(out), "--checkpoint-dir", str(ck), "--subset", "64"]
    assert script.main(argv + ["--allocations", "lamp", "--sparsities", "0.95", "--seeds", "1"]) == 0
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 1 and data["config"]["cpu_minutes"] > 0
    with pytest.raises(SystemExit):  # runs already there: not redone or overwritten without --resume
        script.main(argv)
    with pytest.raises(SystemExit):  # another budget is refused
        script.main(argv + ["--resume", "--lr", "0.02"])
    assert script.main(argv + ["--resume"]) == 0
    data = json.loads(out.read_text())
    # seed 0: 2 sparsities x 4 allocations; seed 1 only at 0.95 (0.9 is not a seeded sparsity)
    assert len(data["runs"]) == 12 and len(data["config"]["segments"]) == 2  # the refused calls add no segment
    entry = data["models"]["vgg11_w0.125"]
    assert entry["default_allocation"] == "importance" and 0.0 <= entry["dense_acc"] <= 1.0
    lamp95 = next(r for r in entry["results"] if r["allocation"] == "lamp" and r["sparsity"] == 0.95)
    assert lamp95["n_seeds"] == 2 and lamp95["seeds"] == [0, 1] and 0.0 <= lamp95["acc_mean"] <= 1.0 and lamp95["acc_std"] >= 0.0
    for r in data["runs"]:
        assert abs(r["achieved_sparsity"] - r["sparsity"]) < 0.01, r  # the ramp reached its target
    plus = next(r for r in data["runs"] if r["allocation"] == "uniform_plus")
    names = list(plus["planned_layer_sparsity"])
    assert plus["planned_layer_sparsity"][names[0]] == 0.0 and plus["planned_layer_sparsity"][names[-1]] <= 0.8 + 1e-6
    assert (tmp_path / "alloc.md").is_file() and (tmp_path / "alloc.png").is_file()
    assert "default (`importance`)" in (tmp_path / "alloc.md").read_text()


def test_allocation_cifar_sensitivity_candidate_measures_each_layer_at_the_target(tiny_setup):
    """The candidate ``importance_sensitivity``: the default allocator on `sensitivity` scores taken at the run's sparsity."""
    import numpy as np

    script = _script("allocation_cifar")
    dense = models.vgg_cifar(11, 0.125)
    dense.compile(loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    calib = (rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, (16, 1)))
    plan = script.make_plan(dense, "importance_sensitivity", 0.9, calib)
    assert plan.allocator == "importance" and plan.importance.method == "sensitivity"
    assert plan.importance.details["sparsity"] == pytest.approx(0.9)  # each layer alone pruned to the run's target
    assert sum(plan.removed.values()) / sum(plan.n_params.values()) == pytest.approx(0.9, abs=1e-3)
    tempered = script.make_plan(dense, "importance_sensitivity_sqrt", 0.9, calib)  # the same scores at gamma 0.5
    assert tempered.importance.method == "sensitivity" and tempered.importance.details["sparsity"] == pytest.approx(0.9)
    assert sum(tempered.removed.values()) / sum(tempered.n_params.values()) == pytest.approx(0.9, abs=1e-3)
    # gamma 0.5 is the full rule on the scores' square roots: each layer's measured damage counts half as much (in log terms)
    roots = {name: float(np.sqrt(max(score, 1e-12))) for name, score in tempered.importance.scores.items()}  # the allocator's floor
    by_hand = tfprune.plan(dense, 0.9, importance=roots, allocation="importance")
    for name, removed in by_hand.removed.items():  # up to float rounding at the one global threshold
        assert abs(tempered.removed[name] - removed) <= 2, name
    for bad in (1.5, 0.0):  # a fraction outside (0, 1) is refused, naming the option, not silently clipped
        with pytest.raises(ValueError, match=r"importance_kwargs\['sparsity'\].*Fix"):
            tfprune.plan(dense, 0.9, importance="sensitivity", data=calib, importance_kwargs={"sparsity": bad, "progress": False})


@pytest.mark.slow  # a benchmark script end to end (make test-all)
def test_lobs_cifar_records_one_shot_bn_and_retrained(tmp_path, tiny_setup):
    pack, ck = tiny_setup
    script = _script("lobs_cifar")
    out = tmp_path / "lobs.json"
    argv = ["--models", "vgg11_w0.125", "--solvers", "magnitude,lobs", "--budgets", "0.5", "--n-calib", "32", "--batch-size", "32",
            "--data", str(pack), "--out", str(out), "--checkpoint-dir", str(ck), "--subset", "64"]
    assert script.main(argv) == 0
    data = json.loads(out.read_text())
    assert [(r["solver"], r["budget"]) for r in data["runs"]] == [("magnitude", 0.5), ("lobs", 0.5)]
    for r in data["runs"]:
        assert abs(r["achieved_sparsity"] - 0.5) < 0.01
        assert all(0.0 <= r[k] <= 1.0 for k in ("acc_one_shot", "acc_bn", "acc_retrained"))
    assert script.main(argv + ["--resume"]) == 0  # nothing left to do: the runs stay as they are
    assert json.loads(out.read_text())["runs"] == data["runs"]
    assert 0.0 <= data["models"]["vgg11_w0.125"]["dense_acc_bn"] <= 1.0  # the re-estimation's control on the unpruned model
    assert "one-shot" in (tmp_path / "lobs.md").read_text()


@pytest.mark.slow  # a benchmark script end to end (make test-all)
def test_structured_cifar_shrinks_and_times(tmp_path, tiny_setup):
    pack, ck = tiny_setup
    script = _script("structured_cifar")
    out = tmp_path / "st.json"
    argv = ["--models", "vgg11_w0.125", "--allocations", "uniform,importance", "--macs", "0.5", "--ramp-epochs", "1", "--finetune-epochs", "1",
            "--batch-size", "32", "--latency-rounds", "2", "--data", str(pack), "--out", str(out), "--checkpoint-dir", str(ck), "--subset", "64"]
    assert script.main(argv) == 0
    data = json.loads(out.read_text())
    entry = data["models"]["vgg11_w0.125"]
    assert {r["allocation"] for r in entry["results"]} == {"uniform", "importance"}
    for r in entry["results"]:
        assert r["macs_removed"] == 0.5 and abs(r["macs_removed_achieved"] - 0.5) < 0.05 and r["latency_ratio"] > 0
        assert 0.0 <= r["acc_mean"] <= 1.0
    assert entry["dense_macs"] > max(run["macs"] for run in data["runs"])
    for run in data["runs"]:  # what each plan kept, layer by layer, beside the dense widths
        assert set(run["out_channels"]) == set(entry["dense_out_channels"])
        assert all(0 < run["out_channels"][n] <= entry["dense_out_channels"][n] for n in run["out_channels"])
        assert sum(run["out_channels"].values()) < sum(entry["dense_out_channels"].values())
    cut, shares, names = script.kept_pattern(data, "vgg11_w0.125")  # the plot's right panel: kept / dense per layer
    assert cut == 0.5 and set(shares) == {"uniform", "importance"} and names == list(entry["dense_out_channels"])
    run = next(r for r in data["runs"] if r["allocation"] == "uniform")
    assert shares["uniform"] == [run["out_channels"][n] / entry["dense_out_channels"][n] for n in names]
    (tmp_path / "st.png").unlink()
    assert script.main(["--summarize", "--out", str(out)]) == 0 and (tmp_path / "st.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a benchmark script end to end (make test-all)
def test_global_ratio_cifar_pattern_and_accuracies(tmp_path, tiny_setup):
    pack, ck = tiny_setup
    script = _script("global_ratio_cifar")
    out = tmp_path / "gr.json"
    argv = ["--models", "vgg11_w0.125", "--ratios", "0.3,0.8", "--batch-size", "32", "--data", str(pack), "--out", str(out),
            "--checkpoint-dir", str(ck), "--subset", "64"]
    assert script.main(argv) == 0
    data = json.loads(out.read_text())
    runs = sorted(data["runs"], key=lambda r: r["ratio"])
    assert [r["ratio"] for r in runs] == [0.3, 0.8]
    for r in runs:
        n = [p.n_params for p in tfprune.prunable_layers(tfprune.load_model(ck / "vgg11_w0.125.keras"))]
        removed = sum(s * k for s, k in zip(r["layer_removed"], n)) / sum(n)
        assert abs(removed - r["ratio"]) < 1e-3 and r["acc_finetuned"] is not None
    assert all(a <= b + 1e-9 for a, b in zip(runs[0]["layer_removed"], runs[1]["layer_removed"]))  # a higher ratio removes more everywhere
    assert (tmp_path / "gr.png").is_file()


@pytest.mark.slow  # a benchmark script end to end (make test-all)
def test_shallow_cifar_kd_and_ce(tmp_path, tiny_setup):
    pack, ck = tiny_setup
    save_model(models.resnet_cifar(8), ck / "resnet8.keras")
    script = _script("shallow_cifar")
    out = tmp_path / "sh.json"
    argv = ["--models", "resnet8", "--targets", "0.2", "--finetune-epochs", "1", "--probe-images", "64", "--batch-size", "32",
            "--latency-rounds", "2", "--data", str(pack), "--out", str(out), "--checkpoint-dir", str(ck), "--subset", "64"]
    assert script.main(argv) == 0
    data = json.loads(out.read_text())
    res = data["resnet8"]["results"]
    assert {r["variant"] for r in res} == {"kd", "ce"}
    for r in res:
        assert r["macs"] <= 0.8 * data["resnet8"]["dense_macs"] + 1 and r["removed"] and 0 <= r["acc"] <= 1


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_compress_benchmark_schema_and_resume(tmp_path, tiny_setup, monkeypatch):
    pack, ck = tiny_setup
    monkeypatch.setenv("TFPRUNE_CACHE", str(tmp_path / "cache"))
    script = _script("compress")
    out = tmp_path / "compress.json"
    argv = ["--models", "vgg11_w0.125", "--budgets", "0.8", "--iterations", "1", "--finetune-steps", "1", "--final-steps", "1",
            "--proposal-samples", "8", "--batch-size", "16", "--data", str(pack), "--out", str(out), "--checkpoint-dir", str(ck),
            "--subset", "64", "--validation", "8"]
    assert script.main(argv) == 0
    data = json.loads(out.read_text())
    entry = data["models"]["vgg11_w0.125"]
    assert {r["method"] for r in entry["results"]} == {"compress", "uniform", "macs"}
    for r in entry["results"]:
        assert r["latency_budget"] == 0.8 and r["latency_ratio"] > 0 and r["predicted_ratio"] <= 0.8 + 0.05 and 0 <= r["acc"] <= 1
        assert r["tflite_bytes"] > 0 and r["finetune_steps"] == 2
    assert entry["dense_ms"] > 0 and out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    assert script.main(argv + ["--resume"]) == 0 and len(json.loads(out.read_text())["runs"]) == 3  # nothing redone


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_compress_defaults_records_the_call_its_time_and_stages(tmp_path, tiny_setup, monkeypatch):
    pack, ck = tiny_setup
    monkeypatch.setenv("TFPRUNE_CACHE", str(tmp_path / "cache"))
    script = _script("compress_defaults")
    out = tmp_path / "cd.json"
    argv = ["--models", "vgg11_w0.125", "--budgets", "0.8", "--iterations", "1", "--finetune-steps", "1", "--final-steps", "1",
            "--time-budget", "900", "--data", str(pack), "--out", str(out), "--checkpoint-dir", str(ck), "--subset", "64"]
    assert script.main(argv) == 0
    data = json.loads(out.read_text())
    (r,) = data["models"]["vgg11_w0.125"]["results"]
    assert r["latency_budget"] == 0.8 and r["time_budget_s"] == 900 and r["stop_reason"] and r["wall_minutes"] > 0
    assert r["wall_minutes"] * 60 <= 900 and r["file_format"] in ("float", "int8") and r["tflite_bytes"] > 0
    assert [s["stage"] for s in r["stages"]][0] == "dense" and r["stages"][-1]["stage"] == "file"
    assert 0 <= r["test_acc"] <= 1 and 0 <= r["file_test_acc"] <= 1
    assert data["config"]["budget"]["overrides"]["time_budget"] == 900 and out.with_suffix(".md").is_file()
    assert script.main(argv + ["--resume"]) == 0 and len(json.loads(out.read_text())["runs"]) == 1  # nothing redone


def test_latency_table_error_timing_spread_is_relative_to_the_median():
    spread = _script("latency_table_error").timing_spread
    assert spread({"measured_ratio": 0.5, "ratio_repeats": [0.45, 0.5, 0.55]}) == pytest.approx(0.1)
    assert spread({"measured_ratio": 0.5}) == 0.0  # one timing (runs made before --repeats): no spread to report


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_latency_table_error_repeats_each_timing_and_fits_on_medians(tmp_path, tiny_setup):
    _, ck = tiny_setup
    script = _script("latency_table_error")
    out = tmp_path / "err.json"
    argv = ["--models", "vgg11_w0.125", "--rounds", "1", "--repeats", "3", "--checkpoint-dir", str(ck), "--state-dir", str(tmp_path),
            "--out", str(out)]
    with pytest.raises(SystemExit):
        script.main(argv + ["--repeats", "0"])  # argparse's error: "--repeats must be >= 1" (the last value counts)
    assert script.main(argv) == 0
    run = json.loads(out.read_text())["runs"][0]
    dense = run["variants"][0]
    assert dense["variant"] == "dense" and dense["ratio_repeats"] == [1.0, 1.0, 1.0]
    for v in run["variants"]:
        assert len(v["ms_repeats"]) == 3 and v["ms"] == pytest.approx(sorted(v["ms_repeats"])[1])  # the median of three
        assert v["measured_ratio"] == pytest.approx(v["ms"] / dense["ms"])
        assert [r * d for r, d in zip(v["ratio_repeats"], dense["ms_repeats"])] == pytest.approx(v["ms_repeats"])
    # the rows as cached and the rows scaled to this sitting (re-timed once): both fitted, the factor recorded
    assert run["speed_factor"] > 0 and set(run["fits"]) == {"without", "with", "signed", "rescaled"}
    for v in run["variants"]:
        assert v["layer_sum_rescaled_ms"] == pytest.approx(run["speed_factor"] * v["layer_sum_ms"])
        assert v["predicted_rescaled"] > 0
    assert "timed 3 times" in out.with_suffix(".md").read_text()
