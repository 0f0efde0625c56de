"""Datasets, with local files first (this project's machines have no internet).

`mnist(path)` looks in order at: ``path``; the environment variable
``TFPRUNE_MNIST``; ``keras.datasets.mnist`` (downloads when online). If none
works it raises `FileNotFoundError` naming all three. `digits()` is a real
handwritten-digit set that ships inside scikit-learn (no download), resized
to 28x28; `load_digits_for_demo` falls back to it, and says so.
"""

from __future__ import annotations

import os
from typing import Tuple

import numpy as np

__all__ = ["mnist", "digits", "load_mnist_or_digits", "ENV_VAR"]

ENV_VAR = "TFPRUNE_MNIST"
Split = Tuple[np.ndarray, np.ndarray]


def _prepare(x: np.ndarray, y: np.ndarray, normalize: bool) -> Split:
    x = np.asarray(x)
    if normalize:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return x, np.asarray(y).astype(np.int64)


def _load_npz(path: str) -> tuple[Split, Split]:
    with np.load(path) as d:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(d.files)
        if missing:
            raise ValueError(f"{path} is not in keras' mnist.npz layout: missing {sorted(missing)}")
        return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])


def mnist(path: str | os.PathLike | None = None, normalize: bool = True) -> tuple[Split, Split]:
    """MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images come as float32 in [0, 1] with shape (N, 28, 28, 1) (uint8 (N, 28, 28, 1)
    with ``normalize=False``); labels as int64 (N,).
    """
    tried = []
    candidates = []
    if path is not None:
        candidates.append(("path argument", os.fspath(path)))
    if os.environ.get(ENV_VAR):
        candidates.append((f"${ENV_VAR}", os.environ[ENV_VAR]))
    for label, p in candidates:
        if os.path.isfile(p):
            (a, b), (c, d) = _load_npz(p)
            return _prepare(a, b, normalize), _prepare(c, d, normalize)
        tried.append(f"{label}: {p} (no such file)")
    try:
        from tfprune._keras import keras

        (a, b), (c, d) = keras.datasets.mnist.load_data()
        return _prepare(a, b, normalize), _prepare(c, d, normalize)
    except Exception as err:  # noqa: BLE001 - any download failure means "offline"
        tried.append(f"keras.datasets.mnist download: {type(err).__name__}: {err}")
    raise FileNotFoundError(
        "MNIST not found. Tried:\n  " + "\n  ".join(tried) + "\nFix: pass path='.../mnist.npz' (keras layout), "
        f"set {ENV_VAR}=/path/to/mnist.npz, or go online so keras can download it."
    )


def digits(test_fraction: float = 0.2, seed: int = 0, normalize: bool = True) -> tuple[Split, Split]:
    """scikit-learn's 1,797 real 8x8 handwritten digits, upscaled to MNIST's 28x28 layout.

    Each digit is resized to 20x20 (bilinear) and centred in a 28x28 frame,
    as MNIST digits are; pixel range 0..1 (or 0..255 uint8 with
    ``normalize=False``). Ships with scikit-learn: no download.
    """
    import tensorflow as tf
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images.astype(np.float32) / 16.0
    big = tf.image.resize(img[..., None], (20, 20), method="bilinear").numpy()
    x = np.zeros((len(img), 28, 28, 1), np.float32)
    x[:, 4:24, 4:24, :] = np.clip(big, 0, 1)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = order[:n_test], order[n_test:]
    if not normalize:
        x = np.round(x * 255).astype(np.uint8)
    return (x[tr], y[tr]), (x[te], y[te])


def load_mnist_or_digits(path: str | os.PathLike | None = None, verbose: bool = True) -> tuple[tuple[Split, Split], str]:
    """MNIST if it can be found (see `mnist`), else the scikit-learn digits, announced.

    Returns ``(data, source)`` where ``source`` says what was loaded.
    """
    try:
        data = mnist(path)
        src = f"MNIST ({len(data[0][0])} train / {len(data[1][0])} test)"
    except FileNotFoundError as err:
        data = digits()
        src = f"scikit-learn digits, 8x8 resized to 28x28 ({len(data[0][0])} train / {len(data[1][0])} test)"
        if verbose:
            print(f"[tfprune] MNIST unavailable ({str(err).splitlines()[0]}); using the offline fallback: {src}")
    return data, src
