"""Export to TFLite, verified: convert, run the file, compare with Keras.

Modes (``mode=``):

* ``float``   float32 weights, dense storage.
* ``sparse``  float32 weights stored sparsely (``Optimize.EXPERIMENTAL_SPARSITY``).
* ``dynamic`` int8 weights, float activations (``Optimize.DEFAULT``), sparse storage.
* ``int8``    full integer (weights and activations int8; calibrated on
  ``representative_data``), sparse storage.
* ``micro``   full integer for TensorFlow Lite Micro: int8 weights and
  activations, int8 input and output, **dense** encoding (TFLM has no DENSIFY
  kernel and no sparse tensors, tflite-micro#491). The pruned zeros stay in the
  array: they shrink it once compressed (``gzip_bytes``); removing channels or
  layers shrinks it for real. Verified with TFLM's own Python interpreter
  (``pip install tfprune[micro]``), which also gives the smallest tensor arena.

Sparse encoding: every sparse kernel is decoded and checked against a dense
conversion (``check_encoding``); TensorFlow 2.21 writes an int8
FULLY_CONNECTED kernel with fewer than 16 inputs as 1x16 blocks that compute
wrong outputs, and such kernels are stored dense.

Runtimes: the parity check runs the file with ai-edge-litert and its default
CPU delegate, XNNPack. XNNPack refuses a FULLY_CONNECTED node whose int8
weights come out of a DENSIFY op (a sparse-stored int8 kernel, at any sparsity;
it prepares int8 CONV_2D / DEPTHWISE_CONV_2D weights from DENSIFY fine) at the
first ``invoke``, and so it does a hybrid (``dynamic``) CONV_2D / FULLY_CONNECTED
with int8 weights from DENSIFY. So ``int8`` / ``dynamic`` files store those
kernels dense by default (``xnnpack_safe=True``, `densify_for_xnnpack`: the
file runs on stock TFLite with its default delegate, and the zeros still
compress); with ``xnnpack_safe=False`` they stay sparse and only the builtin
(reference) kernels run the file, which the report's ``runtime`` then says.

Notes measured on x86: sparse storage shrinks the file; XNNPack does not run
unstructured sparsity faster, Dense layers pruned in (4, 1) blocks run
natively sparse; removing whole channels or layers is what speeds up
inference everywhere.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import tensorflow as tf

from tfprune._keras import check_model
from tfprune.data import take
from tfprune.report import Report, Table
from tfprune.wrapping import is_wrapped, strip

__all__ = [
    "make_interpreter",
    "export_tflite",
    "ExportReport",
    "OutputParity",
    "MicroCheck",
    "TensorInfo",
    "tflite_tensor_sparsity",
    "write_c_header",
    "densify_for_xnnpack",
    "run_micro",
    "micro_arena_bytes",
    "relative_error",
    "top1_stats",
    "MODES",
]

MODES = ("float", "sparse", "dynamic", "int8", "micro")
INTEGER_MODES = ("int8", "micro")

# TensorType enum of the TFLite schema -> numpy dtype.
_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64}
_INT8 = 9
_ARENA_STEP = 16  # TFLM aligns arena allocations to 16 bytes
#: The TFLM check runs at most this many of the parity samples (TFLM's Python
#: interpreter takes about 3 ms per LeNet-5 inference here).
MICRO_MAX_SAMPLES = 1000
_POOLING_OR_FLAT = ("GlobalAveragePooling", "GlobalMaxPooling", "AveragePooling", "MaxPooling", "Flatten", "Reshape")


@dataclass
class TensorInfo:
    """A constant tensor as stored in the .tflite flatbuffer.

    ``stored`` is ``dense`` or ``sparse`` (TFLite sparsity parameters);
    ``zero_fraction`` is the fraction of the logical tensor's entries that are
    zero (for sparse storage: 1 - stored values / entries).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    stored: str
    n_elements: int
    n_stored_values: int
    zero_fraction: float
    bytes: int


@dataclass
class OutputParity:
    """TFLite against Keras on one model output, over the parity samples.

    ``rel_error`` is ``||tflite - keras|| / ||keras||`` (Frobenius norms over
    all samples). ``top1_agreement`` is defined only for classification-like
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


@dataclass
class MicroCheck:
    """The file run with TensorFlow Lite Micro's Python interpreter.

    ``flash_bytes``: the model array (the C header's ``_len``). ``arena_bytes``:
    the smallest tensor arena with which TFLM allocates and runs the model
    (bisection to 16 bytes on this host, 64-bit; a 32-bit MCU needs about as
    much or a little less: keep a margin). Parity on the first ``n_samples``
    parity samples (at most `MICRO_MAX_SAMPLES`).
    """

    runtime: str
    flash_bytes: int
    arena_bytes: int
    n_samples: int
    outputs: list[OutputParity] = field(default_factory=list)
    accuracy: float | None = None

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=float("nan"))

    @property
    def rel_error(self) -> float:
        return max((o.rel_error for o in self.outputs), default=float("nan"))

    @property
    def top1_agreement(self) -> float:
        return next((o.top1_agreement for o in self.outputs if o.top1_samples), float("nan"))


@dataclass
class ExportReport(Report):
    """What `export_tflite` produced and how faithful it is; ``table()``, ``to_markdown()``, ``to_dict()`` (NaN -> None).

    ``max_abs_diff`` and ``rel_error`` are the worst over the outputs;
    ``top1_agreement`` is the first classification-like output's (NaN where
    no output has a defined top-1, see `OutputParity`). ``micro`` is the TFLM
    run (``mode="micro"`` or a C header, when tflite-micro is installed).
    ``dense_for_xnnpack``: int8 kernels stored dense for XNNPack
    (`densify_for_xnnpack`); ``dense_wrong_encoding``: kernels stored dense
    because the converter's sparse encoding of them was wrong (``check_encoding``).
    """

    path: str
    mode: str
    bytes: int
    gzip_bytes: int
    tensors: list[TensorInfo] = field(default_factory=list)
    n_samples: int = 0
    max_abs_diff: float = float("nan")
    top1_agreement: float = float("nan")
    tflite_accuracy: float | None = None
    keras_accuracy: float | None = None
    inputs_were_random: bool = False
    runtime: str = ""
    c_header: str | None = None
    rel_error: float = float("nan")
    outputs: list[OutputParity] = field(default_factory=list)
    n_calibration: int = 0
    calibration_overlap: int = 0
    dense_for_xnnpack: list[str] = field(default_factory=list)
    dense_wrong_encoding: list[str] = field(default_factory=list)
    micro: MicroCheck | None = None
    notes: list[str] = field(default_factory=list)

    def _blocks(self) -> list[str | Table]:
        kind = "random" if self.inputs_were_random else "sample"
        lines: list[str | Table] = [f"{self.path} [{self.mode}] {self.bytes} bytes, {self.gzip_bytes} gzipped"]
        if self.n_calibration:
            lines.append(f"calibration: {self.n_calibration} samples, {self.calibration_overlap} of them also parity samples")
        lines.append(
            f"parity on {self.n_samples} {kind} inputs: max |tflite - keras| = {self.max_abs_diff:.3g}, "
            f"relative error = {self.rel_error:.3g}, top-1 agreement = {_fmt_top1(self.outputs)} (runtime: {self.runtime})"
        )
        if self.tflite_accuracy is not None:
            lines.append(f"accuracy: keras {self.keras_accuracy:.4f}, tflite {self.tflite_accuracy:.4f}")
        if len(self.outputs) > 1:
            lines.append(Table(["output", "shape", "max abs diff", "relative error", "top-1 agreement"],
                               [[o.name, str(o.shape), f"{o.max_abs_diff:.3g}", f"{o.rel_error:.3g}", _fmt_top1([o])] for o in self.outputs],
                               "llrrr"))
        if self.micro is not None:
            m = self.micro
            lines.append(
                f"TFLM ({m.runtime}): flash {m.flash_bytes} bytes ({self.gzip_bytes} gzipped), arena {m.arena_bytes} bytes; "
                f"on {m.n_samples} inputs max |tflm - keras| = {m.max_abs_diff:.3g}, relative error = {m.rel_error:.3g}, "
                f"top-1 agreement = {_fmt_top1(m.outputs)}" + ("" if m.accuracy is None else f", accuracy {m.accuracy:.4f}")
            )
        lines += [f"note: {n}" for n in self.notes]
        rows = [[t.name, str(t.shape), t.dtype, t.stored, f"{t.zero_fraction:.4f}", t.bytes] for t in self.tensors]
        lines.append(Table(["tensor", "shape", "dtype", "stored", "zeros", "bytes"], rows, "llllrr"))
        return lines


def _fmt_top1(outputs: list[OutputParity]) -> str:
    o = next((o for o in outputs if o.top1_samples), None)
    if o is None:
        ties = next((o.top1_ties for o in outputs if o.top1_ties), 0)
        return f"undefined ({ties} samples tie at the maximum)" if ties else "undefined (no classification output)"
    n = o.top1_samples + o.top1_ties
    return f"{o.top1_agreement:.4f}" + (f" on {o.top1_samples} of {n} ({o.top1_ties} tie at the maximum)" if o.top1_ties else "")


# ---------------------------------------------------------------- parity math (numpy)


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


def _output_parity(name: str, ref: np.ndarray, got: np.ndarray, classes: bool) -> OutputParity:
    ref = np.asarray(ref, np.float32)
    got = np.asarray(got, np.float32).reshape(ref.shape)
    p = OutputParity(name, tuple(int(d) for d in ref.shape[1:]), float(np.max(np.abs(ref - got))) if ref.size else 0.0, relative_error(ref, got))
    if classes:
        p.top1_agreement, p.top1_samples, p.top1_ties = top1_stats(ref, got)
    return p


def _shared_rows(x: np.ndarray, rep: np.ndarray) -> int:
    """How many rows of ``x`` also occur (byte for byte) in ``rep``."""
    seen = {np.ascontiguousarray(r).tobytes() for r in np.asarray(rep, np.float32)}
    return sum(np.ascontiguousarray(r).tobytes() in seen for r in np.asarray(x, np.float32))


def _is_classification(model: Any, index: int) -> bool:
    """A ``(batch, k>1)`` output not produced by a pooling / flatten / reshape layer."""
    shape = model.outputs[index].shape
    if len(shape) != 2 or shape[-1] is None or int(shape[-1]) < 2:
        return False
    history = getattr(model.outputs[index], "_keras_history", None)
    layer = getattr(history, "layer", None)
    return not (layer is not None and type(layer).__name__.startswith(_POOLING_OR_FLAT))


# ---------------------------------------------------------------- flatbuffer reading


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def tflite_tensor_sparsity(content: bytes, min_elements: int = 2) -> list[TensorInfo]:
    """Read every constant tensor of a .tflite flatbuffer and how it is stored."""
    schema = _schema()
    model = schema.Model.GetRootAs(content, 0)
    out: list[TensorInfo] = []
    seen: set[int] = set()
    for g in range(model.SubgraphsLength()):
        sub = model.Subgraphs(g)
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            b = t.Buffer()
            if b == 0 or b in seen:
                continue
            buf = model.Buffers(b)
            nbytes = buf.DataLength()
            if nbytes == 0:
                continue
            seen.add(b)
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            n = int(np.prod(shape)) if shape else 1
            if n < min_elements:
                continue
            dtype = _TFLITE_DTYPES.get(t.Type())
            name = t.Name().decode(errors="replace")
            itemsize = np.dtype(dtype).itemsize if dtype is not None else 1
            if t.Sparsity() is not None:
                stored = nbytes // itemsize
                zf = 1.0 - stored / n
                kind = "sparse"
            else:
                kind = "dense"
                if dtype is None:
                    stored, zf = n, float("nan")
                else:
                    arr = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=dtype)
                    stored = arr.size
                    zf = float(np.count_nonzero(arr == 0)) / max(arr.size, 1)
            out.append(TensorInfo(name, shape, np.dtype(dtype).name if dtype else str(t.Type()), kind, n, int(stored), float(zf), int(nbytes)))
    return out


def _op_names(model: Any) -> dict[int, str]:
    schema = _schema()
    codes = {getattr(schema.BuiltinOperator, k): k for k in dir(schema.BuiltinOperator) if not k.startswith("_")}
    return {i: codes.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "?") for i, oc in enumerate(model.operatorCodes or [])}


def _operators(content: bytes) -> list[str]:
    """The builtin operator name of every operator of the main subgraph, in order."""
    model = _schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = _op_names(model)
    return [names[op.opcodeIndex] for op in model.subgraphs[0].operators or []]


def _output_positions(content: bytes, names: list[str], shapes: list[tuple[int, ...]] | None = None) -> list[int]:
    """For each Keras output, its position among the main subgraph's outputs.

    By the signature's output names (the Keras ``output_names``); where they
    do not all match, by the per-sample shape when each is unique; else in
    order, which holds only for single-output files (ValueError otherwise).
    """
    model = _schema().Model.GetRootAs(content, 0)
    sub = model.Subgraphs(0)
    outputs = list(sub.OutputsAsNumpy())
    if model.SignatureDefsLength():
        sd = model.SignatureDefs(0)
        by_name = {sd.Outputs(i).Name().decode(): int(sd.Outputs(i).TensorIndex()) for i in range(sd.OutputsLength())}
        if all(n in by_name for n in names) and len({by_name[n] for n in names}) == len(names):
            return [outputs.index(by_name[n]) for n in names]
    if len(names) == 1:
        return [0]
    if shapes is not None:
        file_shapes = [tuple(int(d) for d in sub.Tensors(int(t)).ShapeAsNumpy()[1:]) for t in outputs]
        if all(file_shapes.count(tuple(s)) == 1 for s in shapes) and len(set(map(tuple, shapes))) == len(shapes):
            return [file_shapes.index(tuple(s)) for s in shapes]
    raise ValueError(
        f"cannot tell which of the .tflite file's {len(outputs)} outputs is which of the model's outputs {names} "
        "(no signature names and no unique shapes). Fix: give the outputs distinct names (the layers' names)."
    )


def _keras_outputs(plain: Any, x: np.ndarray) -> tuple[list[str], list[str], list[np.ndarray]]:
    """The model's outputs on ``x``, flattened in ``plain.outputs`` order: (report names, Keras output names, arrays).

    A dict output reports its keys (``boxes``), a list its layers' names.
    """
    refs = plain.predict(x, verbose=0, batch_size=256)
    layer_names = list(plain.output_names)
    if isinstance(refs, dict):
        keys = sorted(refs)  # tf.nest's order: the order of plain.outputs and output_names
        return [str(k) for k in keys], layer_names, [np.asarray(refs[k]) for k in keys]
    refs = list(refs) if isinstance(refs, (list, tuple)) else [refs]
    return list(layer_names), layer_names, [np.asarray(r) for r in refs]


# ---------------------------------------------------------------- flatbuffer rewriting


def _pack_aligned(model: Any) -> bytes:
    """Serialize a ``ModelT`` with every buffer 16-byte aligned (as the converter writes them)."""
    import flatbuffers

    schema = _schema()

    class _AlignedBuffer(schema.BufferT):
        def Pack(self, builder: Any) -> int:  # noqa: N802  (flatbuffers' name)
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.Head() : builder.Head() + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    for i, b in enumerate(model.buffers or []):
        nb = _AlignedBuffer()
        nb.data, nb.offset, nb.size = b.data, b.offset, b.size
        model.buffers[i] = nb
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _remove_tensors(model: Any, sub_index: int, drop: set[int]) -> None:
    """Delete tensors ``drop`` of one subgraph and renumber every reference to the rest."""
    sub = model.subgraphs[sub_index]
    keep = [i for i in range(len(sub.tensors)) if i not in drop]
    new = {old: n for n, old in enumerate(keep)}
    new[-1] = -1

    def remap(ids: Any) -> Any:
        return None if ids is None else [new[int(i)] for i in ids]

    sub.tensors = [sub.tensors[i] for i in keep]
    for op in sub.operators or []:
        op.inputs, op.outputs, op.intermediates = remap(op.inputs), remap(op.outputs), remap(op.intermediates)
    sub.inputs, sub.outputs = remap(sub.inputs), remap(sub.outputs)
    for sd in model.signatureDefs or []:
        if sd.subgraphIndex == sub_index:
            for t in list(sd.inputs or []) + list(sd.outputs or []):
                t.tensorIndex = new[int(t.tensorIndex)]


def _densified_values(content: bytes, tensor_ids: list[int]) -> dict[int, np.ndarray]:
    """The dense values of DENSIFY outputs, computed by the builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return {t: np.array(interp.get_tensor(t)) for t in tensor_ids}


def _xnnpack_refuses(consumer: str, activation_type: int) -> bool:
    """Whether XNNPack refuses an op that takes int8 weights from DENSIFY (seen with ai-edge-litert 2.3)."""
    return consumer == "FULLY_CONNECTED" or activation_type == 0  # FC, or a hybrid op (float activations)


def densify_for_xnnpack(content: bytes) -> tuple[bytes, list[str]]:
    """Store dense the int8 kernels XNNPack cannot take from DENSIFY, so XNNPack runs the file.

    XNNPack (ai-edge-litert 2.3) refuses, at the first ``invoke``, a
    FULLY_CONNECTED node whose int8 weights are the output of a DENSIFY op,
    and a hybrid node (float activations, ``dynamic`` mode) whose int8 weights
    are; int8 CONV_2D / DEPTHWISE_CONV_2D weights from DENSIFY it takes. For
    every such DENSIFY the dense values (computed by the builtin DENSIFY
    kernel) replace the sparse tensor and the DENSIFY op is removed. Returns
    the new file and the names of the tensors made dense (the file unchanged
    and ``[]`` when there are none).
    """
    model = _schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = _op_names(model)
    sub = model.subgraphs[0]
    ops = sub.operators or []
    consumers: dict[int, list[tuple[str, int, int]]] = {}
    for op in ops:
        inputs = [int(t) for t in (op.inputs if op.inputs is not None else [])]
        act = sub.tensors[inputs[0]].type if inputs and inputs[0] >= 0 else -1
        for pos, t in enumerate(inputs):
            consumers.setdefault(t, []).append((names[op.opcodeIndex], pos, act))
    targets = []  # (op index, sparse input tensor, dense output tensor)
    for k, op in enumerate(ops):
        if names[op.opcodeIndex] != "DENSIFY":
            continue
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        uses = consumers.get(dst, [])
        if sub.tensors[dst].type == _INT8 and any(_xnnpack_refuses(u, a) for u, _, a in uses) and len(consumers.get(src, [])) == 1:
            targets.append((k, src, dst))
    if not targets or any((b.offset or 0) > 1 for b in model.buffers or []):
        return content, []
    values = _densified_values(content, [dst for _, _, dst in targets])
    for _, src, dst in targets:
        buffer = sub.tensors[src].buffer
        model.buffers[buffer].data = np.ascontiguousarray(values[dst]).view(np.uint8).reshape(-1)
        sub.tensors[dst].buffer = buffer
        sub.tensors[dst].name = sub.tensors[src].name  # the weight's own name (the DENSIFY output has a generated one)
        sub.tensors[src].buffer = 0
    made = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in (sub.tensors[dst].name for _, _, dst in targets)]
    drop_ops = {k for k, _, _ in targets}
    sub.operators = [op for k, op in enumerate(ops) if k not in drop_ops]
    _remove_tensors(model, 0, {src for _, src, _ in targets})
    return _pack_aligned(model), made


# ---------------------------------------------------------------- C header


def write_c_header(content: bytes, path: str | os.PathLike, var_name: str = "g_model") -> str:
    """Write the model as a C/C++ array (16-byte aligned) for TFLite Micro.

    TFLM has no DENSIFY kernel and no sparse tensors: write a ``micro`` (or
    ``float``) file here; `export_tflite` refuses a C header for sparse files.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var_name):
        raise ValueError(f"var_name must be a C identifier, got {var_name!r}")
    path = os.fspath(path)
    guard = re.sub(r"[^A-Z0-9]", "_", os.path.basename(path).upper())
    lines = [
        f"// Generated by tfprune.export_tflite: {len(content)} bytes.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"alignas(16) const unsigned char {var_name}[] = {{",
    ]
    for i in range(0, len(content), 12):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in content[i : i + 12]) + ",")
    lines += ["};", f"const unsigned int {var_name}_len = {len(content)};", "", f"#endif  // {guard}", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# ---------------------------------------------------------------- runtimes


def _zero_invoke(interp: Any) -> None:
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()


def make_interpreter(content: bytes, num_threads: int | None = None) -> tuple[Any, str]:
    """An allocated ai-edge-litert Interpreter that has run once, and the name of its runtime.

    XNNPack (the default delegate) refuses some nodes (sparse int8
    FULLY_CONNECTED weights, see the module doc), at ``allocate_tensors`` or
    at the first ``invoke``; then the builtin kernels run the model, and the
    runtime says so.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(model_content=content, num_threads=num_threads)
        interp.allocate_tensors()
        _zero_invoke(interp)
        return interp, "xnnpack"
    except RuntimeError as err:
        interp = Interpreter(
            model_content=content,
            num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        return interp, "builtin (XNNPack refused: " + " ".join(str(err).split())[:90] + ")"


def _quantize(x: np.ndarray, dtype: Any, quant: tuple[float, int]) -> np.ndarray:
    scale, zero = quant
    if np.dtype(dtype) in (np.dtype(np.int8), np.dtype(np.uint8)) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(o: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    scale, zero = quant
    if o.dtype in (np.int8, np.uint8) and scale:
        return (o.astype(np.float32) - zero) * scale
    return o.astype(np.float32)


def _run_tflite(content: bytes, x: np.ndarray, num_threads: int | None = None) -> tuple[list[np.ndarray], str]:
    """Every output (in the subgraph's order, dequantized) for each row of ``x``, and the runtime."""
    interp, runtime = make_interpreter(content, num_threads)
    inp = interp.get_input_details()[0]
    outd = interp.get_output_details()
    if list(inp["shape"][1:]) != list(x.shape[1:]):
        raise ValueError(f"sample inputs have shape {x.shape[1:]}, the model expects {tuple(inp['shape'][1:])}")
    outs: list[list[np.ndarray]] = [[] for _ in outd]
    for i in range(len(x)):
        interp.set_tensor(inp["index"], _quantize(x[i : i + 1], inp["dtype"], inp.get("quantization", (0.0, 0))))
        interp.invoke()
        for j, d in enumerate(outd):
            outs[j].append(_dequantize(interp.get_tensor(d["index"]), d.get("quantization", (0.0, 0))))
    return [np.concatenate(o) for o in outs], runtime


def _micro_runtime() -> Any:
    """TFLM's Python runtime module, or None when tflite-micro is not installed."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    return runtime


def _micro_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"tflite-micro {version('tflite-micro')}"
    except PackageNotFoundError:
        return "tflite-micro"


@contextlib.contextmanager
def _captured_fds() -> Iterator[list[str]]:
    """Capture what C code prints to fds 1 and 2 (TFLM reports errors there); the text is appended on exit."""
    out: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as buf:
        try:
            os.dup2(buf.fileno(), 1)
            os.dup2(buf.fileno(), 2)
            yield out
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for s in saved:
                os.close(s)
            buf.seek(0)
            out.append(buf.read().decode(errors="replace"))


def _micro_interpreter(content: bytes, arena_size: int) -> Any:
    """A TFLM interpreter (allocated) or RuntimeError with TFLM's own message."""
    runtime = _micro_runtime()
    with _captured_fds() as log:
        try:
            return runtime.Interpreter.from_bytes(content, arena_size=int(arena_size))
        except RuntimeError as err:
            failure = err
    message = " ".join(" ".join(log).split())
    raise RuntimeError(f"{failure}: {message}" if message else str(failure))


def micro_arena_bytes(content: bytes) -> int:
    """The smallest TFLM tensor arena (to 16 bytes) with which the model allocates, by bisection.

    Needs tflite-micro. Raises RuntimeError with TFLM's message when the model
    does not allocate even with a large arena (an operator TFLM lacks).
    """
    if _micro_runtime() is None:
        raise ImportError("micro_arena_bytes needs tflite-micro. Fix: pip install 'tfprune[micro]'")
    hi = max(len(content) * 10, 1 << 16)
    while True:
        try:
            _micro_interpreter(content, hi)
            break
        except RuntimeError:
            if hi >= 1 << 31:
                raise
            hi *= 4
    lo = 0  # assumed to fail
    while hi - lo > _ARENA_STEP:
        mid = (lo + hi) // 2 // _ARENA_STEP * _ARENA_STEP
        if mid <= lo:
            break
        try:
            _micro_interpreter(content, mid)
            hi = mid
        except RuntimeError:
            lo = mid
    return hi


def run_micro(content: bytes, x: np.ndarray, arena_size: int | None = None) -> list[np.ndarray]:
    """Run the model with TFLM's interpreter on each row of ``x``; every output, dequantized.

    Raises RuntimeError with TFLM's message when TFLM cannot run the file.
    """
    if _micro_runtime() is None:
        raise ImportError("run_micro needs tflite-micro. Fix: pip install 'tfprune[micro]'")
    interp = _micro_interpreter(content, arena_size if arena_size is not None else max(len(content) * 10, 1 << 16))
    inp = interp.get_input_details(0)
    q = inp["quantization_parameters"]
    iq = (float(q["scales"][0]), int(q["zero_points"][0])) if len(q["scales"]) else (0.0, 0)
    n_out = _schema().Model.GetRootAs(content, 0).Subgraphs(0).OutputsLength()
    oq = []
    for j in range(n_out):
        p = interp.get_output_details(j)["quantization_parameters"]
        oq.append((float(p["scales"][0]), int(p["zero_points"][0])) if len(p["scales"]) else (0.0, 0))
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for i in range(len(x)):
        interp.set_input(_quantize(x[i : i + 1], inp["dtype"], iq), 0)
        with _captured_fds() as log:
            try:
                interp.invoke()
                err = None
            except RuntimeError as e:
                err = e
        if err is not None:
            raise RuntimeError(f"TFLM failed to run the model: {err}: {' '.join(' '.join(log).split())}")
        for j in range(n_out):
            outs[j].append(_dequantize(np.array(interp.get_output(j)), oq[j]))
    return [np.concatenate(o) for o in outs]


# ---------------------------------------------------------------- export


def _convert(plain: Any, mode: str, rep: np.ndarray | None, sparse: bool, int8_io: bool) -> bytes:
    """``mode``'s conversion, with ``EXPERIMENTAL_SPARSITY`` when ``sparse`` (``sparse=False`` for mode ``sparse``: a float file)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(plain)
    opts = []
    if sparse:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if mode in ("dynamic",) + INTEGER_MODES:
        opts.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = opts
    if mode in INTEGER_MODES:

        def gen() -> Iterable[list[np.ndarray]]:
            for i in range(len(rep)):
                yield [rep[i : i + 1]]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def _stores_sparse(mode: str, sparse_storage: bool) -> bool:
    return mode == "sparse" or (mode in ("dynamic", "int8") and sparse_storage)


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
        are compared one by one.
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
    check_model(model)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples!r}")
    if int(n_calibration) < 1:
        raise ValueError(f"n_calibration must be >= 1, got {n_calibration!r}")
    if len(model.inputs) != 1:
        raise ValueError(f"export_tflite's parity check supports models with one input; this model has {len(model.inputs)}")
    if c_header is not None and _stores_sparse(mode, sparse_storage):
        raise ValueError(
            f"c_header is for TensorFlow Lite Micro, which has no DENSIFY kernel and no sparse tensors "
            f"(tflite-micro#491): a mode={mode!r} file with sparse storage cannot run there. Fix: mode='micro' "
            f"(int8, dense encoding: the zeros shrink the compressed size) or mode='float'"
            + (", or sparse_storage=False" if mode in ("dynamic", "int8") else "")
            + ". For full TFLite on an embedded CPU, write the array yourself with tfprune.export.write_c_header."
        )
    if int8_io is None:
        int8_io = mode == "micro"
    plain = strip(model) if is_wrapped(model) else model
    random_inputs = sample_inputs is None
    if random_inputs:
        shape = [int(d) for d in plain.inputs[0].shape[1:]]
        sample_inputs = np.random.default_rng(0).standard_normal((int(n_samples), *shape)).astype(np.float32)
    samples = take(sample_inputs, int(n_samples))
    x, y = np.asarray(samples.x, np.float32), samples.y
    notes: list[str] = []

    rep = None
    overlap = 0
    if mode in INTEGER_MODES:
        if representative_data is None:
            raise ValueError(
                f"mode={mode!r} needs calibration data apart from the parity samples. Fix: pass "
                "representative_data=x_train[:256] (and sample_inputs=(x_test, y_test))."
            )
        rep = np.asarray(take(representative_data, int(n_calibration)).x, np.float32)
        overlap = _shared_rows(x, rep)
        if overlap:
            msg = (f"{overlap} of the {len(x)} parity samples are also calibration samples: the parity "
                   "flatters the file. Fix: representative_data from the training data, sample_inputs from held-out data.")
            warnings.warn(msg, stacklevel=2)
            notes.append(msg)

    content = _convert(plain, mode, rep, _stores_sparse(mode, sparse_storage), bool(int8_io))
    wrong: list[str] = []
    if check_encoding and _stores_sparse(mode, sparse_storage):
        from tfprune.quantize import repair_sparse_kernels

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            content, wrong = repair_sparse_kernels(content, _convert(plain, mode, rep, False, bool(int8_io)))
        if wrong:
            msg = (f"{len(wrong)} kernel(s) stored dense because the converter's sparse encoding does not hold their values "
                   "(the file would compute wrong outputs): " + "; ".join(wrong))
            warnings.warn(msg, stacklevel=2)
            notes.append(msg)
    dense_fc: list[str] = []
    if xnnpack_safe and _stores_sparse(mode, sparse_storage) and mode != "sparse":
        content, dense_fc = densify_for_xnnpack(content)
        if dense_fc:
            notes.append(f"{len(dense_fc)} int8 kernel(s) stored dense so XNNPack runs the file (it refuses int8 "
                         "FULLY_CONNECTED and hybrid weights from DENSIFY): " + ", ".join(dense_fc) + "; xnnpack_safe=False keeps them sparse")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)

    names, keras_names, refs = _keras_outputs(plain, x)
    got, runtime = _run_tflite(content, x)
    positions = _output_positions(content, keras_names, [r.shape[1:] for r in refs])
    classes = [(_is_classification(plain, i) if top1 is None else bool(top1)) and np.ndim(refs[i]) == 2 and np.shape(refs[i])[-1] > 1
               for i in range(len(names))]
    outputs = [_output_parity(n, refs[i], got[positions[i]], classes[i]) for i, n in enumerate(names)]
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
        report.micro = _micro_check(content, x, None if first is None else y, refs, names, positions, classes, notes)
    if c_header is not None:
        report.c_header = write_c_header(content, c_header, c_var_name)
    return report


def _micro_check(
    content: bytes, x: np.ndarray, y: Any, refs: list, names: list[str], positions: list[int], classes: list[bool], notes: list[str]
) -> MicroCheck | None:
    """Run the file with TFLM (when installed): smallest arena, parity with Keras."""
    if _micro_runtime() is None:
        msg = "tflite-micro is not installed: the file was not run with TensorFlow Lite Micro. Fix: pip install 'tfprune[micro]'"
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
        return None
    ops = set(_operators(content))
    if "DENSIFY" in ops:
        raise RuntimeError("TensorFlow Lite Micro has no DENSIFY kernel: this file cannot run there. Fix: mode='micro'")
    x = x[:MICRO_MAX_SAMPLES]
    refs = [np.asarray(r)[:MICRO_MAX_SAMPLES] for r in refs]
    try:
        arena = micro_arena_bytes(content)
        got = run_micro(content, x, arena)
    except RuntimeError as err:
        raise RuntimeError(f"TensorFlow Lite Micro cannot run this file ({err}). Fix: mode='micro' (int8, dense, builtin ops TFLM has)") from err
    outputs = [_output_parity(n, refs[i], got[positions[i]], classes[i]) for i, n in enumerate(names)]
    check = MicroCheck(_micro_version(), len(content), arena, len(x), outputs)
    first = next((i for i, c in enumerate(classes) if c), None)
    if y is not None and first is not None:
        yy = np.asarray(y).reshape(-1)[: len(x)]
        check.accuracy = float(np.mean(got[positions[first]].reshape(len(x), -1).argmax(-1) == yy))
    return check
