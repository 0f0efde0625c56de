"""Linear classifier probes on layer features (Alain & Bengio 2016; Chen & Zhao 2018).

For each probe point the layer's output is pooled (global average by
default, or ``max``, ``flatten``, or a callable), streamed batch by batch,
standardised, and a linear classifier is fit on one split and scored on the
other: multinomial logistic regression (softmax) for single-label data,
one-vs-rest logistic regressions (sigmoid) with mean average precision for
multi-label data.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tfprune._keras import keras

__all__ = ["pool_features", "extract_features", "fit_probe"]


def pool_features(a: np.ndarray, pooling: str | Callable = "avg") -> np.ndarray:
    """(batch, ..., channels) -> (batch, features)."""
    a = np.asarray(a)
    if callable(pooling):
        return np.asarray(pooling(a)).reshape(len(a), -1)
    if a.ndim <= 2:
        return a.reshape(len(a), -1)
    axes = tuple(range(1, a.ndim - 1))
    if pooling == "avg":
        return a.mean(axis=axes)
    if pooling == "max":
        return a.max(axis=axes)
    if pooling == "flatten":
        return a.reshape(len(a), -1)
    raise ValueError(f"pooling must be 'avg', 'max', 'flatten' or a callable, got {pooling!r}")


def extract_features(model: Any, layer_names: list[str], x: Any, pooling: Any = "avg", batch_size: int = 256,
                     progress: bool = True) -> dict[str, np.ndarray]:
    """Pooled outputs of the named layers for all of ``x``, computed batch by batch (memory: N x features).

    ``model``: a functional model (``tfprune.shallow.flat_graph(m).build()`` for any model);
    ``x``: an array, or a dict / list of arrays for a multi-input model.
    """
    import tensorflow as tf

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])
    feats: dict[str, list[np.ndarray]] = {n: [] for n in layer_names}
    n_rows = len(tf.nest.flatten(x)[0])
    it = range(0, n_rows, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="probe features", leave=False)
    for i in it:
        outs = probe(tf.nest.map_structure(lambda a, i=i: a[i : i + batch_size], x), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, a in zip(layer_names, outs):
            feats[n].append(pool_features(np.asarray(a), pooling).astype(np.float32))
    return {n: np.concatenate(v) for n, v in feats.items()}


def fit_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, multilabel: bool = False,
              max_iter: int = 300, seed: int = 0) -> float:
    """Held-out accuracy (single-label) or mean average precision (multi-label) of a linear probe."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    a, b = scaler.transform(f_train), scaler.transform(f_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if multilabel:
            from sklearn.metrics import average_precision_score
            from sklearn.multiclass import OneVsRestClassifier

            clf = OneVsRestClassifier(LogisticRegression(max_iter=max_iter, random_state=seed)).fit(a, y_train)
            return float(average_precision_score(y_test, clf.decision_function(b), average="macro"))
        clf = LogisticRegression(max_iter=max_iter, random_state=seed).fit(a, y_train.reshape(-1))
        return float(np.mean(clf.predict(b) == y_test.reshape(-1)))
