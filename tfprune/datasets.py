"""Datasets, with local files first (this project's machines have no internet).

`mnist(path)` looks in order at: ``path``; the environment variable
``TFPRUNE_MNIST``; ``keras.datasets.mnist`` (downloads when online, with a
socket timeout so an unreachable network fails fast). If none of those works
it falls back to the MNIST subset that ships inside tfprune
(``tfprune/resources/mnist_small.npz``: the first 8,000 training and 2,000
test images of MNIST, real 28x28 digits) and prints a line to stderr saying
so and how many images it loaded. ``fallback=False`` raises
`FileNotFoundError` instead, naming everything it tried.

`digits()` is scikit-learn's 8x8 digit set resized to 28x28; it is used only
by `load_mnist_or_digits` when even the bundled subset is missing (a broken
install).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Tuple

import numpy as np

__all__ = ["mnist", "mnist_small", "load_mnist", "digits", "load_mnist_or_digits", "ENV_VAR", "BUNDLED_MNIST"]

ENV_VAR = "TFPRUNE_MNIST"
#: The MNIST subset shipped as package data (see tfprune/resources/README.md).
BUNDLED_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources", "mnist_small.npz")
#: Seconds a stalled socket may block the keras download before it counts as offline.
DOWNLOAD_TIMEOUT_S = 15.0

Split = Tuple[np.ndarray, np.ndarray]
Data = Tuple[Split, Split]


def _prepare(x: np.ndarray, y: np.ndarray, normalize: bool) -> Split:
    x = np.asarray(x)
    if normalize:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return x, np.asarray(y).astype(np.int64)


def _load_npz(path: str) -> Data:
    with np.load(path) as d:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(d.files)
        if missing:
            raise ValueError(f"{path} is not in keras' mnist.npz layout: missing {sorted(missing)}")
        return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])


def _finish(raw: Data, normalize: bool) -> Data:
    (a, b), (c, d) = raw
    return _prepare(a, b, normalize), _prepare(c, d, normalize)


def _sizes(data: Data) -> str:
    return f"{len(data[0][0]):,} train / {len(data[1][0]):,} test images"


def _keras_download(timeout: float = DOWNLOAD_TIMEOUT_S) -> Data:
    """``keras.datasets.mnist.load_data()`` with a socket timeout (process-wide while it runs)."""
    from tfprune._keras import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return keras.datasets.mnist.load_data()
    finally:
        socket.setdefaulttimeout(previous)


def _announce(message: str) -> None:
    print(f"[tfprune] {message}", file=sys.stderr, flush=True)


def mnist_small(normalize: bool = True) -> Data:
    """The MNIST subset bundled with tfprune: 8,000 train / 2,000 test real 28x28 digits.

    Same layout and dtypes as `mnist`. Raises `FileNotFoundError` if the
    package was installed without its data file.
    """
    if not os.path.isfile(BUNDLED_MNIST):
        raise FileNotFoundError(
            f"the MNIST subset bundled with tfprune is missing ({BUNDLED_MNIST}). "
            "Fix: reinstall tfprune (`pip install .` carries tfprune/resources/*.npz as package data)."
        )
    return _finish(_load_npz(BUNDLED_MNIST), normalize)


def load_mnist(
    path: str | os.PathLike | None = None, normalize: bool = True, fallback: bool = True, verbose: bool = True
) -> tuple[Data, str]:
    """Like `mnist`, and also says where the data came from: returns ``(data, source)``.

    ``source`` names the file (or the download) and the number of images.
    With ``verbose`` the fallback to the bundled subset is announced on stderr.
    """
    tried = []
    candidates = []
    if path is not None:
        candidates.append(("path argument", os.fspath(path)))
    if os.environ.get(ENV_VAR):
        candidates.append((f"${ENV_VAR}", os.environ[ENV_VAR]))
    else:
        tried.append(f"${ENV_VAR}: not set")
    for label, p in candidates:
        if os.path.isfile(p):
            data = _finish(_load_npz(p), normalize)
            return data, f"MNIST from {p} ({_sizes(data)})"
        tried.append(f"{label}: {p} (no such file)")
    try:
        data = _finish(_keras_download(), normalize)
        return data, f"MNIST from keras.datasets ({_sizes(data)})"
    except Exception as err:  # noqa: BLE001 - any download failure means "offline"
        tried.append(f"keras.datasets.mnist download: {type(err).__name__}: {err}")
    fix = (
        f"Fix: pass path='.../mnist.npz' (keras layout), set {ENV_VAR}=/path/to/mnist.npz, "
        "or go online so keras can download it."
    )
    if fallback and os.path.isfile(BUNDLED_MNIST):
        data = mnist_small(normalize)
        source = f"the MNIST subset bundled with tfprune ({_sizes(data)}; full MNIST has 60,000 / 10,000)"
        if verbose:
            _announce(
                "full MNIST not found (tried: " + "; ".join(tried) + f"). Using {source} from {BUNDLED_MNIST}. "
                + fix.replace("Fix: ", "For the full set: ")
            )
        return data, source
    if fallback:
        tried.append(f"bundled subset: {BUNDLED_MNIST} (no such file; reinstall tfprune)")
    raise FileNotFoundError("MNIST not found. Tried:\n  " + "\n  ".join(tried) + "\n" + fix)


def mnist(path: str | os.PathLike | None = None, normalize: bool = True, fallback: bool = True) -> Data:
    """MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images come as float32 in [0, 1] with shape (N, 28, 28, 1) (uint8 (N, 28, 28, 1)
    with ``normalize=False``); labels as int64 (N,). Looks at ``path``,
    ``$TFPRUNE_MNIST``, then the keras download; when none works, returns the
    bundled 8,000 / 2,000 subset and says so on stderr (``fallback=False``:
    raises `FileNotFoundError` naming what it tried and the fix).
    """
    return load_mnist(path, normalize=normalize, fallback=fallback)[0]


def digits(test_fraction: float = 0.2, seed: int = 0, normalize: bool = True) -> Data:
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


def load_mnist_or_digits(path: str | os.PathLike | None = None, verbose: bool = True) -> tuple[Data, str]:
    """MNIST if found (see `mnist`), else the bundled MNIST subset, else scikit-learn's digits; announced.

    Returns ``(data, source)`` where ``source`` says what was loaded and how many images.
    """
    try:
        return load_mnist(path, verbose=verbose)
    except FileNotFoundError as err:
        data = digits()
        src = f"scikit-learn digits, 8x8 resized to 28x28 ({_sizes(data)})"
        if verbose:
            _announce(f"{str(err).splitlines()[0]} {' '.join(str(err).splitlines()[1:])}; using the offline fallback: {src}")
    return data, src
