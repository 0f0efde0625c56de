"""`export_tflite`: convert a tf-keras model to .tflite, write it, run it, compare with Keras, report (modes and runtimes: `tfprune.export`)."""

from __future__ import annotations

import contextlib
import gzip
import os
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from tfprune._keras import check_model, is_keras3_object
from tfprune.data import take
from tfprune.export.convert import INTEGER_MODES, MODES, convert, stores_sparse
from tfprune.export.flatbuffer import output_positions, tflite_tensor_sparsity
from tfprune.export.micro import c_header_text, check_c_identifier, micro_check
from tfprune.export.parity import is_classification, keras_outputs, output_parity, shared_rows
from tfprune.export.report import ExportReport
from tfprune.export.runtime import run_tflite_outputs
from tfprune.export.xnnpack import densify_for_xnnpack
from tfprune.files import atomic_write
from tfprune.masks.wrapping import holds_subclassed, is_wrapped, masked_inference, mid_ramp, strip
from tfprune.validation import check_int, finite_array, flag, one_of

__all__ = ["export_tflite"]


def _require_finite(values: np.ndarray, argument: str, why: str) -> None:
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise ValueError(f"{argument} holds {bad} non-finite values (NaN or inf): {why}. Fix: pass finite inputs (drop or repair "
                         "those samples, e.g. x[np.isfinite(x).all(axis=tuple(range(1, x.ndim)))])")


def _require_shape(values: np.ndarray, argument: str, model: Any) -> None:
    """``values`` must be a batch of the model's input: (n, *input shape) with every known dimension equal."""
    want = _input_shapes(model)[0]
    got = tuple(values.shape[1:])
    if values.ndim != len(want) + 1 or any(w is not None and int(w) != g for w, g in zip(want, got)):
        raise ValueError(f"{argument} has shape {values.shape}, but model {model.name!r} takes batches of shape (n, "
                         f"{', '.join('?' if w is None else str(int(w)) for w in want)}). Fix: pass samples shaped like the model's "
                         "input (e.g. x[..., None] for a missing channel axis, or resize the images)")


def _check_output_path(path: Any, argname: str) -> None:
    """Refuse, before any work, an output path that is a folder or lies under a file (nothing would be written after minutes of work)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argname} must be a file path, got {path!r}. Fix: e.g. {argname}='model.tflite'")
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise ValueError(f"{argname}={os.fspath(path)!r} is a folder. Fix: give a file path inside it, e.g. "
                         f"{os.path.join(os.fspath(path), 'model.tflite' if argname == 'path' else 'model.h')!r}")
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{argname}={os.fspath(path)!r} lies under {parent!r}, which is a file, not a folder. Fix: choose another path")


def _input_shapes(model: Any) -> list[tuple[Any, ...]]:
    """Per-sample shape of each input: a subclassed model's from the inputs it was first called with (``save_spec``)."""
    if model.inputs is not None:
        return [tuple(t.shape[1:]) for t in model.inputs]
    spec = model.save_spec()
    if spec is None:
        raise ValueError(f"model {model.name!r} is subclassed and was never called, so its inputs are unknown. Fix: call it once on a "
                         "batch, model(x[:1]), then export")
    return [tuple(t.shape[1:]) for t in tf.nest.flatten(spec[0])]


def export_tflite(
    model: Any,
    path: str | os.PathLike,
    mode: str = "sparse",
    sample_inputs: Any = None,
    representative_data: Any = None,
    n_samples: int = 256,
    sparse_storage: bool = True,
    int8_io: bool | None = None,
    c_header: str | os.PathLike | None = None,
    c_var_name: str = "g_model",
    n_calibration: int = 256,
    xnnpack_safe: bool = True,
    top1: bool | None = None,
    check_encoding: bool = True,
) -> ExportReport:
    """Convert ``model`` to a .tflite file at ``path``, run it, and report.

    Args:
      model: a tf-keras model with one input, wrapped or not (wrappers are
        stripped here, on a copy; ``model`` is not changed). Several outputs
        are compared one by one. A subclassed model (called once, so its
        input is known), or one that holds a subclassed model, is exported
        as it is: its `tfprune.PruneLayer` wrappers compute as their layers
        on the masked weights (`tfprune.masks.wrapping.masked_inference`),
        which are put back after.
      path: where to write the .tflite file.
      mode: one of ``float``, ``sparse``, ``dynamic``, ``int8``, ``micro``
        (see the module doc).
      sample_inputs: inputs for the parity check: an array, ``(x, y)`` (then
        accuracies are reported too), a ``tf.data.Dataset`` or a generator of
        batches (any form `tfprune.data` reads). Default: ``n_samples``
        standard-normal inputs (reported as random).
      representative_data: calibration inputs for ``int8`` / ``micro`` (same
        forms), required there and kept apart from ``sample_inputs``: parity
        measured on the calibration samples flatters the file, so shared
        samples are counted (``calibration_overlap``) and warned about.
      n_samples: how many samples the parity check uses.
      sparse_storage: add ``EXPERIMENTAL_SPARSITY`` for ``dynamic``/``int8``.
      int8_io: make the model's input and output int8 too (the
        microcontroller style; parity quantizes/dequantizes around it).
        Default: True for ``micro``, False otherwise.
      c_header: also write the model as a C array header at this path, for
        TensorFlow Lite Micro. Refused for sparse-stored files (TFLM cannot
        run them); the file is run with TFLM first when tflite-micro is
        installed (`MicroCheck` in ``report.micro``).
      c_var_name: the C array's name.
      n_calibration: how many ``representative_data`` samples calibrate.
      xnnpack_safe: store dense the int8 kernels XNNPack cannot take from
        DENSIFY (FULLY_CONNECTED; every hybrid op in ``dynamic`` mode) so
        XNNPack runs the file (see the module doc); False keeps them sparse.
      top1: report top-1 agreement on every output (True), none (False), or
        on classification-like outputs only (None; see `OutputParity`).
      check_encoding: for sparse-stored files, convert once more without
        sparsity and compare every sparse kernel, decoded, with its dense
        values; one that differs is stored dense (`ExportReport.dense_wrong_encoding`,
        a note, a warning). TensorFlow 2.21 encodes an int8 FULLY_CONNECTED
        kernel with fewer than 16 inputs as 1x16 blocks that compute wrong
        outputs. Costs a second conversion (for ``int8``, a second calibration).

    Returns:
      An `ExportReport`: bytes, gzip bytes, per-tensor storage and sparsity,
      parity per output (max abs diff, relative error, top-1 agreement where
      defined), accuracies when labels were given, the TFLM check.
    """
    keras3 = is_keras3_object(model)
    if keras3:
        from tfprune.keras3.inventory import check_keras3_model

        check_keras3_model(model)
    else:
        check_model(model)
    if mode not in MODES:
        one_of(mode, "mode", MODES)
    n_samples = check_int(n_samples, "n_samples", 1)
    top1 = flag(top1, "top1", allow_none=True)
    for arg, value in (("sparse_storage", sparse_storage), ("xnnpack_safe", xnnpack_safe), ("check_encoding", check_encoding)):
        flag(value, arg)
    int8_io = flag(int8_io, "int8_io", allow_none=True)
    n_calibration = check_int(n_calibration, "n_calibration", 1)
    _check_output_path(path, "path")
    if c_header is not None:
        _check_output_path(c_header, "c_header")
        check_c_identifier(c_var_name, "c_var_name")
    shapes = _input_shapes(model)
    if len(shapes) != 1:
        raise ValueError(f"export_tflite's parity check supports models with one input; this model has {len(shapes)}")
    if c_header is not None and stores_sparse(mode, sparse_storage):
        raise ValueError(
            f"c_header is for TensorFlow Lite Micro, which has no DENSIFY kernel and no sparse tensors "
            f"(tflite-micro#491): a mode={mode!r} file with sparse storage cannot run there. Fix: mode='micro' "
            f"(int8, dense encoding: the zeros shrink the compressed size) or mode='float'"
            + (", or sparse_storage=False" if mode in ("dynamic", "int8") else "")
            + ". For full TFLite on an embedded CPU, write the array yourself with tfprune.export.write_c_header."
        )
    if int8_io is None:
        int8_io = mode == "micro"
    short = mid_ramp(model) if is_wrapped(model) else ""
    if short:
        warnings.warn(f"exporting {short}", stacklevel=2)
    # A model that is or holds a subclassed model cannot be copied: it is exported as it is, its wrappers computing as their
    # layers on the masked weights (so are wrappers that strip leaves inside custom layers, which it clones whole).
    as_is = not keras3 and holds_subclassed(model)
    plain = model if as_is else strip(model) if is_wrapped(model) else model
    random_inputs = sample_inputs is None
    if random_inputs:
        shape = [int(d) for d in shapes[0]]
        sample_inputs = np.random.default_rng(0).standard_normal((int(n_samples), *shape)).astype(np.float32)
    samples = take(sample_inputs, int(n_samples))
    finite_array(np.asarray(samples.x), "sample_inputs")
    x, y = np.asarray(samples.x, np.float32), samples.y
    _require_shape(x, "sample_inputs", plain)
    _require_finite(x, "sample_inputs", "parity on them would compare NaN with NaN")
    if y is not None:
        from tfprune.training.finetune import check_labels

        check_labels(plain, y, None, "sample_inputs labels")
    notes: list[str] = []
    if keras3:
        notes.append("a Keras 3 model: converted by Keras 3's export route (keras.export.ExportArchive -> SavedModel -> "
                     "TFLiteConverter.from_saved_model, as model.export(format='litert') does, TFLite builtin ops only)")

    rep = None
    overlap = 0
    if mode in INTEGER_MODES:
        if representative_data is None:
            raise ValueError(
                f"mode={mode!r} needs calibration data apart from the parity samples. Fix: pass "
                "representative_data=x_train[:256] (and sample_inputs=(x_test, y_test))."
            )
        rep_raw = np.asarray(take(representative_data, int(n_calibration)).x)
        finite_array(rep_raw, "representative_data")
        rep = rep_raw.astype(np.float32)
        _require_shape(rep, "representative_data", plain)
        _require_finite(rep, "representative_data", "int8 calibration would take its ranges from them")
        overlap = shared_rows(x, rep)
        if overlap:
            msg = (f"{overlap} of the {len(x)} parity samples are also calibration samples: the parity "
                   "flatters the file. Fix: representative_data from the training data, sample_inputs from held-out data.")
            warnings.warn(msg, stacklevel=2)
            notes.append(msg)

    with masked_inference(plain) if is_wrapped(plain) else contextlib.nullcontext():  # a subclass; wrappers inside custom layers
        content = convert(plain, mode, rep, stores_sparse(mode, sparse_storage), bool(int8_io))
        wrong: list[str] = []
        if check_encoding and stores_sparse(mode, sparse_storage):
            from tfprune.quantize import repair_sparse_kernels

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
                content, wrong = repair_sparse_kernels(content, convert(plain, mode, rep, False, bool(int8_io)))
            if wrong:
                msg = (f"{len(wrong)} kernel(s) stored dense because the converter's sparse encoding does not hold their values "
                       "(the file would compute wrong outputs): " + "; ".join(wrong))
                warnings.warn(msg, stacklevel=2)
                notes.append(msg)
        dense_fc: list[str] = []
        if xnnpack_safe and stores_sparse(mode, sparse_storage) and mode != "sparse":
            content, dense_fc = densify_for_xnnpack(content)
            if dense_fc:
                notes.append(f"{len(dense_fc)} int8 kernel(s) stored dense so XNNPack runs the file (it refuses int8 "
                             "FULLY_CONNECTED and hybrid weights from DENSIFY): " + ", ".join(dense_fc) + "; xnnpack_safe=False keeps them sparse")
        names, keras_names, refs = keras_outputs(plain, x, call=as_is)  # the user's model: called, no trace cached on it
    got, runtime = run_tflite_outputs(content, x)
    positions = output_positions(content, keras_names, [r.shape[1:] for r in refs])
    for i, n in enumerate(names):  # a verified export never verifies NaN: no file is written
        bad_keras, bad_tflite = int(np.size(refs[i]) - np.isfinite(refs[i]).sum()), int(np.size(got[positions[i]]) - np.isfinite(got[positions[i]]).sum())
        if bad_keras or bad_tflite:
            raise ValueError(f"output {n!r} is not finite on the parity samples (Keras: {bad_keras} NaN/inf values, TFLite: {bad_tflite}): "
                             "the model's weights hold NaN/inf or it overflows, so nothing was written. Fix: check the weights with "
                             "np.isfinite (e.g. after a NaN batch in training) and export a model whose outputs are finite")
    path = os.fspath(path)
    classes = [(is_classification(plain, i) if top1 is None else bool(top1)) and np.ndim(refs[i]) == 2 and np.shape(refs[i])[-1] > 1
               for i in range(len(names))]
    outputs = [output_parity(n, refs[i], got[positions[i]], classes[i]) for i, n in enumerate(names)]
    if runtime.startswith("builtin"):
        notes.append("XNNPack refused the file; the builtin (reference) kernels ran it: " + runtime)
    report = ExportReport(
        path=path,
        mode=mode,
        bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)),
        tensors=tflite_tensor_sparsity(content),
        n_samples=len(x),
        max_abs_diff=max(o.max_abs_diff for o in outputs),
        top1_agreement=next((o.top1_agreement for o in outputs if o.top1_samples), float("nan")),
        inputs_were_random=random_inputs,
        runtime=runtime,
        rel_error=max(o.rel_error for o in outputs),
        outputs=outputs,
        n_calibration=0 if rep is None else len(rep),
        calibration_overlap=overlap,
        dense_for_xnnpack=dense_fc,
        dense_wrong_encoding=wrong,
        notes=notes,
    )
    first = next((i for i, c in enumerate(classes) if c), None)
    if y is not None and first is not None:
        yy = np.asarray(y).reshape(-1)
        report.keras_accuracy = float(np.mean(np.asarray(refs[first]).argmax(-1) == yy))
        report.tflite_accuracy = float(np.mean(got[positions[first]].reshape(len(x), -1).argmax(-1) == yy))

    if mode == "micro" or c_header is not None:
        report.micro = micro_check(content, x, None if first is None else y, refs, names, positions, classes, notes)
    # Written last, both or neither: the .tflite and the C header land by rename only when both are complete.
    header = c_header_text(content, c_header, c_var_name) if c_header is not None else None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(content)
        if header is not None:
            with atomic_write(c_header, "w") as h:
                h.write(header)
    if header is not None:
        report.c_header = os.fspath(c_header)
    return report
