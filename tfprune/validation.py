"""Argument checks at tfprune's boundary: one module, numpy only, used by every entry point.

Each check returns the value in its canonical type (a float, an int, a dict,
an int array) or raises ``ValueError`` (``TypeError`` for a value of the wrong
kind) whose message names the argument, shows the value, and says the fix.
Nothing here guesses: NaN, inf, negative or fractional values are refused
where they have no meaning, never clipped or rounded.

Units, as everywhere in tfprune: a *sparsity* is the fraction of weights
removed (0 = dense); ``macs=``/``params=`` are fractions of MACs/parameters
removed; a *keep* fraction is ``1 - sparsity``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np

__all__ = [
    "number",
    "fraction",
    "one_of",
    "flag",
    "check_sparsity",
    "check_int",
    "fraction_map",
    "schedule_values",
    "positive_scores",
    "channel_indices",
    "finite_array",
    "finite_weights",
    "finite_data",
    "class_labels",
    "UnreachableTarget",
]


class UnreachableTarget(ValueError):
    """A budget (sparsity, MACs or parameters) that no plan can reach under the given bounds."""


def _real(value: Any, name: str, what: str) -> float:
    """``value`` as a float when it is a real number (not a bool, not a string); TypeError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim != 0):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__}). Fix: pass a plain number")
    return float(value)


def number(value: Any, name: str, *, minimum: float | None = None, strict: bool = False, maximum: float | None = None, what: str = "a finite number") -> float:
    """``value`` as a finite float, optionally ``>= minimum`` (``> minimum`` with ``strict``) and ``<= maximum``.

    For thresholds, tolerances, temperatures and rates: ``number(t, "temperature", minimum=0, strict=True)``.
    """
    v = _real(value, name, what)
    low_ok = minimum is None or (v > minimum if strict else v >= minimum)
    if not math.isfinite(v) or not low_ok or (maximum is not None and v > maximum):
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if strict else '>='} {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        rng = " and ".join(bounds)
        raise ValueError(f"{name} must be {what}{' ' + rng if rng else ''}, got {value!r}. Fix: pass a finite value{' ' + rng if rng else ''}")
    return v


def fraction(value: Any, name: str, *, unit: str = "fraction of weights removed", low: float = 0.0, high: float = 1.0,
             include_low: bool = True, include_high: bool = False, example: str = "0.9 removes 90%") -> float:
    """``value`` as a float in the interval ``[low, high)`` (ends set by ``include_low``/``include_high``); ValueError naming ``name`` otherwise."""
    interval = f"{'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"
    v = _real(value, name, f"a number in {interval} ({unit})")
    ok = math.isfinite(v) and (v >= low if include_low else v > low) and (v <= high if include_high else v < high)
    if not ok:
        raise ValueError(f"{name} must be in {interval} ({unit}), got {value!r}. Fix: pass e.g. {example}")
    return v


def check_sparsity(value: Any, name: str) -> float:
    """``value`` as a sparsity (fraction of weights removed) in [0, 1); ValueError naming the argument ``name`` otherwise."""
    try:
        return fraction(value, name, example="0.9 (90% of the weights become zero; 1.0 would remove every weight)")
    except TypeError as err:
        raise ValueError(str(err)) from None


def check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` (int, integral float or numpy integer, not bool) as an int in ``[minimum, maximum]``; ValueError naming ``name`` otherwise."""
    ok_type = not isinstance(value, bool) and (
        isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer())
    )
    rng = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if not ok_type:
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}. Fix: pass a whole number")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}. Fix: pass a whole number {rng}")
    return v


def one_of(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """``value`` when it is one of ``choices``; ValueError listing them otherwise."""
    options = list(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}. Fix: pass one of those")
    return value


def flag(value: Any, name: str, allow_none: bool = False) -> bool | None:
    """``value`` as a bool (True/False, or None with ``allow_none``); a string such as 'yes' or a number is refused."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}. Fix: pass a bool")
    return bool(value)


def fraction_map(mapping: Any, name: str, known: Iterable[str] | None = None, *, allow_empty: bool = False, **fraction_kwargs: Any) -> dict[str, float]:
    """A per-layer dict ``{layer name: fraction}`` checked key by key.

    ``known``: the names the keys must come from (an unknown key is an error
    listing them). An empty dict is refused unless ``allow_empty``: it would
    change nothing, which is never what a caller who passed one meant.
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name} must be a dict {{layer name: fraction}}, got {type(mapping).__name__}. Fix: e.g. {name}={{'dense': 0.8}}")
    if not mapping and not allow_empty:
        names = sorted(known) if known is not None else []
        raise ValueError(f"{name}={{}} names no layer, so nothing would change. Fix: give at least one layer{f' of {names}' if names else ''}")
    if known is not None:
        known = list(known)
        unknown = [k for k in mapping if k not in known]
        if unknown:
            raise ValueError(f"{name} names unknown layer(s) {unknown}. Fix: use names from {known}")
    out = {}
    for k, v in mapping.items():
        try:
            out[k] = fraction(v, f"{name}[{k!r}]", **fraction_kwargs)
        except TypeError as err:
            raise ValueError(str(err)) from None
    return out


def positive_scores(scores: Mapping[str, Any], name: str = "importance") -> dict[str, float]:
    """Importance scores ``{owner: score}`` as floats, each finite and > 0 (higher = keep more)."""
    out = {}
    for k, v in scores.items():
        try:
            f = _real(v, f"{name}[{k!r}]", "a number")
        except TypeError:
            f = float("nan")
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"{name}[{k!r}] = {v!r}: importance scores must be finite and > 0 (higher = keep more). "
                             "Fix: give every layer a positive number, e.g. tfprune.score_layers(model).scores")
        out[k] = f
    return out


def channel_indices(values: Any, name: str, size: int) -> np.ndarray:
    """Channel indices as a sorted int64 array: integers in ``[0, size)``, no repeats.

    A fractional value (0.5) is refused, not truncated to channel 0; so are
    booleans (pass the indices, e.g. ``np.flatnonzero(mask)``).
    """
    arr = np.asarray(values if not isinstance(values, (set, frozenset)) else sorted(values))
    if arr.ndim > 1:
        raise ValueError(f"{name}: channel indices must be a flat list of integers, got an array of shape {arr.shape}. Fix: pass e.g. [0, 3]")
    arr = arr.reshape(-1)
    if arr.dtype == bool:
        raise ValueError(f"{name}: got booleans {arr.tolist()[:8]}; channel indices must be integers. Fix: pass np.flatnonzero(mask)")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_float = arr.astype(np.float64) if np.issubdtype(arr.dtype, np.number) else None
        if as_float is None or not np.isfinite(as_float).all() or not (as_float == np.round(as_float)).all():
            bad = [v for v in arr.tolist() if not (isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v).is_integer())][:4]
            raise ValueError(f"{name}: channel indices must be integers in [0, {size}), got {bad}. "
                             "Fix: pass channel numbers (0 = the first channel), not fractions")
        arr = as_float
    idx = arr.astype(np.int64)
    out = [int(i) for i in idx if i < 0 or i >= size]
    if out:
        raise ValueError(f"{name}: channel indices {out[:8]} are out of range: the layer has {size} channels (0..{size - 1}). Fix: pass indices 0..{size - 1}")
    uniq = np.unique(idx)
    if uniq.size != idx.size:
        raise ValueError(f"{name}: channel indices repeat ({sorted(set(i for i in idx.tolist() if idx.tolist().count(i) > 1))}). Fix: list each channel once")
    return uniq


def finite_array(x: Any, name: str, fix: str = "drop or repair those samples") -> np.ndarray:
    """``x`` as a numpy array whose entries are all finite; ValueError counting the non-finite ones otherwise."""
    arr = np.asarray(x)
    if arr.dtype.kind in "USO":
        raise ValueError(f"{name} holds {'strings' if arr.dtype.kind in 'US' else 'Python objects'} ({arr.reshape(-1)[:3].tolist()} ...), "
                         "not numbers. Fix: pass numeric arrays (decode images, map classes to integers)")
    if arr.dtype.kind not in "biuf":
        return arr
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf) of {arr.size}. Fix: {fix}")
    return arr


def finite_weights(weights: Mapping[str, Any], what: str) -> None:
    """Refuse layer weights ``{layer name: array}`` holding NaN/inf: every score, plan or mask computed from them is meaningless."""
    bad = {}
    for name, w in weights.items():
        arr = np.asarray(w)
        if arr.dtype.kind == "f":
            n = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if n:
                bad[name] = n
    if bad:
        raise ValueError(f"{what}: the weights of layer(s) {bad} (layer: count) are NaN or inf, so scores and masks computed from "
                         "them mean nothing. Fix: train or load a model whose weights are finite (a NaN usually comes from a diverged "
                         "step: lower the learning rate or clip gradients)")


def finite_data(data: Any, name: str) -> None:
    """Refuse numpy calibration data (an array, or a tuple/list/dict of them) with NaN/inf; streams pass unchecked."""
    parts = list(data.values()) if isinstance(data, Mapping) else list(data) if isinstance(data, (tuple, list)) else [data]
    for i, part in enumerate(parts):
        if isinstance(part, (tuple, list, Mapping)):
            finite_data(part, f"{name}[{i}]")
        elif isinstance(part, np.ndarray):
            finite_array(part, name if len(parts) == 1 else f"{name}[{i}]", "drop or repair those samples before scoring")


def class_labels(y: Any, name: str, n_classes: int, form: str | None = None) -> np.ndarray:
    """Check classification labels ``y`` for a model with ``n_classes`` output units.

    ``form``: ``"sparse"`` (class ids, shape (n,) or (n, 1)), ``"one_hot"``
    (shape (n, n_classes)), or None (either, read from the shape). Refused:
    strings, NaN/inf, fractional class ids, ids outside ``[0, n_classes)``,
    one-hot rows given to a sparse loss and class ids given to a one-hot loss.
    Returns the labels unchanged (as a numpy array).
    """
    arr = np.asarray(y)
    if arr.dtype.kind in "USO":
        sample = arr.reshape(-1)[:3].tolist()
        raise ValueError(f"{name} are strings/objects ({sample} ...), not class numbers. "
                         "Fix: map the classes to integers 0..n-1, e.g. classes, y = np.unique(y, return_inverse=True)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} have dtype {arr.dtype}; classification labels must be integers (or one-hot floats)")
    finite_array(arr, name, "remove the samples whose label is NaN/inf")
    one_hot_shape = arr.ndim >= 2 and arr.shape[-1] == n_classes and n_classes > 1
    if form == "sparse" and one_hot_shape:
        raise ValueError(f"{name} have shape {arr.shape} (one-hot rows) but the loss is sparse (it reads class ids). "
                         f"Fix: pass np.argmax({name}, -1), or use a categorical (one-hot) loss")
    if form == "one_hot" and not one_hot_shape:
        raise ValueError(f"{name} have shape {arr.shape} (class ids) but the loss is categorical (it reads one-hot rows of {n_classes}). "
                         f"Fix: pass keras.utils.to_categorical({name}, {n_classes}), or use a sparse loss")
    if one_hot_shape or n_classes <= 1:  # one-hot / soft rows, or a binary output: values are probabilities
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{name}: one-hot or binary labels must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]. Fix: pass 0/1 "
                             "targets for a sigmoid output (a softmax output with one unit per class takes class ids)")
        return arr
    ids = arr.reshape(len(arr), -1) if arr.ndim >= 2 else arr
    if ids.ndim == 2 and ids.shape[1] != 1:
        raise ValueError(f"{name} have shape {arr.shape}; expected class ids (n,) or (n, 1), or one-hot rows (n, {n_classes})")
    flat = ids.reshape(-1)
    if flat.dtype.kind == "f" and flat.size and not (flat == np.round(flat)).all():
        bad = flat[flat != np.round(flat)][:3].tolist()
        raise ValueError(f"{name} hold fractional class ids {bad}; class ids are integers 0..{n_classes - 1}. "
                         "Fix: pass integer labels (soft labels need one-hot rows and a categorical loss)")
    if flat.size and (flat.min() < 0 or flat.max() >= n_classes):
        raise ValueError(f"{name} hold class ids in [{flat.min():g}, {flat.max():g}] but the model has {n_classes} outputs (ids 0..{n_classes - 1}). "
                         "Fix: relabel to 0..n-1, or give the model one output per class")
    return arr


def schedule_values(target_sparsity: Any, begin_step: Any, end_step: Any, frequency: Any, initial_sparsity: Any, power: Any) -> dict:
    """A pruning ramp's values, checked as a whole (`tfprune.LayerwiseSchedule` and the Keras 3 wrapper's schedule).

    Sparsities are fractions removed in [0, 1); steps are ints >= 0 with
    ``end_step >= begin_step``; ``frequency`` >= 1; ``power`` > 0.
    """
    out = {
        "target_sparsity": check_sparsity(target_sparsity, "target_sparsity"),
        "initial_sparsity": check_sparsity(initial_sparsity, "initial_sparsity"),
        "begin_step": check_int(begin_step, "begin_step", 0),
        "end_step": check_int(end_step, "end_step", 0),
        "frequency": check_int(frequency, "frequency", 1),
    }
    if out["end_step"] < out["begin_step"]:
        raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step}). Fix: pass an end_step after begin_step")
    try:
        out["power"] = number(power, "power", minimum=0.0, strict=True, what="the ramp's exponent, a finite number (3 is usual)")
    except TypeError as err:
        raise ValueError(str(err)) from None
    return out
