"""`tfprune channels`: structured pruning from the command line, on a tiny saved model and a small mnist.npz."""

import json

import numpy as np
import pytest

import tfprune
from tfprune import cli
from tfprune.profile import profile
from tfprune.structured.prune import top1_accuracy


@pytest.fixture
def saved(trained_tiny, digits_data, tmp_path):
    (xt, yt), (xs, ys) = digits_data
    model_path = str(tmp_path / "tiny.keras")
    trained_tiny.save(model_path)
    npz = str(tmp_path / "mnist_small.npz")
    as_uint8 = lambda x: np.round(x[..., 0] * 255).astype(np.uint8)  # noqa: E731  (keras layout: uint8 (N, 28, 28))
    np.savez(npz, x_train=as_uint8(xt[:1000]), y_train=yt[:1000], x_test=as_uint8(xs[:500]), y_test=ys[:500])
    return model_path, npz, trained_tiny, (xs[:500], ys[:500])


def test_cli_channels_prunes_finetunes_and_saves(saved, tmp_path, capsys):
    model_path, npz, model, (xs, ys) = saved
    out = str(tmp_path / "small.keras")
    assert cli.main(["channels", model_path, "--macs", "0.4", "--data", npz, "--finetune-epochs", "1", "--allocation", "uniform",
                     "--out", out]) == 0
    text = capsys.readouterr().out
    assert "channel plan for 'tiny': macs removed" in text and "allocation 'uniform'" in text
    assert "conv1" in text and "conv2" in text and "fc1" in text  # the per-group table
    assert f"saved {out}" in text
    small = tfprune.load_model(out)
    ratio = profile(small).macs / profile(model).macs
    assert abs((1 - ratio) - 0.4) <= 0.05
    acc = top1_accuracy(ys, small.predict(xs, verbose=0))
    assert f"{acc:.4f}" in text  # the printed fine-tuned accuracy is the saved model's
    dense = top1_accuracy(ys, model.predict(xs, verbose=0))
    assert f"{dense:.4f}" in text


def test_cli_channels_json_params_target(saved, capsys):
    model_path, _, model, _ = saved
    assert cli.main(["channels", model_path, "--params", "0.3", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["plan"]["target"] == "params" and abs(d["plan"]["achieved"] - 0.3) <= 0.05
    assert d["acc_before"] is None and d["finetune_epochs"] == 0


def test_cli_channels_errors(saved, capsys):
    model_path, _, _, _ = saved
    assert cli.main(["channels", model_path, "--finetune-epochs", "1"]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert cli.main(["channels", model_path, "--macs", "1.5"]) == 2
    assert "fraction removed" in capsys.readouterr().err
