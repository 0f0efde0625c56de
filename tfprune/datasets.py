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

`cifar10(path)` returns CIFAR-10 in keras' layout (uint8 images, labels
``(n,)``), from ``path``, ``$TFPRUNE_CIFAR10``, the JPEG pack in
``../shared/data/cifar10``, keras' extracted download or a keras download
(in that order); JPEG packs are decoded once and cached.
`cifar10_pipeline(x, y)` is the standard training input pipeline (random
4-pixel crop, horizontal flip; deterministic given a seed) and the eval
pipeline. There is no bundled CIFAR-10: with no source it raises
`FileNotFoundError` naming every option.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import sys
import time
from typing import Any, Tuple

import numpy as np

__all__ = ["mnist", "mnist_small", "load_mnist", "digits", "load_mnist_or_digits", "ENV_VAR", "BUNDLED_MNIST",
           "cifar10", "load_cifar10", "cifar10_pipeline", "cifar10_steps", "cifar10_normalize", "CIFAR10_ENV_VAR",
           "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10_CLASSES"]

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


# ----------------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------------

CIFAR10_ENV_VAR = "TFPRUNE_CIFAR10"
#: Class names, in label order 0-9.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Per-channel (R, G, B) mean and standard deviation of the 50,000 CIFAR-10 training images, in
#: pixel units (0-255), over every pixel of the original binary batches; /255 they are the usual
#: (0.4914, 0.4822, 0.4465) and (0.2470, 0.2435, 0.2616). (The often-copied std (0.2023, 0.1994,
#: 0.2010) is the mean of the per-image stds, not the data set's.) The shared JPEG pack, a lossy
#: re-encoding, measures mean (124.14, 122.96, 112.57) and std (62.50, 61.85, 66.42): within 1.3
#: pixel values; the original's constants are kept so models trained on either source agree.
#: Used by `cifar10_normalize` and by the Normalization layer that `tfprune.models.resnet_cifar`
#: / `vgg_cifar` put first.
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)
#: Keras' download, extracted (what ``keras.datasets.cifar10.load_data()`` leaves behind).
KERAS_CIFAR10_DIR = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "cifar-10-batches-py")
#: The JPEG pack, relative to a checkout's parent folder (``<checkout>/../shared/...``).
SHARED_CIFAR10 = os.path.join("shared", "data", "cifar10", "cifar10_jpeg.npz")
_CIFAR_KEYS = ("x_train", "y_train", "x_test", "y_test")
_PACK_KEYS = ("train_jpeg", "train_offsets", "y_train", "test_jpeg", "test_offsets", "y_test")
_announced: set[str] = set()


def _shared_cifar10_candidates() -> list[str]:
    """``../shared/data/cifar10/cifar10_jpeg.npz`` next to the working directory and next to this checkout (deduplicated)."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: list[str] = []
    for base in (os.getcwd(), checkout):
        p = os.path.normpath(os.path.join(base, "..", SHARED_CIFAR10))
        if p not in out:
            out.append(p)
    return out


def _cache_dir(cache: Any) -> str | None:
    if cache is False or cache is None:
        return None
    if cache is True:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(root, "tfprune")
    return os.fspath(cache)


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode the JPEG files ``blob[offsets[i]:offsets[i + 1]]`` in parallel (tf.data); (n, H, W, 3) uint8."""
    import tensorflow as tf

    files = [blob[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    if not files:
        return np.zeros((0, 32, 32, 3), np.uint8)
    ds = (tf.data.Dataset.from_tensor_slices(tf.constant(files))
          .map(lambda s: tf.io.decode_jpeg(s, channels=3), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(2048))
    return np.concatenate([b.numpy() for b in ds])


def _check_cifar(data: Data, where: str) -> Data:
    (xt, yt), (xs, ys) = data
    for name, x, y in (("train", xt, yt), ("test", xs, ys)):
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or len(x) != len(y):
            raise ValueError(f"{where}: {name} images have shape {x.shape} for {len(y)} labels; expected (n, 32, 32, 3) and n labels")
    return data


def _as_keras_layout(xt, yt, xs, ys) -> Data:
    """uint8 (n, 32, 32, 3) images and uint8 (n,) labels (keras' own loader gives (n, 1) labels)."""
    def lab(y):
        return np.asarray(y).reshape(-1).astype(np.uint8)

    return (np.asarray(xt, dtype=np.uint8), lab(yt)), (np.asarray(xs, dtype=np.uint8), lab(ys))


def _cache_file(cache_dir: str, source: str) -> tuple[str, str]:
    """(cache file for ``source``, the prefix every cache of that source path shares)."""
    st = os.stat(source)
    tag = hashlib.sha256(os.path.realpath(source).encode()).hexdigest()[:10]
    prefix = f"cifar10-{tag}-"
    return os.path.join(cache_dir, f"{prefix}{st.st_size}-{st.st_mtime_ns}.npz"), prefix


def _read_pack(path: str, cache_dir: str | None) -> tuple[Data, str]:
    """The JPEG pack (decoded, or from the cache); ``note`` says which and how long it took."""
    cached = None
    if cache_dir is not None:
        cached, prefix = _cache_file(cache_dir, path)
        if os.path.isfile(cached):
            try:
                t0 = time.perf_counter()
                with np.load(cached) as d:
                    data = _as_keras_layout(*(d[k] for k in _CIFAR_KEYS))
                return data, f"decoded copy cached at {cached}, read in {time.perf_counter() - t0:.1f} s"
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
                pass
    t0 = time.perf_counter()
    with np.load(path) as d:
        missing = [k for k in _PACK_KEYS if k not in d.files]
        if missing:
            raise ValueError(f"{path} is neither a CIFAR-10 JPEG pack (missing {missing}) nor an .npz with {list(_CIFAR_KEYS)}")
        xt = _decode_jpegs(d["train_jpeg"], d["train_offsets"])
        xs = _decode_jpegs(d["test_jpeg"], d["test_offsets"])
        data = _check_cifar(_as_keras_layout(xt, d["y_train"], xs, d["y_test"]), path)
    note = f"decoded in {time.perf_counter() - t0:.1f} s"
    if cached is not None:
        note += _write_cache(data, cached, prefix)
    return data, note


def _write_cache(data: Data, cached: str, prefix: str) -> str:
    from tfprune.files import atomic_write

    (xt, yt), (xs, ys) = data
    folder = os.path.dirname(cached)
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_write(cached) as f:
            np.savez(f, x_train=xt, y_train=yt, x_test=xs, y_test=ys)  # uncompressed: reading it back takes well under 1 s
    except OSError as err:
        return f"; not cached ({type(err).__name__}: {err})"
    for name in os.listdir(folder):  # older caches of the same source path (the file changed since)
        if name.startswith(prefix) and name.endswith(".npz") and os.path.join(folder, name) != cached:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    return f", cached at {cached}"


def _read_batches(folder: str) -> Data:
    """keras' extracted download: data_batch_1..5 and test_batch (Python pickles, as keras reads them)."""
    def batch(name):
        fpath = os.path.join(folder, name)
        if not os.path.isfile(fpath):
            raise FileNotFoundError(f"{folder} has no {name!r}: not an extracted cifar-10-batches-py folder")
        with open(fpath, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301 - the CIFAR-10 distribution format (keras reads it the same way)
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        x = np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(d["labels"])

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xs, ys = batch("test_batch")
    return _check_cifar(_as_keras_layout(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xs, ys), folder)


def _read_cifar_source(path: str, cache_dir: str | None) -> tuple[Data, str]:
    """Read a folder (keras' batches), a JPEG pack or a plain keras-layout .npz; ``(data, how)``."""
    if os.path.isdir(path):
        t0 = time.perf_counter()
        return _read_batches(path), f"read in {time.perf_counter() - t0:.1f} s"
    with np.load(path) as d:
        files = set(d.files)
        if set(_CIFAR_KEYS) <= files:
            t0 = time.perf_counter()
            data = _check_cifar(_as_keras_layout(*(d[k] for k in _CIFAR_KEYS)), path)
            return data, f"read in {time.perf_counter() - t0:.1f} s"
    return _read_pack(path, cache_dir)


def _keras_cifar10_download(timeout: float = DOWNLOAD_TIMEOUT_S) -> Data:
    """``keras.datasets.cifar10.load_data()`` (170 MB) with a socket timeout (process-wide while it runs)."""
    from tfprune._keras import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        (xt, yt), (xs, ys) = keras.datasets.cifar10.load_data()
    finally:
        socket.setdefaulttimeout(previous)
    return _check_cifar(_as_keras_layout(xt, yt, xs, ys), "keras.datasets.cifar10")


def load_cifar10(
    path: str | os.PathLike | None = None, *, cache: bool | str | os.PathLike = True, verbose: bool = True, download: bool = True
) -> tuple[Data, str]:
    """Like `cifar10`, and also says where the data came from: returns ``(data, source)``.

    ``source`` names the file, folder or download, the number of images and
    (for a JPEG pack) whether it was decoded or read from the cache. With
    ``verbose`` it is printed to stderr, once per process and source.
    ``download=False`` skips the keras download (only local files).
    """
    tried: list[str] = []
    candidates: list[tuple[str, str | None]] = []
    if path is not None:
        candidates.append(("path argument", os.fspath(path)))
    candidates.append((f"${CIFAR10_ENV_VAR}", os.environ.get(CIFAR10_ENV_VAR) or None))
    candidates += [("shared JPEG pack", p) for p in _shared_cifar10_candidates()]
    candidates.append(("keras' extracted download", KERAS_CIFAR10_DIR))
    cache_dir = _cache_dir(cache)
    data = None
    for label, p in candidates:
        if p is None:
            tried.append(f"{label}: not set")
        elif os.path.exists(p):
            data, how = _read_cifar_source(p, cache_dir)
            source = f"CIFAR-10 from {p} ({_sizes(data)}; {how})"
            break
        else:
            tried.append(f"{label}: {p} (not found)")
    if data is None and download:
        try:
            data = _keras_cifar10_download()
            source = f"CIFAR-10 from the keras download, kept in keras' cache ~/.keras/datasets ({_sizes(data)})"
        except Exception as err:  # noqa: BLE001 - any download failure means "offline"
            tried.append(f"keras.datasets.cifar10 download: {type(err).__name__}: {err}")
    elif data is None:
        tried.append("keras.datasets.cifar10 download: not tried (download=False)")
    if data is None:
        raise FileNotFoundError(
            "CIFAR-10 not found. Tried:\n  " + "\n  ".join(tried) + "\n"
            "Fix: pass path= (the JPEG pack cifar10_jpeg.npz, an .npz with x_train/y_train/x_test/y_test, or keras' "
            f"extracted cifar-10-batches-py folder), set {CIFAR10_ENV_VAR} to one of those, put the pack at "
            f"../{SHARED_CIFAR10}, or go online so keras can download it (170 MB)."
        )
    skipped = [t for t in tried if t.startswith(("path argument", f"${CIFAR10_ENV_VAR}:")) and t.endswith("(not found)")]
    key = source.split(" (")[0]
    if verbose and (key not in _announced or skipped):
        _announced.add(key)
        _announce(source + "".join(f"; skipped {t}" for t in skipped))
    return data, source


def cifar10(path: str | os.PathLike | None = None, *, cache: bool | str | os.PathLike = True) -> Data:
    """CIFAR-10 as ``(x_train, y_train), (x_test, y_test)``: 50,000 / 10,000 images.

    Images: uint8 ``(n, 32, 32, 3)``, RGB, channels last (keras' layout).
    Labels: uint8 ``(n,)``, 0-9 in `CIFAR10_CLASSES` order. Keras' own
    ``keras.datasets.cifar10.load_data()`` gives labels of shape ``(n, 1)``;
    this returns them flattened to ``(n,)``, whatever the source.

    Sources, first found wins: ``path`` (the JPEG pack ``cifar10_jpeg.npz``,
    an ``.npz`` with ``x_train``/``y_train``/``x_test``/``y_test``, or keras'
    extracted ``cifar-10-batches-py`` folder); ``$TFPRUNE_CIFAR10`` (the
    same kinds); ``../shared/data/cifar10/cifar10_jpeg.npz`` next to the
    working directory or this checkout; ``~/.keras/datasets/cifar-10-batches-py``;
    the keras download (when online; socket timeout 15 s). Otherwise
    `FileNotFoundError` lists what was tried and the fix. The source is
    announced once on stderr (`load_cifar10` also returns it).

    A JPEG pack is decoded once (about 10 s on 2 cores, tf.data in parallel)
    and the arrays are cached as an uncompressed ``.npz`` (184 MB) in
    ``~/.cache/tfprune`` (``$XDG_CACHE_HOME/tfprune``), or in the folder
    ``cache`` names; the cache is keyed by the pack's path, size and
    modification time, so a changed pack is decoded again. ``cache=False``
    decodes every time. Note the pack is a lossy JPEG re-encoding of CIFAR-10
    and its order is shuffled (see its README).
    """
    return load_cifar10(path, cache=cache)[0]


def cifar10_steps(n: int, batch_size: int = 128) -> int:
    """Batches per epoch of `cifar10_pipeline` for ``n`` images (the last batch may be smaller): ``ceil(n / batch_size)``."""
    return -(-int(n) // int(batch_size))


def cifar10_normalize(x: Any) -> Any:
    """``(x - CIFAR10_MEAN) / CIFAR10_STD`` per channel, as float32 (numpy or tf tensors of pixels 0-255).

    Only for models without the normalisation layer (``normalize=False`` in
    `tfprune.models.resnet_cifar` / `vgg_cifar`); never normalise twice.
    """
    mean = np.asarray(CIFAR10_MEAN, np.float32)
    std = np.asarray(CIFAR10_STD, np.float32)
    if isinstance(x, np.ndarray):
        return (x.astype(np.float32) - mean) / std
    import tensorflow as tf

    return (tf.cast(x, tf.float32) - mean) / std


def cifar10_pipeline(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 128,
    *,
    train: bool = True,
    seed: int = 0,
    first_epoch: int = 0,
    epochs: int | None = None,
    normalize: bool = False,
) -> Any:
    """A batched, prefetched ``tf.data.Dataset`` of ``(images, labels)`` for training (augmented) or evaluation.

    Images come out as float32 pixels 0-255, shape (b, 32, 32, 3); labels
    as int32 (b,). The models of `tfprune.models` normalise inside the model
    (a ``Normalization`` first layer with `CIFAR10_MEAN` / `CIFAR10_STD`), so
    the saved model takes raw pixels everywhere: in this pipeline, in
    ``evaluate`` on numpy arrays, in tfprune's calibration data, its TFLite
    export and its command line. ``normalize=True`` normalises here
    instead, for a model without that layer (never both).

    ``train=True`` (the standard CIFAR augmentation of He et al. 2016):
    every epoch, the images are shuffled, each is zero-padded by 4 pixels on
    every side (as He et al.; zeros, not reflection), a random 32x32 window
    is cropped and it is flipped horizontally with probability 1/2. Epoch
    ``e``'s order and augmentation come from stateless random ops seeded
    with ``(seed, e)`` (and the batch index), so they depend on nothing else
    (no global seed, no thread timing): a run resumed at epoch ``k`` with ``first_epoch=k``
    sees exactly the batches an uninterrupted run would. The dataset yields
    ``epochs`` epochs back to back, each of `cifar10_steps` batches (the
    last batch of an epoch is smaller when ``batch_size`` does not divide
    ``n``); ``epochs=None`` repeats forever. Give keras the epoch length::

        ds = cifar10_pipeline(x, y, 128, seed=0, first_epoch=k)
        model.fit(ds, epochs=E, initial_epoch=k, steps_per_epoch=cifar10_steps(len(x), 128))

    ``train=False``: one pass in order, no augmentation (the same
    normalisation, if any).

    Augmentation runs in tf.data (parallel map, then prefetch) rather than
    as random preprocessing layers inside the model, so that the model
    tfprune prunes, shrinks and exports has no training-only layers and the
    input work overlaps the training step.
    """
    import tensorflow as tf

    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y):
        raise ValueError(f"x must be (n, H, W, 3) images with n labels in y; got x {x.shape}, y {y.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1 or None, got {epochs}")
    n, h, w = len(x), x.shape[1], x.shape[2]
    images = tf.constant(x)
    labels = tf.constant(y.astype(np.int32))
    autotune = tf.data.AUTOTUNE

    def finish(img):
        img = tf.cast(img, tf.float32)
        return cifar10_normalize(img) if normalize else img

    if not train:
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(int(batch_size))
        return ds.map(lambda a, b: (finish(a), b), num_parallel_calls=autotune).prefetch(autotune)

    pad = 4
    seed = int(seed)
    steps = cifar10_steps(n, batch_size)

    def augment(k, idx, e):
        # batch k of epoch e: one seed per (seed, epoch, batch), split into one for the crops and one for the flips
        s = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), e * steps + k]), num=2)
        b = tf.shape(idx)[0]
        img = tf.pad(tf.gather(images, idx), [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # zeros around each image
        off = tf.random.stateless_uniform((b, 2), seed=s[0], minval=0, maxval=2 * pad + 1, dtype=tf.int32)
        img = tf.gather(img, off[:, :1] + tf.range(h)[None], axis=1, batch_dims=1)  # each image its own window
        img = tf.gather(img, off[:, 1:] + tf.range(w)[None], axis=2, batch_dims=1)
        flip = tf.random.stateless_uniform((b,), seed=s[1]) < 0.5
        img = tf.where(flip[:, None, None, None], tf.reverse(img, [2]), img)
        return finish(img), tf.gather(labels, idx)

    def one_epoch(e):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), e]))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(int(batch_size)).enumerate()
        return batches.map(lambda k, idx: augment(k, idx, e), num_parallel_calls=autotune, deterministic=True)

    start = int(first_epoch)
    stop = 2**62 if epochs is None else start + int(epochs)
    return tf.data.Dataset.range(start, stop).flat_map(one_epoch).prefetch(autotune)
