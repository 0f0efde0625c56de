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

from tfprune.validation import finite_data, finite_weights

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


ScorerFn = Callable[..., Any]
#: What a scorer scores: one number per prunable ``"layer"``, or one per channel of every coupled ``"channel"`` group.
KINDS = ("layer", "channel")


@dataclass(frozen=True)
class Scorer:
    """One registered importance scorer.

    Attributes:
      name: its registered name (one name, one idea: ``"obs"`` is the second-order error
        of removing weights of a layer and of removing a channel of a group).
      scores: ``"layer"`` (``fn(ctx: ImportanceContext) -> (L,)``) or ``"channel"``
        (``fn(ctx: tfprune.structured.importance.ChannelContext) -> {group: (C_g,)}``).
      needs_data: it reads calibration data.
      doc: one line.
    """

    name: str
    scores: str
    fn: ScorerFn
    needs_data: bool
    doc: str


_SCORERS: dict[tuple[str, str], Scorer] = {}
_ALIASES: dict[str, str] = {}


def _check_kind(scores: str) -> str:
    if scores not in KINDS:
        raise ValueError(f"scores must be one of {KINDS} (what the scorer gives a number to), got {scores!r}. Fix: pass 'layer' or 'channel'")
    return scores


def register_importance(name: str, needs_data: bool = False, doc: str = "", scores: str = "layer") -> Callable[[ScorerFn], ScorerFn]:
    """Decorator registering a scorer under ``name`` in the one importance registry.

    ``scores="layer"``: ``fn(ctx: ImportanceContext) -> np.ndarray (L,)``, higher = keep more;
    ``scores="channel"``: ``fn(ctx: ChannelContext) -> {group name: (channels,) scores}``
    (`tfprune.structured.importance`; `register_channel_importance` builds magnitude ones).
    """
    _check_kind(scores)

    def deco(fn: ScorerFn) -> ScorerFn:
        _SCORERS[(name, scores)] = Scorer(name, scores, fn, bool(needs_data), doc or (getattr(fn, "__doc__", "") or "").strip().split("\n")[0])
        return fn

    return deco


def unregister_importance(name: str, scores: str = "layer") -> None:
    """Remove scorer ``name`` of kind ``scores`` from the registry (nothing happens when it is not there)."""
    _SCORERS.pop((name, _check_kind(scores)), None)


def register_alias(alias: str, target: str) -> None:
    _ALIASES[alias] = target


def resolve(name: str) -> str:
    return _ALIASES.get(name, name)


def get_scorer(name: str, scores: str = "layer") -> Scorer:
    """The registered `Scorer` ``name`` of kind ``scores``; a clear error naming the valid ones otherwise."""
    _check_kind(scores)
    real = resolve(name) if isinstance(name, str) else name
    if (real, scores) not in _SCORERS:
        what = "importance method" if scores == "layer" else "channel importance"
        raise ValueError(f"unknown {what} {name!r}; available: {list_importance(scores)}. Fix: pass one of those"
                         + (" (channel plans score channels; layer scorers such as 'capacity' go to layer_importance=)" if scores == "channel" else ""))
    return _SCORERS[(real, scores)]


def get_importance(name: str) -> tuple[ScorerFn, bool]:
    """``(fn, needs_data)`` of the layer scorer ``name``."""
    s = get_scorer(name, "layer")
    return s.fn, s.needs_data


def list_importance(scores: str | None = "layer") -> list[str]:
    """Registered scorer names: of layers (default), of channels (``"channel"``), or every name (None)."""
    kinds = KINDS if scores is None else (_check_kind(scores),)
    names = {n for n, k in _SCORERS if k in kinds}
    if "layer" in kinds:
        names |= set(_ALIASES)
    return sorted(names)


def needs_data(name: str, scores: str = "layer") -> bool:
    """True when scorer ``name`` (of kind ``scores``) reads calibration data."""
    return get_scorer(name, scores).needs_data


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
    from tfprune._keras import is_keras3_object

    if wants_data and is_keras3_object(model):  # data-driven scores of a Keras 3 model: measured on its tf-keras twin (same names)
        from tfprune.keras3.convert import to_tf_keras
        from tfprune.masks.wrapping import is_wrapped, strip

        return score_layers(to_tf_keras(strip(model) if is_wrapped(model) else model), importance, data, **options)
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
    finite_weights(dict(zip(ctx.names, ctx.kernels)), f"importance {importance!r}")
    if wants_data:
        finite_data(data, "data")
        if model is not None:
            from tfprune.data import check_inputs

            check_inputs(model, data, "data")
    raw = np.asarray(fn(ctx), dtype=np.float64)
    seconds = time.perf_counter() - t0
    if raw.shape != (len(layers),) or not np.isfinite(raw).all() or (raw < 0).any():
        raise RuntimeError(f"scorer {importance!r} returned invalid scores {raw.tolist()}")
    return ImportanceScores(resolve(importance), dict(zip(ctx.names, raw.tolist())), seconds, dict(ctx.options.get("_details", {})))
