"""Latency lookup tables: milliseconds of each layer at the channel counts it can take (numpy only).

A `LatencyTable` holds, for every **signature** (what a layer computes apart
from its channel counts: its class, kernel, strides, padding, input size...),
a grid of measured milliseconds per batch-1 invocation over input and output
channel counts; every layer of the model names its signature, so the many
identical convolutions of a ResNet stage share one row. A layer's time at any
channel counts is read from its grid (clamped to the grid's ends): along an
axis whose cost grows **in steps** it is the time of the smallest measured
count at or above it, along the others it is interpolated linearly.

Why steps: LiteRT's CPU kernels (XNNPack) compute output channels in tiles
of 8, 16 or 32 (the SIMD width), so a convolution with 17 to 32 output
channels costs what one with 32 costs. Measured on this project's x86 host
(AVX-512), a 3x3 convolution on 16x16x32 inputs took 0.023 ms for 1-16
outputs, 0.045 ms for 17-32 and 0.091 ms for 33-64; its cost in *input*
channels grew linearly (0.0014 ms per channel); a depthwise convolution grew
in steps of 16 channels. Linear interpolation between a few grid points
predicts savings that a cut to a count between two tiles never gives, and a
search that trusts it lands above its budget. So the output side of a
convolution (and the channel side of a depthwise one) is measured at every
multiple of ``channel_step`` (`step_grid`) and read as a step.

The rest of the model (element-wise layers, pooling, the interpreter's own
overhead) is not timed layer by layer; it is modelled as ``base_ms +
elementwise_ms * share + weights_ms * weight_share``, where ``share`` is the
fraction of the dense model's element-wise activations that are kept and
``weight_share`` the fraction of its timed layers' weights, and the three
numbers are calibrated on whole-model timings (`calibrate_remainder`). The
prediction for a model is the sum of its layers' times plus that remainder.

Why a weight term: a one-layer model invoked again and again keeps its
weights in the CPU's caches; inside the whole model (a few MB of weights)
each layer reads them from further away. Measured on this project's VGG
w0.25 (0.93 M parameters), global channel pruning at 50% of MACs ran at 0.381x
of the dense model; without the term the table predicted 0.549x, with it
0.393x (``benchmarks/latency_table_error.py``). Cuts of early,
activation-heavy layers were over-credited by the old fit (the element-wise
term soaked up the weights' share on uniformly pruned calibration models,
where the two fall together); a calibration model pruned for parameters
tells them apart.

Units: milliseconds per invocation at batch 1; channel counts are counts
(kept), not fractions.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LayerTiming", "LatencyTable", "interpolate", "calibrate_remainder", "channel_grid", "step_grid", "monotone", "FORMAT"]

#: The ``format`` field of a table file: bumped when the layout changes (``/1`` files, all axes linear, and ``/2`` files, no
#: weight term, are still read).
FORMAT = "tfprune-latency-table/3"
_READABLE = ("tfprune-latency-table/1", "tfprune-latency-table/2", FORMAT)


def channel_grid(n: int, points: int) -> np.ndarray:
    """Up to ``points`` channel counts from about ``n / points`` to ``n`` (ascending, distinct, each at least 1). Shape ``(k,)``, int."""
    if n < 1 or points < 1:
        raise ValueError(f"channel_grid needs n >= 1 and points >= 1, got n={n}, points={points}")
    counts = {max(1, int(round(n * (i + 1) / points))) for i in range(points)}
    return np.asarray(sorted(counts | {n}), dtype=np.int64)


def step_grid(n: int, step: int, max_points: int = 16) -> np.ndarray:
    """Every multiple of ``step`` below ``n``, and ``n`` (ascending, int, shape ``(k,)``); the step grows by multiples of
    ``step`` until at most ``max_points`` counts remain (so wide layers stay cheap to time)."""
    if n < 1 or step < 1 or max_points < 1:
        raise ValueError(f"step_grid needs n, step and max_points >= 1, got n={n}, step={step}, max_points={max_points}")
    stride = step
    while (n - 1) // stride + 1 > max_points:
        stride += step
    return np.asarray(sorted(set(range(stride, n, stride)) | {n}), dtype=np.int64)


def interpolate(grid_in: np.ndarray, grid_out: np.ndarray, ms: np.ndarray, n_in: float, n_out: float, *, step_in: bool = False,
                step_out: bool = False) -> float:
    """``ms`` (shape ``(len(grid_in), len(grid_out))``) read at ``(n_in, n_out)``, clamped to the grid.

    Along an axis with ``step_*`` True the value is the one of the smallest grid count at or above the request (a cost that
    grows in steps, measured at every step); along the others it is interpolated linearly (bilinear over both). A grid of one
    point along an axis is constant along it.
    """
    grid_in, grid_out, ms = np.asarray(grid_in, float), np.asarray(grid_out, float), np.asarray(ms, float)
    if ms.shape != (grid_in.size, grid_out.size):
        raise ValueError(f"ms has shape {ms.shape}, expected {(grid_in.size, grid_out.size)}")

    def bracket(grid: np.ndarray, v: float, step: bool) -> tuple[int, int, float]:
        v = min(max(float(v), grid[0]), grid[-1])
        hi = int(np.searchsorted(grid, v - 1e-9 if step else v))
        if hi == 0 or step:
            return hi, hi, 0.0
        lo = hi - 1
        return lo, hi, (v - grid[lo]) / (grid[hi] - grid[lo])

    i0, i1, ti = bracket(grid_in, n_in, step_in)
    j0, j1, tj = bracket(grid_out, n_out, step_out)
    top = ms[i0, j0] * (1 - tj) + ms[i0, j1] * tj
    bottom = ms[i1, j0] * (1 - tj) + ms[i1, j1] * tj
    return float(top * (1 - ti) + bottom * ti)


def calibrate_remainder(measured: list[float], layer_sums: list[float], shares: list[float],
                        weight_shares: list[float] | None = None, signed: tuple[str, ...] = ()) -> tuple[float, float, float]:
    """``(base_ms, elementwise_ms, weights_ms)``: least squares of ``measured - layer_sums = base + elementwise * share +
    weights * weight_share`` with ``elementwise >= 0`` and ``weights >= 0``.

    ``measured``: whole-model milliseconds of a few variants of the model (the
    dense one first); ``layer_sums``: the table's sum over their layers;
    ``shares`` / ``weight_shares``: the fraction of the dense model's
    element-wise activations / timed layers' weights each keeps (None: the
    weight term is not fitted). A term whose share does not vary across the
    variants, or that the variants are too few to fit, is left out (0), and a
    term whose best fit is negative (less work never costs more) is dropped
    and the rest refitted; of the fits that remain, the one with the smallest
    squared error is kept. ``base`` may be negative: one-layer models time a
    little more than the same layer inside a model (their own input and output
    copies), and the fit corrects that bias. ``signed`` names terms
    (``"elementwise"``, ``"weights"``) allowed to be negative too: those
    copies scale with the activations, so a negative element-wise term can
    stand for them (compared on held-out models by
    ``benchmarks/latency_table_error.py``; `build_table` keeps both terms
    non-negative).
    """
    signed = (signed,) if isinstance(signed, str) else tuple(signed)
    unknown = set(signed) - {"elementwise", "weights"}
    if unknown:
        raise ValueError(f"signed: unknown terms {sorted(unknown)}. Fix: name 'elementwise' and/or 'weights'")
    r = np.asarray(measured, float) - np.asarray(layer_sums, float)
    if r.size == 0:
        return 0.0, 0.0, 0.0
    columns = {"elementwise": np.asarray(shares, float)}
    if weight_shares is not None:
        columns["weights"] = np.asarray(weight_shares, float)
    for name, col in columns.items():
        if col.shape != r.shape:
            raise ValueError(f"{name} shares: {col.size} values for {r.size} measured variants")
    usable = [n for n, c in columns.items() if np.ptp(c) >= 1e-6]
    best: tuple[float, dict[str, float]] = (float(np.sum((r - r.mean()) ** 2)), {"base": float(r.mean())})
    for k in range(1, len(usable) + 1):
        for terms in itertools.combinations(usable, k):
            if r.size <= k:  # as many unknowns (with base) as variants or more: not a fit
                continue
            a = np.column_stack([np.ones_like(r)] + [columns[t] for t in terms])
            coef, *_ = np.linalg.lstsq(a, r, rcond=None)
            if any(c < 0 and t not in signed for t, c in zip(terms, coef[1:])):
                continue
            err = float(np.sum((a @ coef - r) ** 2))
            if err < best[0] - 1e-15:
                best = (err, {"base": float(coef[0]), **{t: float(c) for t, c in zip(terms, coef[1:])}})
    fit = best[1]
    return fit["base"], fit.get("elementwise", 0.0), fit.get("weights", 0.0)


def speed_factor(fresh_ms: Sequence[float], cached_ms: Sequence[float]) -> float:
    """How much slower (> 1) or faster (< 1) the machine runs now than when cached layer timings were taken: the sum of
    ``fresh_ms`` (the cached layers timed again now, one point each) over the sum of ``cached_ms`` (the cache's times at
    the same points). 1.0 when the cache holds no time to compare (all zero).

    Whole-model calibration timings are always taken now; cached layers from another sitting scale with the machine's
    speed of that time, and an additive remainder cannot absorb a multiplicative change (it would shift every predicted
    ratio). Multiplying the cached times by this factor puts layers and calibration on one clock.
    """
    fresh, cached = np.asarray(fresh_ms, float), np.asarray(cached_ms, float)
    if fresh.shape != cached.shape:
        raise ValueError(f"fresh_ms has {fresh.size} times, cached_ms {cached.size}: one of each per re-timed layer")
    if not (np.all(np.isfinite(fresh)) and np.all(np.isfinite(cached))) or np.any(fresh < 0) or np.any(cached < 0):
        raise ValueError("fresh_ms and cached_ms must be finite times >= 0")
    total = float(cached.sum())
    return float(fresh.sum()) / total if total > 0 and fresh.sum() > 0 else 1.0


@dataclass
class LayerTiming:
    """Measured milliseconds of one signature over a grid of channel counts.

    Attributes:
      grid_in: input channel counts, ascending, shape ``(a,)``.
      grid_out: output channel counts, ascending, shape ``(b,)`` (a depthwise
        layer, whose outputs follow its inputs, has ``grid_out == [1]``).
      ms: milliseconds per batch-1 invocation, shape ``(a, b)``.
      description: what was timed (human-readable).
      step_in, step_out: whether the cost grows in steps along that axis (read as the next measured count up, not
        interpolated; see the module docstring).
    """

    grid_in: np.ndarray
    grid_out: np.ndarray
    ms: np.ndarray
    description: str = ""
    step_in: bool = False
    step_out: bool = False

    def __post_init__(self) -> None:
        self.grid_in = np.asarray(self.grid_in, dtype=np.int64)
        self.grid_out = np.asarray(self.grid_out, dtype=np.int64)
        self.ms = np.asarray(self.ms, dtype=np.float64)
        if self.ms.shape != (self.grid_in.size, self.grid_out.size):
            raise ValueError(f"ms has shape {self.ms.shape}, expected {(self.grid_in.size, self.grid_out.size)} (grid_in x grid_out)")
        for name, g in (("grid_in", self.grid_in), ("grid_out", self.grid_out)):
            if g.size == 0 or np.any(g < 1) or np.any(np.diff(g) <= 0):
                raise ValueError(f"{name} must be ascending channel counts >= 1, got {g.tolist()}")
        if not np.all(np.isfinite(self.ms)) or np.any(self.ms < 0):
            raise ValueError("ms must hold finite times >= 0")

    def at(self, n_in: float, n_out: float) -> float:
        """Milliseconds at ``n_in`` input and ``n_out`` output channels (read as `interpolate` does, clamped to the grid)."""
        return interpolate(self.grid_in, self.grid_out, self.ms, n_in, n_out, step_in=self.step_in, step_out=self.step_out)

    def to_dict(self) -> dict[str, Any]:
        return {"grid_in": self.grid_in.tolist(), "grid_out": self.grid_out.tolist(), "ms": self.ms.tolist(), "description": self.description,
                "step_in": bool(self.step_in), "step_out": bool(self.step_out)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerTiming:
        return cls(np.asarray(d["grid_in"]), np.asarray(d["grid_out"]), np.asarray(d["ms"]), str(d.get("description", "")),
                   bool(d.get("step_in", False)), bool(d.get("step_out", False)))


def monotone(ms: np.ndarray) -> np.ndarray:
    """``ms`` made non-decreasing along both axes (a running maximum): timing noise never makes more channels cheaper. Same shape."""
    return np.maximum.accumulate(np.maximum.accumulate(np.asarray(ms, float), axis=0), axis=1)


@dataclass
class LatencyTable:
    """Per-layer latency of one model on one device, and the model's latency predicted from it.

    Attributes:
      timings: signature -> `LayerTiming`.
      layers: layer name -> ``(signature, dense input channels, dense output channels)``.
      base_ms, elementwise_ms, weights_ms: the remainder ``base_ms + elementwise_ms * share + weights_ms * weight_share`` (see
        the module docstring; ``base_ms`` may be negative, a correction of the one-layer timings' bias).
      device: where it was measured (``"host"``: ai-edge-litert on this machine, or a free text for imported tables).
      threads: interpreter threads.
      runtime: the interpreter's runtime (``"xnnpack"``...).
      model: the name of the model it was built for.
      notes: how it was built (grid, rounds, calibration variants and their errors).
      elementwise_elements: the dense model's element-wise activations (entries per example) that ``share`` is a fraction of
        (0: the model's own, read from its graph).
      weight_elements: the dense model's weights in timed layers (count) that ``weight_share`` is a fraction of (0: the
        model's own).
    """

    timings: dict[str, LayerTiming]
    layers: dict[str, tuple[str, int, int]]
    base_ms: float = 0.0
    elementwise_ms: float = 0.0
    device: str = "host"
    threads: int = 1
    runtime: str = ""
    model: str = ""
    notes: list[str] = field(default_factory=list)
    elementwise_elements: float = 0.0
    weights_ms: float = 0.0
    weight_elements: float = 0.0

    def __post_init__(self) -> None:
        missing = sorted({sig for sig, _, _ in self.layers.values()} - set(self.timings))
        if missing:
            raise ValueError(f"layers name signatures the table does not time: {missing[:3]}")
        if not math.isfinite(float(self.base_ms)):
            raise ValueError(f"base_ms must be a finite number, got {self.base_ms!r}")
        for name in ("elementwise_ms", "weights_ms"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")

    def layer_ms(self, name: str, n_in: float | None = None, n_out: float | None = None) -> float:
        """Milliseconds of layer ``name`` at ``n_in`` / ``n_out`` channels (default: its dense counts; 0 channels: the layer is gone, 0 ms)."""
        if name not in self.layers:
            raise KeyError(f"layer {name!r} is not in the latency table (built for model {self.model!r}). Fix: build the table for this model")
        sig, dense_in, dense_out = self.layers[name]
        n_in = dense_in if n_in is None else n_in
        n_out = dense_out if n_out is None else n_out
        if n_in <= 0 or n_out <= 0:
            return 0.0
        return self.timings[sig].at(n_in, n_out)

    def predict(self, channels: Mapping[str, tuple[float, float]] | None = None, share: float = 1.0, weight_share: float = 1.0) -> float:
        """Milliseconds of the model with ``channels`` (layer -> (input, output) channels kept; absent layers dense), ``share``
        of its element-wise activations and ``weight_share`` of its timed layers' weights kept (fractions)."""
        channels = dict(channels or {})
        unknown = sorted(set(channels) - set(self.layers))
        if unknown:
            raise KeyError(f"layers not in the latency table: {unknown[:5]}")
        total = sum(self.layer_ms(n, *channels.get(n, (None, None))) for n in self.layers)
        return max(float(total + self.remainder(share, weight_share)), 0.0)

    def remainder(self, share: float = 1.0, weight_share: float = 1.0) -> float:
        """Milliseconds of what is not timed layer by layer: ``base_ms + elementwise_ms * share + weights_ms * weight_share``."""
        return float(self.base_ms + self.elementwise_ms * float(share) + self.weights_ms * float(weight_share))

    @property
    def dense_ms(self) -> float:
        """The prediction for the dense model."""
        return self.predict()

    # ----------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "device": self.device, "threads": int(self.threads), "runtime": self.runtime,
                "base_ms": float(self.base_ms), "elementwise_ms": float(self.elementwise_ms), "notes": list(self.notes),
                "elementwise_elements": float(self.elementwise_elements), "weights_ms": float(self.weights_ms),
                "weight_elements": float(self.weight_elements),
                "layers": {n: [s, int(i), int(o)] for n, (s, i, o) in self.layers.items()},
                "timings": {s: t.to_dict() for s, t in self.timings.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        if not isinstance(d, Mapping) or d.get("format") not in _READABLE:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(f"not a tfprune latency table: format {got!r}, expected {FORMAT!r}. Fix: build one with "
                             "tfprune.latency.build_table, or write the format docs/guide/latency.md describes")
        try:
            timings = {s: LayerTiming.from_dict(t) for s, t in d["timings"].items()}
            layers = {str(n): (str(v[0]), int(v[1]), int(v[2])) for n, v in d["layers"].items()}
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"latency table is missing a field or has a wrong one ({err!r}). Fix: see docs/guide/latency.md") from None
        return cls(timings=timings, layers=layers, base_ms=float(d.get("base_ms", 0.0)), elementwise_ms=float(d.get("elementwise_ms", 0.0)),
                   device=str(d.get("device", "")), threads=int(d.get("threads", 1)), runtime=str(d.get("runtime", "")),
                   model=str(d.get("model", "")), notes=[str(n) for n in d.get("notes", [])],
                   elementwise_elements=float(d.get("elementwise_elements", 0.0)), weights_ms=float(d.get("weights_ms", 0.0)),
                   weight_elements=float(d.get("weight_elements", 0.0)))

    def save(self, path: str) -> None:
        """Write the table as JSON (atomically)."""
        from tfprune.files import atomic_write

        with atomic_write(str(path), "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> LatencyTable:
        """Read a table written by `save` (or by hand in the same format)."""
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"latency table {path!r} is not JSON ({err}). Fix: pass a file written by LatencyTable.save") from None
        return cls.from_dict(d)
