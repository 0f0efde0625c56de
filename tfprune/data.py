"""One way to read the data every tfprune function takes: numpy at the edges.

Accepted forms of ``data`` (the same as Keras ``fit`` where they overlap):

* ``x``: a numpy array, a tf tensor, or a dict ``{input_name: array}`` for a
  multi-input model (labels: none);
* a tuple ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``; ``x`` may be a
  dict or a tuple/list of arrays (several inputs), ``y`` a list/dict of arrays
  (several outputs);
* a ``tf.data.Dataset`` whose elements are ``x`` or such tuples, batched or not,
  of known or unknown cardinality (an infinite one needs ``n_samples``);
* a Python generator, iterator or other iterable (a ``keras.utils.Sequence``
  too) whose items are *batches* in the forms above. A generator is consumed:
  only what is read is gone.

Whether a dataset is batched is read from how it was built (a ``batch``-like
step after the last ``unbatch``/``from_tensor_slices``); a dataset built some
other way (``from_generator``, ``from_tensors``) counts as batched, like Keras
assumes, unless its elements are scalars. ``batched=`` overrides the guess.

Public API:

* `take` -> `Samples` ``(x, y, w)``: up to ``n_samples`` samples as numpy.
* `batches` -> iterator of ``(x, y, w)`` numpy batches (streamed).
* `split`: the held-out split of `take` (probe training / scoring).
* `size`: the number of samples when known without reading the data.
* `load_source`: a .npz file, an image folder or ``module:function``, as named on a command line.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Iterator, NamedTuple

import numpy as np
import tensorflow as tf

from tfprune.validation import check_int

__all__ = ["Samples", "Split", "take", "batches", "split", "size", "unpack", "load_source", "check_inputs", "NEEDS_LABELS"]

NEEDS_LABELS = "needs labels; pass (x, y)"


class Samples(NamedTuple):
    """Numpy samples: ``x`` (array, or dict/list of arrays), ``y`` and ``w`` (or None).

    Unpacks as ``x, y, w = samples``; ``len(samples.x)`` is not the sample
    count for dict inputs, use ``samples.n``.
    """

    x: Any
    y: Any = None
    w: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return _rows(self.x)

    def subset(self, index: Any) -> Samples:
        """The rows ``index`` (a slice, or integer / boolean array) of x, y and w."""
        return Samples(_map(lambda a: a[index], self.x), _map(lambda a: a[index], self.y), _map(lambda a: a[index], self.w))


class Split(NamedTuple):
    """`samples` and the row indices of its two parts (train, held-out)."""

    samples: Samples
    train_index: np.ndarray
    held_out_index: np.ndarray

    @property
    def train(self) -> Samples:
        return self.samples.subset(self.train_index)

    @property
    def held_out(self) -> Samples:
        return self.samples.subset(self.held_out_index)


# ------------------------------------------------------------------ structures
def _is_leaf(a: Any) -> bool:
    return not isinstance(a, (dict, list, tuple))


def _map(fn: Any, s: Any) -> Any:
    """``fn`` on every array of a nested dict/list/tuple (None stays None)."""
    if s is None:
        return None
    if isinstance(s, dict):
        return {k: _map(fn, v) for k, v in s.items()}
    if isinstance(s, (list, tuple)):
        return type(s)(_map(fn, v) for v in s)
    return fn(s)


def _leaves(s: Any) -> list:
    if s is None:
        return []
    if isinstance(s, dict):
        return [a for v in s.values() for a in _leaves(v)]
    if isinstance(s, (list, tuple)):
        return [a for v in s for a in _leaves(v)]
    return [s]


def _rows(s: Any) -> int:
    leaves = _leaves(s)
    if not leaves:
        raise ValueError("no arrays in the data")
    return int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 1


def _is_array_like(a: Any) -> bool:
    return isinstance(a, (np.ndarray, tf.Tensor, tf.Variable, np.generic)) or hasattr(a, "__array__")


def _to_numpy(s: Any) -> Any:
    """A nested structure as numpy arrays; a plain list of numbers becomes one array."""
    if s is None:
        return None
    if isinstance(s, dict):
        return {k: _to_numpy(v) for k, v in s.items()}
    if isinstance(s, (list, tuple)) and s and all(_is_array_like(v) or isinstance(v, dict) for v in s):
        return type(s)(_to_numpy(v) for v in s)
    if isinstance(s, (tf.Tensor, tf.Variable)):
        return s.numpy()
    return np.asarray(s)


def unpack(item: Any) -> tuple[Any, Any, Any]:
    """``(x, y, w)`` of one item (the whole data or one batch), each numpy or None.

    A tuple (or a list of at most 3 arrays/dicts/None) is ``(x[, y[, w]])``,
    as in Keras; anything else is ``x``.
    """
    if isinstance(item, list) and 1 <= len(item) <= 3 and all(v is None or _is_array_like(v) or isinstance(v, (dict, tuple)) for v in item):
        item = tuple(item)
    if isinstance(item, tuple):
        if not 1 <= len(item) <= 3:
            raise ValueError(
                f"data as a tuple must be (x,), (x, y) or (x, y, sample_weight), got a tuple of {len(item)}. "
                "Fix: for several inputs pass ((x1, x2), y) or ({'input_a': x1, ...}, y)."
            )
        x, y, w = (tuple(item) + (None, None))[:3]
    else:
        x, y, w = item, None, None
    x, y, w = _to_numpy(x), _to_numpy(y), _to_numpy(w)
    _check_rows(x, y, w)
    return x, y, w


def _check_rows(x: Any, y: Any, w: Any) -> None:
    if x is None:
        raise ValueError("data has no inputs x (got None)")
    counts = {name: {_rows_leaf(a) for a in _leaves(s)} for name, s in (("x", x), ("y", y), ("sample_weight", w)) if s is not None}
    sizes = {n for c in counts.values() for n in c}
    if len(sizes) > 1:
        desc = ", ".join(f"{name} has {sorted(c)}" for name, c in counts.items())
        raise ValueError(f"inputs, labels and weights must have the same number of samples: {desc}. Fix: pass arrays of one length (one label per input)")


def _rows_leaf(a: Any) -> int:
    return int(np.shape(a)[0]) if np.ndim(a) else 1


def _concat(parts: list[Any]) -> Any:
    if not parts or parts[0] is None:
        return None
    first = parts[0]
    if isinstance(first, dict):
        return {k: _concat([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts, axis=0)


def _labels_error(need_labels: bool | str) -> ValueError:
    who = need_labels if isinstance(need_labels, str) else "this function"
    return ValueError(f"{who} {NEEDS_LABELS} (or a dataset / generator of (x, y) batches), not inputs alone")


# ------------------------------------------------------------------ sources
def _dataset_batched(ds: tf.data.Dataset) -> bool:
    """Guess from the dataset's construction whether its elements are batches."""
    d = ds
    while d is not None:
        name = type(d).__name__.lower()
        if "unbatch" in name or "tensorslice" in name:
            return False
        if "batch" in name:
            return True
        if "flatmap" in name or "interleave" in name or "window" in name:
            break  # from_generator and friends: the elements' structure comes from user code
        try:
            inputs = d._inputs()
        except Exception:  # noqa: BLE001 - a private API; fall back to the element spec
            break
        d = inputs[0] if inputs else None
    specs = tf.nest.flatten(ds.element_spec)
    return not all(getattr(s, "shape", None) is not None and s.shape.rank == 0 for s in specs)


def _is_stream(data: Any) -> bool:
    if isinstance(data, (tf.data.Dataset, np.ndarray, tf.Tensor, dict, list, tuple, str, bytes)) or hasattr(data, "__array__"):
        return False
    return isinstance(data, collections.abc.Iterable) or hasattr(data, "__getitem__") and hasattr(data, "__len__")


def _stream(data: Any, batch_size: int, n_samples: int | None, batched: bool | None) -> Iterator[tuple[Any, Any, Any]]:
    """Numpy ``(x, y, w)`` batches of any accepted source, at most ``n_samples`` rows in all."""
    if n_samples is not None and n_samples <= 0:
        return
    if isinstance(data, tf.data.Dataset):
        if n_samples is None and int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError("the dataset repeats forever: pass n_samples= (how many samples to read), or drop .repeat()")
        if batched is None:
            batched = _dataset_batched(data)
        if not batched:
            data = (data.take(n_samples) if n_samples is not None else data).batch(batch_size)
        source: Any = data.as_numpy_iterator()
    elif _is_stream(data):
        source = iter(data)
    else:
        whole = Samples(*unpack(data))
        n = whole.n if n_samples is None else min(whole.n, n_samples)
        for i in range(0, n, batch_size):
            yield tuple(whole.subset(slice(i, min(i + batch_size, n))))
        return
    seen = 0
    for item in source:
        x, y, w = unpack(item)
        k = _rows(x)
        if n_samples is not None and seen + k > n_samples:
            k = n_samples - seen
            x, y, w = Samples(x, y, w).subset(slice(0, k))
        if k > 0:
            yield x, y, w
        seen += k
        if n_samples is not None and seen >= n_samples:
            return


# ------------------------------------------------------------------ public
def size(data: Any) -> int | None:
    """The number of samples in ``data`` if it is known without reading it (else None)."""
    if isinstance(data, tf.data.Dataset):
        card = int(data.cardinality())
        if card < 0 or _dataset_batched(data):
            return None
        return card
    if _is_stream(data):
        return None
    return _rows(unpack(data)[0])


def batches(
    data: Any,
    batch_size: int = 256,
    n_samples: int | None = None,
    *,
    need_labels: bool | str = False,
    batched: bool | None = None,
) -> Iterator[tuple[Any, Any, Any]]:
    """Stream ``data`` as numpy ``(x, y or None, w or None)`` batches, at most ``n_samples`` samples in all.

    Arrays and unbatched datasets are cut into ``batch_size`` rows; batched
    datasets and generators keep their own batches (the last one is cut at
    ``n_samples``). ``need_labels`` (True or the caller's name, used in the
    message) raises ValueError when a batch has no labels.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    for x, y, w in _stream(data, int(batch_size), n_samples, batched):
        if need_labels and y is None:
            raise _labels_error(need_labels)
        yield x, y, w


def take(
    data: Any,
    n_samples: int | None = None,
    *,
    need_labels: bool | str = False,
    seed: int | None = None,
    batched: bool | None = None,
) -> Samples:
    """Up to ``n_samples`` samples of ``data`` (all with None) as numpy `Samples` ``(x, y, w)``.

    Without ``seed``: the first ``n_samples``, in order, reading no further
    than needed. With ``seed``: a random subset of ``n_samples`` drawn from the
    whole of ``data`` (a stream is read to its end), in random order.
    ``need_labels`` (True or the caller's name) raises a ValueError saying
    that labels are needed when ``data`` has none.
    """
    if n_samples is not None:
        n_samples = check_int(n_samples, "n_samples", 1)
    limit = None if seed is not None else n_samples
    parts = list(batches(data, 1024, limit, need_labels=need_labels, batched=batched))
    if not parts:
        raise ValueError("the data is empty: no samples were read. Fix: pass at least one sample (check the split or the filter that produced it)")
    s = Samples(*(_concat([p[i] for p in parts]) for i in range(3)))
    if seed is not None:
        idx = np.random.default_rng(seed).permutation(s.n)
        s = s.subset(idx[: n_samples if n_samples is not None else s.n])
    return s


def split(
    data: Any,
    fraction: float = 0.5,
    n_samples: int | None = None,
    seed: int = 0,
    *,
    need_labels: bool | str = False,
    min_per_side: int = 1,
) -> Split:
    """The first ``n_samples`` of ``data`` split at random into ``fraction`` (train) and the rest (held out).

    ``round(fraction * n)`` rows go to train; ValueError unless both parts
    have at least ``min_per_side`` rows. The split depends only on ``seed``
    and the number of samples.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    s = take(data, n_samples, need_labels=need_labels)
    idx = np.random.default_rng(seed).permutation(s.n)
    k = int(round(float(fraction) * s.n))
    if k < min_per_side or s.n - k < min_per_side:
        raise ValueError(f"need at least {min_per_side} samples on each side of the split, got {s.n} samples (fraction {fraction}). "
                         f"Fix: pass at least {2 * min_per_side} samples (a few hundred for meaningful probes)")
    return Split(s, idx[:k], idx[k:])


# ------------------------------------------------------------- data sources
def check_inputs(model: Any, data: Any, name: str = "data") -> None:
    """Refuse array inputs that ``model`` cannot take: strings, NaN/inf, missing dict keys, a wrong per-sample shape; with the fix.

    ``data`` is ``x``, ``(x, y[, w])`` or a dict of inputs; streams
    (tf.data, generators) pass unchecked here (they are read later).
    """
    from tfprune.validation import finite_array

    if data is None:
        raise ValueError(f"{name} is None. Fix: pass calibration inputs x, or (x, y)")
    x = data[0] if isinstance(data, tuple) and data else data
    inputs = list(getattr(model, "inputs", None) or [])
    if isinstance(x, dict):
        names = [getattr(t, "name", "").split(":")[0] for t in inputs]
        layer_names = list(getattr(model, "input_names", None) or names)
        missing = [n for n in layer_names if n not in x]
        if missing:
            raise ValueError(f"{name} is a dict with keys {sorted(x)}, but model {model.name!r} takes inputs {layer_names} (missing {missing}). "
                             "Fix: key the arrays by the model's input names")
        parts = [(x[n], t) for n, t in zip(layer_names, inputs)]
    elif isinstance(x, (list, tuple)) and len(inputs) > 1:
        parts = list(zip(x, inputs))
    else:
        parts = [(x, inputs[0] if inputs else None)]
    for value, tensor in parts:
        if not isinstance(value, np.ndarray):
            continue
        finite_array(value, name)
        if tensor is None or value.dtype.kind not in "biuf":
            continue
        want = tuple(tensor.shape[1:])
        got = tuple(value.shape[1:])
        if value.ndim != len(want) + 1 or any(w is not None and int(w) != g for w, g in zip(want, got)):
            raise ValueError(f"{name} has inputs of shape {value.shape}, but model {model.name!r} takes batches of shape (n, "
                             f"{', '.join('?' if w is None else str(int(w)) for w in want)}). Fix: pass samples shaped like the model's "
                             "input (e.g. x[..., None] for a missing channel axis, or resize the images)")
        if value.shape[0] == 0:
            raise ValueError(f"{name} holds no samples (shape {value.shape}). Fix: pass at least one sample")


def _prepare_images(x: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; (N, H, W) gets a channel axis (as keras' dataset loaders return them)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
        if x.ndim == 3:
            x = x[..., None]
    return x


def _check_returned(spec: str, out: Any, part: str) -> None:
    """A ``module:function`` source's result must be data: not None, a scalar, a string or a dict without train/test."""
    bad = None
    if out is None:
        bad = "None"
    elif isinstance(out, (str, bytes, bool, int, float, complex)) or (isinstance(out, np.ndarray) and out.ndim == 0):
        bad = f"a {type(out).__name__} ({out!r:.40})"
    elif isinstance(out, dict) and not part and {"train", "test"} & set(out):
        bad = f"a dict with keys {sorted(out)} (a split dict needs both 'train' and 'test')"
    if bad is not None:
        raise ValueError(f"--data {spec!r}: {spec}(){part} returned {bad}, not data. Fix: return a tf.data dataset, arrays (x, y), "
                         "or {'train': ..., 'test': ...}")


def load_source(
    spec: str,
    *,
    x_key: str | None = None,
    y_key: str | None = None,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 64,
) -> tuple[Any, Any, str]:
    """Read a data source named on a command line: ``(train, test, description)``.

    ``spec`` is one of:

    * a ``.npz`` file: with ``x_key`` (and ``y_key``) those arrays, used for
      both splits; else keras' layout (``x_train``, ``y_train``, ``x_test``,
      ``y_test``), else ``x`` / ``y``. uint8 images are scaled to [0, 1] and
      given a channel axis;
    * a folder of images, one sub-folder per class
      (``keras.utils.image_dataset_from_directory``, resized to ``image_size``,
      labels are class indices), used for both splits;
    * ``module:function``: the function is imported and called with no
      argument; it returns a data object `take` reads (used for both splits)
      or a dict ``{"train": ..., "test": ...}``.

    ``train`` and ``test`` are data objects for `take` / `batches`.
    """
    import importlib
    import os

    if os.path.isdir(spec):
        import contextlib
        import io
        import sys

        from tfprune._keras import keras

        said = io.StringIO()
        with contextlib.redirect_stdout(said):  # keras prints "Found N files..." on stdout: keep stdout for results (--json)
            ds = keras.utils.image_dataset_from_directory(spec, image_size=tuple(image_size or (256, 256)), batch_size=batch_size,
                                                          shuffle=False, label_mode="int")
        sys.stderr.write(said.getvalue())  # on stderr, and only when the folder was read (an error is the only line then)
        names = getattr(ds, "class_names", [])
        ds = ds.map(lambda x, y: (x / 255.0, y))
        return ds, ds, f"image folder {spec} ({len(names)} classes: {', '.join(names[:10])}), pixels scaled to [0, 1]"
    if os.path.isfile(spec):
        if not spec.endswith(".npz"):
            raise ValueError(f"--data {spec!r}: a file must be a .npz archive. Fix: save arrays with np.savez, or pass a folder or module:function")
        with np.load(spec) as d:
            keys = list(d.files)
            if x_key is not None:
                missing = [k for k in (x_key, y_key) if k is not None and k not in keys]
                if missing:
                    raise ValueError(f"{spec} has no array(s) {missing}; it holds {keys}. Fix: --x-key / --y-key name arrays of the file")
                x = _prepare_images(d[x_key])
                data = x if y_key is None else (x, np.asarray(d[y_key]))
                return data, data, f"{spec} ({x_key}{', ' + y_key if y_key else ''}: {len(x)} samples)"
            if {"x_train", "y_train", "x_test", "y_test"} <= set(keys):
                train = (_prepare_images(d["x_train"]), np.asarray(d["y_train"]))
                test = (_prepare_images(d["x_test"]), np.asarray(d["y_test"]))
                return train, test, f"{spec} ({len(train[0])} train / {len(test[0])} test)"
            if "x" in keys:
                x = _prepare_images(d["x"])
                data = (x, np.asarray(d["y"])) if "y" in keys else x
                return data, data, f"{spec} (x{', y' if 'y' in keys else ''}: {len(x)} samples)"
            raise ValueError(f"{spec}: cannot tell which arrays are the inputs; it holds {keys}. Fix: pass --x-key NAME (and --y-key NAME)")
    if ":" in spec:
        module, _, func = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"--data {spec!r}: cannot import {func!r} from module {module!r} ({err}). Fix: check PYTHONPATH and the name") from None
        if not callable(fn):
            raise ValueError(f"--data {spec!r}: {module}.{func} is a {type(fn).__name__}, not a function. Fix: name a function "
                             "that takes no argument and returns the data")
        try:
            out = fn()
        except Exception as err:  # the user's code: name it, keep the cause (chained) for a traceback
            why = " ".join(str(err).split())
            raise ValueError(f"--data {spec!r}: {spec}() raised {type(err).__name__}{': ' + why if why else ''}. "
                             f"Fix: make {func}() run on its own (python -c 'import {module}; {module}.{func}()')") from err
        if isinstance(out, dict) and {"train", "test"} <= set(out):
            train, test = out["train"], out["test"]
            _check_returned(spec, train, "['train']")
            _check_returned(spec, test, "['test']")
            return train, test, f"{spec}() train/test"
        _check_returned(spec, out, "")
        return out, out, f"{spec}()"
    raise FileNotFoundError(f"--data {spec!r}: no such file or folder, and not a module:function")
