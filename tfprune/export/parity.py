"""Keras against TFLite: per-output parity (max abs difference, relative error, top-1 agreement) in numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OutputParity", "relative_error", "top1_stats", "output_parity", "shared_rows", "is_classification", "keras_outputs"]

_POOLING_OR_FLAT = ("GlobalAveragePooling", "GlobalMaxPooling", "AveragePooling", "MaxPooling", "Flatten", "Reshape")


@dataclass
class OutputParity:
    """TFLite against Keras on one model output, over the parity samples.

    ``shape`` is the per-sample shape (no batch axis). ``rel_error`` is
    ``||tflite - keras|| / ||keras||`` (Frobenius norms over all samples).
    ``top1_agreement`` is defined only for classification-like
    outputs (shape ``(batch, classes)``, more than one class, not a pooled or
    flattened feature tensor); it counts the ``top1_samples`` samples whose
    maximum is unique on both sides: ``top1_ties`` samples whose (quantized)
    TFLite output ties at its maximum have no top-1 class and are left out.
    NaN where undefined.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    rel_error: float
    top1_agreement: float = float("nan")
    top1_samples: int = 0
    top1_ties: int = 0


def relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    """``||got - ref|| / ||ref||`` over all entries (0 when both are 0, inf when only ``ref`` is)."""
    ref = np.asarray(ref, np.float64)
    num = float(np.linalg.norm(np.asarray(got, np.float64) - ref))
    den = float(np.linalg.norm(ref))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def top1_stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, int, int]:
    """(agreement, counted, ties) of the argmax of two ``(n, classes)`` arrays.

    A sample counts when its maximum is unique in both; ``ties`` samples have a
    tied maximum in ``got`` (an int8 output cannot resolve close logits).
    Agreement is NaN when no sample counts.
    """
    ref = np.asarray(ref)
    got = np.asarray(got)
    if ref.ndim != 2 or ref.shape != got.shape or ref.shape[1] < 2:
        raise ValueError(f"top1_stats needs two (n, classes>1) arrays of one shape, got {ref.shape} and {got.shape}")
    unique_ref = np.sum(ref == ref.max(axis=1, keepdims=True), axis=1) == 1
    unique_got = np.sum(got == got.max(axis=1, keepdims=True), axis=1) == 1
    counted = unique_ref & unique_got
    ties = int(np.sum(~unique_got))
    if not counted.any():
        return float("nan"), 0, ties
    agree = ref[counted].argmax(axis=1) == got[counted].argmax(axis=1)
    return float(np.mean(agree)), int(counted.sum()), ties


def output_parity(name: str, ref: np.ndarray, got: np.ndarray, classes: bool) -> OutputParity:
    """`OutputParity` of ``got`` (reshaped to ``ref``'s shape ``(n, ...)``) against ``ref``; top-1 only when ``classes``."""
    ref = np.asarray(ref, np.float32)
    got = np.asarray(got, np.float32).reshape(ref.shape)
    p = OutputParity(name, tuple(int(d) for d in ref.shape[1:]), float(np.max(np.abs(ref - got))) if ref.size else 0.0, relative_error(ref, got))
    if classes:
        p.top1_agreement, p.top1_samples, p.top1_ties = top1_stats(ref, got)
    return p


def shared_rows(x: np.ndarray, rep: np.ndarray) -> int:
    """How many rows of ``x`` also occur (byte for byte, as float32) in ``rep``."""
    seen = {np.ascontiguousarray(r).tobytes() for r in np.asarray(rep, np.float32)}
    return sum(np.ascontiguousarray(r).tobytes() in seen for r in np.asarray(x, np.float32))


def is_classification(model: Any, index: int) -> bool:
    """Whether output ``index`` of a tf-keras model is a ``(batch, k>1)`` output not produced by a pooling / flatten / reshape layer.

    A subclassed model has no symbolic outputs to read: True (the caller checks the shape of the values).
    """
    if getattr(model, "outputs", None) is None:
        return True
    shape = model.outputs[index].shape
    if len(shape) != 2 or shape[-1] is None or int(shape[-1]) < 2:
        return False
    history = getattr(model.outputs[index], "_keras_history", None)
    layer = getattr(history, "layer", None)
    return not (layer is not None and type(layer).__name__.startswith(_POOLING_OR_FLAT))


def output_layer_names(model: Any) -> list[str]:
    """Names of the layers producing ``model.outputs``, in order (``output_names``; a Keras 3 Sequential has none: read from the outputs)."""
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    return [t._keras_history[0].name for t in model.outputs]


def keras_outputs(plain: Any, x: np.ndarray, call: bool = False) -> tuple[list[str], list[str], list[np.ndarray]]:
    """The model's outputs on ``x``, flattened in ``plain.outputs`` order: (report names, Keras output names, arrays).

    A dict output reports its keys (``boxes``), a list its layers' names.
    With ``call`` (and always for a subclassed model, which has no symbolic
    outputs) the model is called directly, batch by batch, so no trace is
    cached on it (``predict`` caches one); a subclassed model's outputs are
    named as the converter names them in the file's signature: ``output_1``, ``output_2``...
    """
    if call or getattr(plain, "outputs", None) is None:
        refs = _called(plain, x)
    else:
        refs = plain.predict(x, verbose=0, batch_size=256)
    if isinstance(refs, dict):
        keys = sorted(refs)  # tf.nest's order: the order of plain.outputs and output_names
        layer_names = output_layer_names(plain) if getattr(plain, "outputs", None) is not None else [str(k) for k in keys]
        return [str(k) for k in keys], layer_names, [np.asarray(refs[k]) for k in keys]
    refs = list(refs) if isinstance(refs, (list, tuple)) else [refs]
    if getattr(plain, "outputs", None) is not None:
        layer_names = output_layer_names(plain)
    else:
        layer_names = [f"output_{i + 1}" for i in range(len(refs))]
    return list(layer_names), layer_names, [np.asarray(r) for r in refs]


def _called(model: Any, x: np.ndarray, batch_size: int = 256) -> Any:
    """``model(x, training=False)`` in eager batches, as numpy, in the output's structure (a dict, a list, or one array)."""
    batches = [model(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)]
    if isinstance(batches[0], dict):
        return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
    if isinstance(batches[0], (list, tuple)):
        return [np.concatenate([np.asarray(b[i]) for b in batches]) for i in range(len(batches[0]))]
    return np.concatenate([np.asarray(b) for b in batches])
