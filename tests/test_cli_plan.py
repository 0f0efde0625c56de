"""One plan everywhere: the CLI's `plan`, and the same defaults in every entry point."""

import inspect
import json

import pytest

import tfprune
from tfprune import cli
from tfprune.planning import DEFAULT_ALLOCATION, DEFAULT_IMPORTANCE, default_methods


def test_every_entry_point_has_the_plan_defaults():
    def defaults(fn):
        sig = inspect.signature(fn)
        return sig.parameters["importance"].default, sig.parameters["allocation"].default

    want = (DEFAULT_IMPORTANCE, DEFAULT_ALLOCATION) == ("capacity", "importance") and (DEFAULT_IMPORTANCE, DEFAULT_ALLOCATION)
    assert want and default_methods("unstructured") == default_methods("2:4") == want and default_methods("channel") == ("l2", "uniform")
    for fn in (tfprune.plan, tfprune.Pruning.__init__):  # None: the granularity's defaults, from default_methods
        assert defaults(fn) == (None, None), fn
    for fn in (tfprune.analyze, tfprune.obs.prune):  # weights only
        assert defaults(fn) == want, fn
    parser = cli.build_parser()
    assert (parser.parse_args(["plan", "m.keras"]).importance, parser.parse_args(["plan", "m.keras"]).allocation) == (None, None)
    for command in ("analyze", "obs"):
        args = parser.parse_args([command, "m.keras", "--out", "x", "--data", "d.npz"] if command == "obs" else [command, "m.keras"])
        assert (args.importance, args.allocation) == want, command
    obs_args = parser.parse_args(["obs", "m.keras", "--out", "x", "--data", "d.npz"])
    assert obs_args.solver == inspect.signature(tfprune.obs.prune).parameters["solver"].default == tfprune.obs.DEFAULT_SOLVER


def test_cli_plan_prints_the_callbacks_plan(trained_tiny, tmp_path, capsys):
    path = str(tmp_path / "m.keras")
    trained_tiny.save(path)
    assert cli.main(["plan", path, "--macs", "0.4", "--granularity", "channel", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = tfprune.plan(trained_tiny, macs=0.4, granularity="channel")
    assert out["targets"] == pytest.approx(expected.targets) and "model output" in out["excluded"]["fc2"]
    assert out["achieved"] == pytest.approx(expected.achieved) and out["budget"] == "macs"
    assert cli.main(["plan", path, "--sparsity", "0.7"]) == 0
    text = capsys.readouterr().out
    assert "plan: sparsity 0.7000 requested" in text and "conv2" in text
    assert cli.main(["plan", path, "--allocation", "nope"]) == 2
    assert "unknown allocation 'nope'" in capsys.readouterr().err
