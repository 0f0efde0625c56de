"""tfprune.validation without TensorFlow: every check returns the canonical value or names the argument, the value and the fix."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfprune import validation as v


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_check_sparsity_accepts_exactly_the_finite_values_in_0_1(x):
    if math.isfinite(x) and 0.0 <= x < 1.0:
        assert v.check_sparsity(x, "sparsity") == x
    else:
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\).*Fix"):
            v.check_sparsity(x, "sparsity")


@pytest.mark.parametrize("bad", [True, "0.5", None, [0.5], np.array([0.5])])
def test_fraction_refuses_values_that_are_not_plain_numbers(bad):
    with pytest.raises(TypeError, match=r"alpha must be"):
        v.fraction(bad, "alpha")


@given(st.one_of(st.integers(-5, 50), st.floats(allow_nan=True, allow_infinity=True), st.booleans()))
def test_check_int_accepts_whole_numbers_in_range_only(x):
    ok = not isinstance(x, bool) and math.isfinite(float(x)) and float(x).is_integer() and 1 <= x <= 10
    if ok:
        assert v.check_int(x, "frequency", 1, 10) == int(x)
    else:
        with pytest.raises(ValueError, match="frequency must be an integer"):
            v.check_int(x, "frequency", 1, 10)


def test_number_bounds_and_strictness():
    assert v.number(4, "temperature", minimum=0, strict=True) == 4.0
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"temperature must be.*> 0"):
            v.number(bad, "temperature", minimum=0, strict=True)
    assert v.number(0.0, "tolerance", minimum=0) == 0.0


def test_fraction_map_refuses_empty_unknown_and_bad_values():
    assert v.fraction_map({"a": 0.5, "b": 0}, "targets", ["a", "b"]) == {"a": 0.5, "b": 0.0}
    with pytest.raises(ValueError, match=r"targets=\{\} names no layer.*\['a', 'b'\]"):
        v.fraction_map({}, "targets", ["a", "b"])
    assert v.fraction_map({}, "targets", allow_empty=True) == {}
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['c'\]"):
        v.fraction_map({"c": 0.5}, "targets", ["a", "b"])
    for bad in (math.nan, -0.5, 1.0, "x"):
        with pytest.raises(ValueError, match=r"targets\['a'\]"):
            v.fraction_map({"a": bad}, "targets", ["a"])
    with pytest.raises(TypeError, match="dict"):
        v.fraction_map([0.5], "targets")


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "2", None, True])
def test_positive_scores_refuses_non_positive_or_non_finite(bad):
    with pytest.raises(ValueError, match=r"importance\['h'\].*finite and > 0.*Fix"):
        v.positive_scores({"h": bad, "g": 1.0})
    assert v.positive_scores({"h": 2, "g": np.float32(0.5)}) == {"h": 2.0, "g": 0.5}


def test_channel_indices():
    assert v.channel_indices([3, 1], "remove['c']", 4).tolist() == [1, 3]
    assert v.channel_indices(np.array([2.0]), "remove['c']", 4).tolist() == [2]
    assert v.channel_indices(2, "remove['c']", 4).tolist() == [2]
    assert v.channel_indices([], "remove['c']", 4).tolist() == []
    with pytest.raises(ValueError, match=r"remove\['c'\].*integers in \[0, 4\), got \[0.5\].*not fractions"):
        v.channel_indices([0.5], "remove['c']", 4)
    with pytest.raises(ValueError, match="out of range.*0..3"):
        v.channel_indices([4], "remove['c']", 4)
    with pytest.raises(ValueError, match="out of range"):
        v.channel_indices([-1], "remove['c']", 4)
    with pytest.raises(ValueError, match="booleans.*flatnonzero"):
        v.channel_indices(np.array([True, False, True, False]), "remove['c']", 4)
    with pytest.raises(ValueError, match=r"repeat \(\[1\]\)"):
        v.channel_indices([1, 1], "remove['c']", 4)
    with pytest.raises(ValueError, match="integers"):
        v.channel_indices([math.nan], "remove['c']", 4)


def test_finite_array_counts_non_finite_entries():
    x = np.ones((3, 2), np.float32)
    assert v.finite_array(x, "x") is not None
    x[1, 1] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(ValueError, match="x holds 2 non-finite value"):
        v.finite_array(x, "x")


def test_class_labels():
    ids = np.array([0, 2, 1])
    assert v.class_labels(ids, "y", 3, "sparse") is not None
    assert v.class_labels(ids.reshape(-1, 1).astype(np.float32), "y", 3, None) is not None
    one_hot = np.eye(3)[ids]
    assert v.class_labels(one_hot, "y", 3, "one_hot") is not None
    assert v.class_labels(one_hot, "y", 3, None) is not None
    with pytest.raises(ValueError, match=r"one-hot rows.*sparse.*np.argmax\(y, -1\)"):
        v.class_labels(one_hot, "y", 3, "sparse")
    with pytest.raises(ValueError, match="class ids.*categorical.*to_categorical"):
        v.class_labels(ids, "y", 3, "one_hot")
    with pytest.raises(ValueError, match="strings.*np.unique"):
        v.class_labels(np.array(["cat", "dog", "cat"]), "y", 3)
    with pytest.raises(ValueError, match=r"fractional class ids \[0.5\]"):
        v.class_labels(np.array([0.0, 0.5, 1.0]), "y", 3)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\].*3 outputs"):
        v.class_labels(np.array([0, 3]), "y", 3)
    with pytest.raises(ValueError, match="non-finite"):
        v.class_labels(np.array([0.0, np.nan]), "y", 3)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        v.class_labels(one_hot * 2, "y", 3)


def test_unreachable_target_is_a_value_error():
    assert issubclass(v.UnreachableTarget, ValueError)
