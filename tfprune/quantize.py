"""Sparsity-preserving quantization-aware training (PQAT) and its int8 export.

After pruning, post-training int8 quantization (``export_tflite(mode="int8")``)
rounds the float weights once; quantization-aware training fine-tunes with the
rounding in the forward pass instead. Plain QAT would refill the pruned zeros;
tfmot's prune-preserve scheme (``Default8BitPrunePreserveQuantizeScheme``)
multiplies every Conv2D / Dense kernel by its zero mask (``kernel != 0``, read
once when the QAT model is built) before the fake quantization, so the zeros
stay zero in the forward pass, get no gradient, and are int8 zeros in the
converted file.

* `pqat`: pruned model (plain or wrapped) + labelled data -> compiled QAT
  model, fine-tuned; the input model is not changed.
* `convert_qat`: QAT model -> int8 .tflite bytes (the ranges come from the
  fake-quant nodes, so no representative data), zeros stored sparsely; every
  sparse kernel is decoded and checked against a dense conversion
  (`fix_sparse_kernels`: the converter's 1x16 block encoding of an int8
  FULLY_CONNECTED kernel with fewer than 16 inputs is wrong, such kernels are
  stored dense).
* `kernel_zeros` / `tflite_kernel_zeros`: per layer, the zeros of each
  kernel in a Keras model (plain, wrapped or QAT) and in a .tflite file
  (sparse tensors decoded), to check that none was lost, and how many values
  the flatbuffer stores.

What tfmot's scheme does not preserve: DepthwiseConv2D kernels are quantized
but their zeros are not kept (tfmot disables it for that layer); `pqat`
warns when such a kernel held zeros.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfprune import data as _data
from tfprune._keras import check_model, keras
from tfprune.export.flatbuffer import TFLITE_DTYPES, op_names, pack_aligned, remove_tensors, schema
from tfprune.export.runtime import make_interpreter
from tfprune.export.xnnpack import densify_for_xnnpack
from tfprune.validation import check_int, number

__all__ = [
    "pqat",
    "convert_qat",
    "is_qat_model",
    "kernel_zeros",
    "tflite_kernel_zeros",
    "tflite_kernels",
    "decode_sparse",
    "fix_sparse_kernels",
    "repair_sparse_kernels",
    "KernelZeros",
    "run_tflite",
]


@dataclass(frozen=True)
class KernelZeros:
    """The zeros of one layer's kernel: how many, of how many weights.

    ``shape`` is the Keras kernel's shape. For a kernel read from a .tflite
    file, ``stored`` is how many values the flatbuffer stores (fewer than
    ``n`` when the tensor is stored sparsely) and ``tensor`` its name; both
    are None for Keras kernels.
    """

    layer: str
    zeros: int
    n: int
    shape: tuple = ()
    stored: int | None = None
    tensor: str | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of the kernel's weights that are exactly zero."""
        return self.zeros / max(self.n, 1)

    @property
    def stored_sparsity(self) -> float:
        """Fraction of the weights the flatbuffer does not store (0 for dense storage; NaN for Keras kernels)."""
        return float("nan") if self.stored is None else 1.0 - self.stored / max(self.n, 1)


def _tfmot() -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot


def _qat_wrapper_cls() -> Any:
    from tfprune.compat import quantize_wrapper_class

    return quantize_wrapper_class()


def is_qat_model(model: Any) -> bool:
    """True when ``model`` holds tfmot quantization wrappers (a QAT model from `pqat` or ``quantize_apply``)."""
    cls = _qat_wrapper_cls()
    return any(isinstance(layer, cls) for layer in getattr(model, "layers", []))


# ------------------------------------------------------------------ counting zeros
def count_zeros(a: np.ndarray) -> int:
    """Number of exact zeros in ``a``."""
    return int(np.count_nonzero(np.asarray(a) == 0))


def _qat_kernels(layer: Any) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(weight name, kernel values, sparsity mask or None) of a tfmot QuantizeWrapper's quantized weights."""
    out = []
    for weight, _quantizer, qvars in getattr(layer, "_weight_vars", []):
        mask = qvars.get("sparsity_mask") if isinstance(qvars, dict) else None
        out.append((weight.name, weight.numpy(), None if mask is None else np.asarray(mask)))
    return out


def _plain_kernel(layer: Any) -> np.ndarray | None:
    for attr in ("kernel", "depthwise_kernel"):
        v = getattr(layer, attr, None)
        if isinstance(v, tf.Variable):
            return v.numpy()
    return None


def kernel_zeros(model: Any) -> dict[str, KernelZeros]:
    """Per layer with a kernel (Conv / Dense / DepthwiseConv), its exact zeros, keyed by the layer's own name.

    Works on a plain model, a pruned (wrapped) one (the masks applied, as
    `tfprune.strip` would) and a QAT model (the kernel variable inside each
    quantization wrapper).
    """
    from tfprune.masks.wrapping import is_wrapped, strip

    check_model(model)
    if is_wrapped(model):
        model = strip(model)
    qcls = _qat_wrapper_cls()
    out: dict[str, KernelZeros] = {}
    for layer in model.layers:
        if isinstance(layer, qcls):
            for _name, k, _mask in _qat_kernels(layer)[:1]:
                out[layer.layer.name] = KernelZeros(layer.layer.name, count_zeros(k), int(k.size), tuple(k.shape))
            continue
        if isinstance(layer, keras.Model):
            out.update(kernel_zeros(layer))
            continue
        k = _plain_kernel(layer)
        if k is not None:
            out[layer.name] = KernelZeros(layer.name, count_zeros(k), int(k.size), tuple(k.shape))
    return out


_KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def tflite_layouts(shape: tuple) -> list[tuple]:
    """The shapes TFLite may store a Keras kernel of ``shape`` in: Dense (in, out) -> (out, in); Conv2D
    (h, w, in, out) -> (out, h, w, in); DepthwiseConv2D (h, w, c, m) -> (1, h, w, c * m)."""
    if len(shape) == 2:
        return [(shape[1], shape[0])]
    if len(shape) == 4:
        return [(shape[3], shape[0], shape[1], shape[2]), (1, shape[0], shape[1], shape[2] * shape[3])]
    return [tuple(shape)]


def _vector(union: Any) -> list[int]:
    """The values of a TFLite sparse-index vector (Int32Vector / Uint16Vector / Uint8Vector), as ints."""
    vals = getattr(union, "values", None)
    return [] if vals is None else [int(v) for v in vals]


def decode_sparse(values: np.ndarray, shape: tuple, traversal_order: list[int], block_map: list[int], levels: list[tuple]) -> np.ndarray:
    """The dense array of a TFLite sparse tensor (the format of TFLite's ``SparsityParameters``).

    ``values``: the stored values in traversal order; ``levels``: per
    traversal dimension ``("dense", size)`` or ``("csr", segments, indices)``.
    The first ``len(shape)`` traversal dimensions are the tensor's (in blocks
    where blocked), the rest are block dimensions of ``block_map``'s dims;
    blocks that reach past the tensor's edge hold zeros there (checked).
    """
    rank = len(shape)
    out = np.zeros(int(np.prod(shape)), values.dtype)
    block_sizes = [lv[1] if lv[0] == "dense" else 0 for lv in levels[rank:]]
    coords = [0] * len(levels)
    src = 0

    def place() -> None:
        nonlocal src
        orig = [0] * rank
        for i in range(rank):
            orig[traversal_order[i]] = coords[i]
        for i in range(rank, len(levels)):
            b = traversal_order[i] - rank
            d = block_map[b]
            orig[d] = orig[d] * block_sizes[b] + coords[i]
        if all(o < n for o, n in zip(orig, shape)):
            out[int(np.ravel_multi_index(orig, shape))] = values[src]
        elif values[src] != 0:  # blocks are padded past the tensor's edge with zeros
            raise ValueError(f"sparse tensor decoding: a nonzero value at {orig}, outside the shape {shape}")
        src += 1

    def visit(level: int, prev: int) -> None:
        if level == len(levels):
            place()
            return
        lv = levels[level]
        if lv[0] == "dense":
            for i in range(lv[1]):
                coords[level] = i
                visit(level + 1, prev * lv[1] + i)
        else:
            segments, indices = lv[1], lv[2]
            for i in range(segments[prev], segments[prev + 1]):
                coords[level] = indices[i]
                visit(level + 1, i)

    visit(0, 0)
    if src != len(values):
        raise ValueError(f"sparse tensor decoding used {src} of {len(values)} stored values")
    return out.reshape(shape)


def _tensor_values(model: Any, tensor: Any) -> tuple[np.ndarray, int]:
    """A constant tensor's values (sparse ones decoded) and how many values its buffer stores."""
    dtype = np.dtype(TFLITE_DTYPES[tensor.type])
    raw = model.buffers[tensor.buffer].data
    stored = np.frombuffer(bytes(bytearray(raw if raw is not None else [])), dtype)
    shape = tuple(int(d) for d in tensor.shape)
    sp = tensor.sparsity
    if sp is None:
        return stored.reshape(shape), int(stored.size)
    levels = []
    for dm in sp.dimMetadata:
        if dm.format == 0:
            levels.append(("dense", int(dm.denseSize)))
        else:
            levels.append(("csr", _vector(dm.arraySegments), _vector(dm.arrayIndices)))
    order = [int(v) for v in sp.traversalOrder]
    bmap = [int(v) for v in sp.blockMap] if sp.blockMap is not None else []
    return decode_sparse(stored, shape, order, bmap, levels), int(stored.size)


def tflite_kernels(content: bytes) -> list[dict]:
    """Every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight tensor of a .tflite file, decoded.

    One dict per op, in graph order: ``op``, ``name`` (the weight tensor's
    name; ``source -> output`` when it comes out of a DENSIFY op),
    ``values`` (numpy, TFLite layout; sparse tensors decoded with
    `decode_sparse`, whether a DENSIFY op or the op itself reads them;
    None when the encoding does not fit the shape, with the reason in
    ``error``), ``stored`` (values held in the flatbuffer), ``sparse``,
    ``tensor`` (the stored tensor's index).
    """
    model = schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    opnames = op_names(model)
    sub = model.subgraphs[0]
    ops = list(sub.operators or [])
    densify = {int(op.outputs[0]): int(op.inputs[0]) for op in ops if opnames[op.opcodeIndex] == "DENSIFY"}

    def name(t: int) -> str:
        n = sub.tensors[t].name
        return n.decode(errors="replace") if isinstance(n, bytes) else str(n)

    out = []
    for op in ops:
        kind = opnames[op.opcodeIndex]
        if kind not in _KERNEL_OPS or op.inputs is None or len(op.inputs) < 2:
            continue
        t = int(op.inputs[1])
        src = densify.get(t, t)
        try:
            values, stored, error = *_tensor_values(model, sub.tensors[src]), None
        except ValueError as err:  # an encoding that does not fit the tensor's shape
            values, stored, error = None, 0, str(err)
        out.append({
            "op": kind,
            "name": name(t) if src == t else f"{name(src)} -> {name(t)}",
            "values": values,
            "stored": stored,
            "sparse": sub.tensors[src].sparsity is not None,
            "tensor": src,
            "error": error,
        })
    return out


def tflite_kernel_zeros(content: bytes, kernels: dict[str, KernelZeros]) -> dict[str, KernelZeros]:
    """Per Keras layer in ``kernels`` (from `kernel_zeros`), the zeros of its kernel in a .tflite file.

    Zeros are counted in the decoded values (sparse tensors included), so a
    pruned zero that became nonzero, or a weight rounded to zero, shows.
    Layers are matched to the file's weight tensors by shape (TFLite layout),
    then by name (``quant_<layer>/`` or ``<layer>/``), then by order; layers
    whose kernel is not found are left out.
    """
    found = tflite_kernels(content)
    used: set[int] = set()
    out: dict[str, KernelZeros] = {}
    for layer, kz in kernels.items():
        want = tflite_layouts(tuple(kz.shape))
        cands = [i for i, f in enumerate(found) if i not in used and tuple(f["values"].shape) in want]
        if not cands:
            continue
        pat = re.compile(r"(^|[/;])(quant_)?" + re.escape(layer) + "/")
        named = [i for i in cands if pat.search(found[i]["name"])]
        i = (named or cands)[0]
        used.add(i)
        f = found[i]
        if f["values"] is None:
            raise ValueError(f"the .tflite kernel of {layer!r} ({f['name']}) cannot be decoded: {f['error']}")
        out[layer] = KernelZeros(layer, count_zeros(f["values"]), int(f["values"].size), tuple(kz.shape), int(f["stored"]), f["name"])
    return out


# ------------------------------------------------------------------ PQAT
def _quantize_pruned(plain: Any) -> Any:
    """tfmot's annotate + apply with the prune-preserve scheme; tfmot's refusals as one clear error."""
    tfmot = _tfmot()
    try:
        annotated = tfmot.quantization.keras.quantize_annotate_model(plain)
        return tfmot.quantization.keras.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"tfmot cannot quantize model {plain.name!r} for sparsity-preserving QAT: {' '.join(str(err).split())[:400]}. "
            "tfmot's 8-bit scheme takes Sequential or functional models (no nested models, no subclassed ones) of the "
            "layers it knows (Conv2D, DepthwiseConv2D, Dense, BatchNormalization after a conv, pooling, activations, "
            "Flatten/Reshape, Add/Concatenate, ...); zeros are preserved in Conv2D and Dense kernels. Fix: replace or "
            "remove the layer named above, or use post-training int8 instead: tfprune.export_tflite(model, path, "
            "mode='int8', representative_data=x_train[:256])."
        ) from err


def _zeros_not_preserved(qat: Any, before: dict[str, KernelZeros]) -> list[str]:
    """Layers whose kernel held zeros but whose quantizer keeps no sparsity mask (tfmot: DepthwiseConv2D)."""
    qcls = _qat_wrapper_cls()
    bad = []
    for layer in qat.layers:
        if not isinstance(layer, qcls):
            continue
        kz = before.get(layer.layer.name)
        kernels = _qat_kernels(layer)
        if kz is not None and kz.zeros and kernels and kernels[0][2] is None:
            bad.append(f"{layer.layer.name} ({type(layer.layer).__name__}, {kz.zeros} zeros)")
    return bad


def _reapply_masks(qat: Any) -> None:
    """Multiply each preserved kernel by its mask (a no-op unless the optimizer moved masked weights, e.g. weight decay).

    The masked weights never reach the forward pass, so this does not change
    what the model computes; it makes the kernel variables hold the zeros too.
    """
    qcls = _qat_wrapper_cls()
    for layer in qat.layers:
        if isinstance(layer, qcls):
            for weight, _q, qvars in getattr(layer, "_weight_vars", []):
                mask = qvars.get("sparsity_mask") if isinstance(qvars, dict) else None
                if mask is not None:
                    weight.assign(weight * tf.cast(mask, weight.dtype))


def pqat(
    model: Any,
    data: Any,
    y: Any = None,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    learning_rate: float = 1e-4,
    loss: Any = None,
    optimizer: Any = None,
    metrics: Any = None,
    n_samples: int | None = None,
    seed: int = 0,
    verbose: int = 0,
) -> Any:
    """Sparsity-preserving quantization-aware fine-tuning of a pruned model; returns the compiled QAT model.

    Args:
      model: a pruned tf-keras model, plain or wrapped (wrapped: stripped
        first, masks applied). Not modified.
      data: ``(x, y[, w])``, a ``tf.data.Dataset`` or a generator of such
        batches (any form `tfprune.data` reads), or ``x`` with the labels in
        ``y``.
      epochs: passes over the data (0: the QAT model untrained; its
        quantization ranges are then tfmot's initial ones, not calibrated:
        for inspection, not for export).
      batch_size: rows per step for arrays and unbatched datasets.
      learning_rate: for the default optimizer, ``Adam(learning_rate)``.
      loss: default `tfprune.training.finetune.model_loss` (the model's compiled loss,
        or a cross-entropy matched to its outputs).
      optimizer: default ``Adam(learning_rate)``.
      metrics: passed to ``compile`` (e.g. ``["accuracy"]``).
      n_samples: read at most this many samples (default: all; a stream
        without a known end must be cut with this).
      seed: shuffling seed.
      verbose: passed to ``fit``.

    Returns:
      The QAT model (tfmot ``QuantizeWrapperV2`` layers), compiled, with
      every zero of every Conv2D / Dense kernel still exactly zero. Convert
      it with `convert_qat` (or ``tfprune.export_tflite(..., mode="int8")``).

    Raises:
      ValueError: tfmot cannot quantize the model (the message names the
        layer and the fix), or the data has no labels.
    """
    from tfprune.masks.wrapping import clone, is_wrapped, strip
    from tfprune.training.finetune import check_labels, lists_as_tuples, model_loss

    check_model(model)
    epochs = check_int(epochs, "epochs", 0)
    number(learning_rate, "learning_rate", minimum=0.0, strict=True)
    batch_size = check_int(batch_size, "batch_size", 1)
    if is_qat_model(model):
        raise ValueError(f"model {model.name!r} is already a QAT model. Fix: pass the pruned float model, or keep training this one with fit.")
    spec = model_loss(model, loss)
    plain = strip(model) if is_wrapped(model) else clone(model)
    before = kernel_zeros(plain)
    qat = _quantize_pruned(plain)
    lost = _zeros_not_preserved(qat, before)
    if lost:
        warnings.warn(
            "tfmot's prune-preserve scheme does not keep the zeros of these kernels (QAT may refill them): "
            + ", ".join(lost) + ". Fix: freeze those layers (trainable=False) before pqat if their zeros matter.",
            stacklevel=2,
        )
    qat.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), loss=spec.loss, loss_weights=spec.loss_weights, metrics=metrics)
    if int(epochs) == 0:
        return qat
    src = data if y is None else (data, y)
    s = _data.take(src, n_samples, need_labels="pqat")
    check_labels(model, s.y, spec, "pqat labels")
    parts = tuple(lists_as_tuples(v) for v in ((s.x, s.y) if s.w is None else (s.x, s.y, s.w)))
    ds = tf.data.Dataset.from_tensor_slices(parts).shuffle(s.n, seed=seed).batch(int(batch_size))
    qat.fit(ds, epochs=int(epochs), verbose=verbose)
    _reapply_masks(qat)
    return qat


# ------------------------------------------------------------------ export
def convert_qat(qat_model: Any, sparse_storage: bool = True, xnnpack_safe: bool = False) -> bytes:
    """A QAT model as full-integer int8 .tflite bytes (float input and output), its zeros stored sparsely.

    The quantization ranges are the QAT model's own (fake-quant nodes), so no
    representative data is needed. ``sparse_storage`` adds
    ``EXPERIMENTAL_SPARSITY`` (the pruned zeros are not stored).
    ``xnnpack_safe=True`` stores dense the int8 kernels XNNPack refuses from
    DENSIFY (FULLY_CONNECTED, `tfprune.export.densify_for_xnnpack`); by
    default they stay sparse, and the builtin kernels run the file.

    Every sparse kernel is decoded and compared with a dense conversion of the
    same model; one that differs is stored dense (with a warning). Seen with
    TensorFlow 2.21: a FULLY_CONNECTED int8 kernel with fewer inputs than
    the converter's 1x16 blocks (e.g. 8) is written as one block of row 0,
    and the file computes wrong outputs.
    """
    check_model(qat_model, "qat_model")
    if not is_qat_model(qat_model):
        raise ValueError(
            f"model {qat_model.name!r} has no quantization wrappers: it is not a QAT model. Fix: tfprune.quantize.pqat(model, data) "
            "first, or export a float model with tfprune.export_tflite(model, path, mode='int8', representative_data=...)."
        )
    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    opts = [tf.lite.Optimize.DEFAULT]
    if sparse_storage:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = opts
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        content = converter.convert()
        if sparse_storage:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            content = fix_sparse_kernels(content, converter.convert())
    if xnnpack_safe and sparse_storage:
        content, _ = densify_for_xnnpack(content)
    return content


def fix_sparse_kernels(sparse: bytes, dense: bytes) -> bytes:
    """``sparse`` with every sparse kernel that does not decode to ``dense``'s values replaced by those values, stored dense.

    ``sparse`` and ``dense``: the same model converted with and without
    ``EXPERIMENTAL_SPARSITY`` (same other options). Warns naming the kernels
    it stored dense; returns ``sparse`` unchanged when all decode right.
    `repair_sparse_kernels` does the same silently and returns the names.
    """
    content, fixed = repair_sparse_kernels(sparse, dense)
    if fixed:
        warnings.warn(
            "the converter's sparse encoding of these kernels does not hold their values, so they are stored dense: " + ", ".join(fixed),
            stacklevel=3,
        )
    return content


def repair_sparse_kernels(sparse: bytes, dense: bytes) -> tuple[bytes, list[str]]:
    """`fix_sparse_kernels` without the warning: the repaired file and one line per kernel stored dense.

    Each line is ``"<tensor name> <TFLite shape>"`` plus the decoding error
    when the encoding does not even fit the shape. Seen with TensorFlow 2.21:
    an int8 FULLY_CONNECTED kernel with fewer than 16 inputs is encoded as
    one 1x16 block per row and computes wrong outputs.
    """
    got, want = tflite_kernels(sparse), tflite_kernels(dense)
    if len(got) != len(want):
        raise RuntimeError(f"the sparse and dense conversions differ in their kernel ops ({len(got)} vs {len(want)})")
    bad = [(g, w) for g, w in zip(got, want) if g["sparse"] and (g["values"] is None or not np.array_equal(g["values"], w["values"]))]
    if not bad:
        return sparse, []
    fb = schema()
    model = fb.ModelT.InitFromPackedBuf(bytearray(sparse), 0)
    sub = model.subgraphs[0]
    densify_code = {i for i, oc in enumerate(model.operatorCodes or [])
                    if max(oc.builtinCode, oc.deprecatedBuiltinCode) == fb.BuiltinOperator.DENSIFY}
    drop_ops: set[int] = set()
    drop_tensors: set[int] = set()
    for g, w in bad:
        src = g["tensor"]
        t = sub.tensors[src]
        t.sparsity = None
        model.buffers[t.buffer].data = np.ascontiguousarray(w["values"]).view(np.uint8).reshape(-1)
        for k, op in enumerate(sub.operators or []):  # behind a DENSIFY: the op's output takes the dense values, the op goes
            if op.opcodeIndex in densify_code and int(op.inputs[0]) == src:
                dst = int(op.outputs[0])
                sub.tensors[dst].buffer, t.buffer = t.buffer, 0
                sub.tensors[dst].name = t.name
                drop_ops.add(k)
                drop_tensors.add(src)
    if drop_ops:
        sub.operators = [op for k, op in enumerate(sub.operators) if k not in drop_ops]
        remove_tensors(model, 0, drop_tensors)
    names = [f"{g['name']} {tuple(w['values'].shape)}" + (f" ({g['error']})" if g["error"] else "") for g, w in bad]
    return pack_aligned(model), names


def run_tflite(content: bytes, x: np.ndarray, batch_size: int = 1) -> tuple[np.ndarray, str]:
    """The first output of a float-input .tflite file for each row of ``x`` (float32), and the runtime that ran it."""
    interp, runtime = make_interpreter(content)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.asarray(x, np.float32)
    if list(inp["shape"][1:]) != list(x.shape[1:]):
        raise ValueError(f"inputs have shape {x.shape[1:]}, the model expects {tuple(inp['shape'][1:])}")
    rows = []
    for i in range(0, len(x), int(batch_size)):
        xb = x[i : i + int(batch_size)]
        if len(xb) != inp["shape"][0]:
            interp.resize_tensor_input(inp["index"], [len(xb), *inp["shape"][1:]])
            interp.allocate_tensors()
            inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], xb)
        interp.invoke()
        rows.append(np.array(interp.get_tensor(out["index"]), np.float32))
    return np.concatenate(rows), runtime
