"""The shared report base: tables sized to their content, markdown, JSON-safe dicts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from tfprune.report import Report, Table, format_markdown, format_table, json_safe

LONG = "block_16_project_BN_with_a_very_long_nested_name/inner/conv_kernel_that_goes_on"


def _columns(line: str, starts: list[int]) -> list[str]:
    return [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]


def test_long_names_fit_and_columns_align():
    rows = [["conv1", "Conv2D", 864, "0.5000"], [LONG, "DepthwiseConv2D", 12, "0.9950"], ["fc", "Dense", 1234567, None]]
    text = format_table(["layer", "type", "params", "sparsity"], rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert LONG in text  # never truncated
    rule = lines[1]
    assert set(rule) <= {"-", " "}
    # column starts from the rule row; every row splits back into its cells
    starts = [i for i, ch in enumerate(rule) if ch == "-" and (i == 0 or rule[i - 1] == " ")]
    assert len(starts) == 4
    assert _columns(lines[0], starts) == ["layer", "type", "params", "sparsity"]
    for line, row in zip(lines[2:], rows):
        assert _columns(line, starts) == ["" if c is None else str(c) for c in row]
    # numbers are right-aligned: all params cells end at the same column
    ends = {line.index(str(r[2])) + len(str(r[2])) for line, r in zip(lines[2:], rows)}
    assert len(ends) == 1


def test_alignment_option_and_errors():
    text = format_table(["a", "b"], [["x", "yy"], ["zzz", "w"]], align="rl")
    assert text.splitlines()[2].startswith("  x  yy")
    with pytest.raises(ValueError, match="align has 1 entries for 2 columns"):
        format_table(["a", "b"], [["x", "y"]], align="r")
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 headers"):
        format_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="unknown alignment"):
        format_table(["a"], [["x"]], align=["q"])


def test_markdown_is_a_valid_table():
    rows = [[LONG, 3, 0.25], ["a|b", np.int64(4), np.float32(0.5)]]
    md = format_markdown(["layer", "n", "s"], rows)
    lines = md.splitlines()
    assert lines[1] == "|:---|---:|---:|"
    for line in lines:
        assert line.startswith("| ") or line.startswith("|:") or line.startswith("|-")
        # the same number of unescaped pipes on every line (3 columns -> 4 pipes)
        assert line.replace("\\|", "").count("|") == 4
    assert "a\\|b" in md and LONG in md


@dataclass
class _Layer:
    name: str
    value: float


@dataclass
class _Demo(Report):
    title: str
    layers: list[_Layer] = field(default_factory=list)
    arr: np.ndarray | None = None
    hidden: object = field(default=None, repr=False)

    def _blocks(self):
        return [f"demo {self.title}", Table(["layer", "value"], [[r.name, f"{r.value:.3f}"] for r in self.layers], "lr")]

    def _extra_dict(self):
        return {"n": np.int32(len(self.layers))}


def test_report_mixin_text_markdown_and_dict():
    rep = _Demo("x", [_Layer(LONG, np.float32(0.125)), _Layer("b", float("nan"))], np.arange(3), hidden=object())
    assert str(rep) == rep.table() and rep.table().startswith("demo x\n")
    assert LONG in rep.table() and "0.125" in rep.table()
    md = rep.to_markdown()
    assert "| layer | value |" in md and "|:---|---:|" in md
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON
    back = json.loads(text)
    assert back["layers"][0] == {"name": LONG, "value": 0.125}
    assert back["layers"][1]["value"] is None  # NaN -> null
    assert back["arr"] == [0, 1, 2] and back["n"] == 2 and "hidden" not in back


def test_json_safe_types():
    out = json_safe({1: np.float64(2.5), "t": (np.int8(1), {np.bool_(True)}), "inf": np.inf})
    assert out == {"1": 2.5, "t": [1, [True]], "inf": None}
    assert isinstance(out["1"], float) and not math.isnan(out["1"])


def test_converted_reports_fit_long_names():
    import tfprune
    from tfprune._keras import keras
    from tfprune.export import ExportReport, TensorInfo
    from tfprune.obs.pruning import OBSLayer, OBSReport

    long_tensor = "model/" + LONG + "/Conv2D;model/" + LONG + "/BiasAdd/ReadVariableOp"
    exp = ExportReport("m.tflite", "sparse", 1000, 800, [TensorInfo(long_tensor, (8, 3, 3, 4), "float32", "sparse", 288, 30, 0.8958, 120)])
    assert long_tensor in exp.table() and str(exp) == exp.table()
    d = json.loads(json.dumps(exp.to_dict(), allow_nan=False))  # max_abs_diff is NaN here -> null
    assert d["max_abs_diff"] is None and d["tensors"][0]["shape"] == [8, 3, 3, 4]

    obs = OBSReport("lobs", [OBSLayer(LONG, 100, 0.9, 1.5, 2.0, 0.1), OBSLayer("fc2", 50, 0.5, 0.2, 1.0, 0.05)], n_samples=10)
    assert LONG in obs.table() and "bound" in obs.table()
    assert obs.to_dict()["total_sparsity"] == pytest.approx((90 + 25) / 150)
    lines = obs.table().splitlines()[1:]
    assert len({len(line) for line in lines if not set(line) <= {"-", " "}}) == 1  # right-aligned last column

    inp = keras.Input((8,))
    x = keras.layers.Dense(4, name=LONG.replace("/", "_"))(inp)
    x = keras.layers.BatchNormalization(name="bn_" + "x" * 60)(x)
    m = keras.Model(inp, keras.layers.Dense(2, name="out")(x))
    inv = tfprune.prunable_layers(m).table()
    assert LONG.replace("/", "_") in inv and "bn_" + "x" * 60 in inv and "skipped:" in inv
    prof = tfprune.profile(m)
    assert LONG.replace("/", "_") in prof.table() and prof.to_dict()["params"] == prof.params == m.count_params()
    assert prof.table().splitlines()[-1].split() == ["total", str(prof.params), str(prof.macs)]
