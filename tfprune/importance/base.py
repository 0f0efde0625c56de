"""Registry of layer-importance scorers.

A scorer maps the prunable layers of a model to one positive number per
layer: **higher = more important = keep more of it**. Data-free scorers read
only the kernels; data-driven ones get calibration data. A new scorer is one
module that decorates ``fn(context) -> np.ndarray (L,)`` with
``@register_importance("name", needs_data=...)`` and is imported in
``tfprune/importance/__init__.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = [
    "ImportanceContext",
    "ImportanceScores",
    "register_importance",
    "get_importance",
    "list_importance",
    "score_layers",
    "kernel_matrix",
]


def kernel_matrix(kernel: np.ndarray, layer_type: str = "") -> np.ndarray:
    """Reshape a kernel to (fan_in, fan_out).

    Dense (F, O) stays; Conv (kh, kw, c_in, c_out) -> (kh*kw*c_in, c_out);
    ConvTranspose (kh, kw, c_out, c_in) -> (kh*kw*c_in, c_out); Embedding
    (vocab, dim) -> (vocab, dim).
    """
    k = np.asarray(kernel)
    if k.ndim == 1:
        return k[:, None]
    if "Transpose" in layer_type:
        k = np.swapaxes(k, -1, -2)
    return k.reshape(-1, k.shape[-1])


@dataclass
class ImportanceContext:
    """What a scorer sees: names, kernels (masked, numpy), shapes, and optional model/data."""

    names: list[str]
    kernels: list[np.ndarray]
    layer_types: list[str]
    model: Any = None
    data: Any = None
    layers: Any = None
    options: dict = field(default_factory=dict)

    def matrices(self) -> list[np.ndarray]:
        return [kernel_matrix(k, t) for k, t in zip(self.kernels, self.layer_types)]


@dataclass
class ImportanceScores:
    """Per-layer importance (higher = keep more) and how long it took."""

    method: str
    scores: dict[str, float]
    seconds: float
    details: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.scores[name]

    def as_array(self, names: list[str]) -> np.ndarray:
        return np.array([self.scores[n] for n in names])


ScorerFn = Callable[[ImportanceContext], np.ndarray]
_SCORERS: dict[str, tuple[ScorerFn, bool, str]] = {}
_ALIASES: dict[str, str] = {}


def register_importance(name: str, needs_data: bool = False, doc: str = "") -> Callable[[ScorerFn], ScorerFn]:
    """Decorator registering a scorer under ``name``."""

    def deco(fn: ScorerFn) -> ScorerFn:
        _SCORERS[name] = (fn, needs_data, doc or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def register_alias(alias: str, target: str) -> None:
    _ALIASES[alias] = target


def resolve(name: str) -> str:
    return _ALIASES.get(name, name)


def get_importance(name: str) -> tuple[ScorerFn, bool]:
    real = resolve(name)
    if real not in _SCORERS:
        raise ValueError(f"unknown importance method {name!r}; available: {list_importance()}")
    fn, needs_data, _ = _SCORERS[real]
    return fn, needs_data


def list_importance() -> list[str]:
    return sorted(set(_SCORERS) | set(_ALIASES))


def needs_data(name: str) -> bool:
    return get_importance(name)[1]


def score_layers(model_or_layers: Any, importance: str = "capacity", data: Any = None, **options: Any) -> ImportanceScores:
    """Score every prunable layer of a model.

    Args:
      model_or_layers: a tf-keras model (wrapped or not) or its ``prunable_layers``.
      importance: a registered scorer (`list_importance`); ``capacity`` is the default alias.
      data: calibration data ``(x, y)`` for data-driven scorers.
      **options: passed to the scorer.
    """
    from tfprune.inventory.layers import LayerInventory, prunable_layers

    fn, wants_data = get_importance(importance)
    if isinstance(model_or_layers, LayerInventory) or isinstance(model_or_layers, list):
        layers, model = list(model_or_layers), None
    else:
        model = model_or_layers
        layers = list(prunable_layers(model))
    if wants_data and data is None:
        raise ValueError(f"importance {importance!r} needs calibration data: pass data=(x, y)")
    if wants_data and model is None:
        raise ValueError(f"importance {importance!r} needs the model, not only its layers")
    t0 = time.perf_counter()
    ctx = ImportanceContext(
        names=[p.name for p in layers],
        kernels=[p.kernel() for p in layers],
        layer_types=[p.layer_type for p in layers],
        model=model,
        data=data,
        layers=layers,
        options=dict(options),
    )
    raw = np.asarray(fn(ctx), dtype=np.float64)
    seconds = time.perf_counter() - t0
    if raw.shape != (len(layers),) or not np.isfinite(raw).all() or (raw < 0).any():
        raise RuntimeError(f"scorer {importance!r} returned invalid scores {raw.tolist()}")
    return ImportanceScores(resolve(importance), dict(zip(ctx.names, raw.tolist())), seconds, dict(ctx.options.get("_details", {})))
