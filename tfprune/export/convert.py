"""Keras -> TFLite conversion settings per export mode.

Modes (``mode=`` of `tfprune.export.export_tflite`):

* ``float``   float32 weights, dense storage.
* ``sparse``  float32 weights stored sparsely (``Optimize.EXPERIMENTAL_SPARSITY``).
* ``dynamic`` int8 weights, float activations (``Optimize.DEFAULT``), sparse storage.
* ``int8``    full integer (weights and activations int8; calibrated on
  representative data), sparse storage.
* ``micro``   full integer for TensorFlow Lite Micro, int8 input and output,
  **dense** encoding (TFLM has no DENSIFY kernel and no sparse tensors).
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from typing import Any, Iterable, Iterator

import numpy as np
import tensorflow as tf

from tfprune._keras import is_keras3_object

__all__ = ["MODES", "INTEGER_MODES", "convert", "stores_sparse"]

MODES = ("float", "sparse", "dynamic", "int8", "micro")
#: Modes whose activations are int8 too (calibrated on representative data).
INTEGER_MODES = ("int8", "micro")


def convert(plain: Any, mode: str, rep: np.ndarray | None, sparse: bool, int8_io: bool) -> bytes:
    """``mode``'s conversion of a plain (unwrapped) tf-keras model to .tflite bytes.

    Args:
      plain: the tf-keras model, without pruning wrappers.
      mode: one of `MODES`.
      rep: calibration inputs, shape ``(n, *input_shape)`` float32; required
        for the `INTEGER_MODES`, ignored otherwise.
      sparse: add ``EXPERIMENTAL_SPARSITY`` (``sparse=False`` for mode
        ``sparse``: a float file with dense storage).
      int8_io: for the integer modes, make the input and output int8 too.
    """
    with _converter(plain) as converter:
        return _configured(converter, mode, rep, sparse, int8_io).convert()


@contextlib.contextmanager
def _converter(plain: Any) -> Iterator[Any]:
    """A TFLiteConverter for ``plain``: a tf-keras model directly; a Keras 3 model (TensorFlow backend) through a SavedModel
    written by ``keras.export.ExportArchive`` (the route of Keras 3's ``model.export(format="litert")``)."""
    if not is_keras3_object(plain):
        yield tf.lite.TFLiteConverter.from_keras_model(plain)
        return
    import keras as keras3

    if keras3.backend.backend() != "tensorflow":
        raise ValueError(f"exporting a Keras 3 model to TFLite needs the TensorFlow backend; this process runs Keras 3 on "
                         f"{keras3.backend.backend()!r}. Fix: save the pruned model (model.save('m.keras')), then export it in a process "
                         "started with KERAS_BACKEND=tensorflow (tfprune.export_tflite(tfprune.load_model('m.keras'), 'm.tflite'))")
    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in plain.inputs]
    with tempfile.TemporaryDirectory() as folder:
        archive = keras3.export.ExportArchive()
        archive.track(plain)
        archive.add_endpoint("serve", functools.partial(plain.__call__, training=False), input_signature=specs if len(specs) > 1 else specs[:1])
        archive.write_out(folder, verbose=False)
        yield tf.lite.TFLiteConverter.from_saved_model(folder)


def _configured(converter: Any, mode: str, rep: np.ndarray | None, sparse: bool, int8_io: bool) -> Any:
    opts = []
    if sparse:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if mode in ("dynamic",) + INTEGER_MODES:
        opts.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = opts
    if mode in INTEGER_MODES:
        if rep is None:
            raise ValueError(f"mode={mode!r} needs calibration inputs: rep is None. Fix: pass rep=x_train[:256] (float32 array).")

        def gen() -> Iterable[list[np.ndarray]]:
            for i in range(len(rep)):
                yield [rep[i : i + 1]]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


def stores_sparse(mode: str, sparse_storage: bool) -> bool:
    """Whether a ``mode`` file with ``sparse_storage`` is converted with ``EXPERIMENTAL_SPARSITY``."""
    return mode == "sparse" or (mode in ("dynamic", "int8") and sparse_storage)
