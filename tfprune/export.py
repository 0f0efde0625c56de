"""Export to TFLite, verified: convert, run with ai-edge-litert, compare with Keras.

Modes (``mode=``):

* ``float``   float32 weights, dense storage.
* ``sparse``  float32 weights stored sparsely (``Optimize.EXPERIMENTAL_SPARSITY``).
* ``dynamic`` int8 weights, float activations (``Optimize.DEFAULT``), sparse storage.
* ``int8``    full integer (weights and activations int8; needs a representative
  dataset), sparse storage.

Notes measured on x86: sparse storage shrinks the file; XNNPack does not run
unstructured sparsity faster, Dense layers pruned in (4, 1) blocks run
natively sparse; removing whole channels or layers is what speeds up
inference everywhere.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import tensorflow as tf

from tfprune._keras import check_model
from tfprune.data import take
from tfprune.report import Report, Table
from tfprune.wrap import is_wrapped, strip

__all__ = ["make_interpreter", "export_tflite", "ExportReport", "TensorInfo", "tflite_tensor_sparsity", "write_c_header", "MODES"]

MODES = ("float", "sparse", "dynamic", "int8")

# TensorType enum of the TFLite schema -> numpy dtype.
_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64}


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
class ExportReport(Report):
    """What `export_tflite` produced and how faithful it is; ``table()``, ``to_markdown()``, ``to_dict()`` (NaN -> None)."""

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

    def _blocks(self) -> list[str | Table]:
        lines: list[str | Table] = [
            f"{self.path} [{self.mode}] {self.bytes} bytes, {self.gzip_bytes} gzipped",
            f"parity on {self.n_samples} {'random' if self.inputs_were_random else 'sample'} inputs: "
            f"max |tflite - keras| = {self.max_abs_diff:.3g}, top-1 agreement = {self.top1_agreement:.4f}"
            f" (runtime: {self.runtime})",
        ]
        if self.tflite_accuracy is not None:
            lines.append(f"accuracy: keras {self.keras_accuracy:.4f}, tflite {self.tflite_accuracy:.4f}")
        rows = [[t.name, str(t.shape), t.dtype, t.stored, f"{t.zero_fraction:.4f}", t.bytes] for t in self.tensors]
        lines.append(Table(["tensor", "shape", "dtype", "stored", "zeros", "bytes"], rows, "llllrr"))
        return lines


def tflite_tensor_sparsity(content: bytes, min_elements: int = 2) -> list[TensorInfo]:
    """Read every constant tensor of a .tflite flatbuffer and how it is stored."""
    from ai_edge_litert import schema_py_generated as schema

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


def write_c_header(content: bytes, path: str | os.PathLike, var_name: str = "g_model") -> str:
    """Write the model as a C/C++ array (16-byte aligned) for TFLite Micro."""
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


def make_interpreter(content: bytes, num_threads: int | None = None) -> tuple[Any, str]:
    """An allocated ai-edge-litert Interpreter and the name of the runtime it uses.

    XNNPack (the default delegate) refuses some sparse quantized kernels; then
    the builtin kernels run the model, and the runtime says so.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(model_content=content, num_threads=num_threads)
        interp.allocate_tensors()
        return interp, "xnnpack"
    except RuntimeError as err:
        interp = Interpreter(
            model_content=content,
            num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
        return interp, "builtin (XNNPack refused: " + " ".join(str(err).split())[:70] + ")"


def _run_tflite(content: bytes, x: np.ndarray, num_threads: int | None = None) -> tuple[np.ndarray, str]:
    interp, runtime = make_interpreter(content, num_threads)
    inp = interp.get_input_details()[0]
    outd = interp.get_output_details()[0]
    if list(inp["shape"][1:]) != list(x.shape[1:]):
        raise ValueError(f"sample inputs have shape {x.shape[1:]}, the model expects {tuple(inp['shape'][1:])}")
    outs = []
    scale, zero = inp.get("quantization", (0.0, 0))
    oscale, ozero = outd.get("quantization", (0.0, 0))
    for i in range(len(x)):
        xi = x[i : i + 1]
        if inp["dtype"] in (np.int8, np.uint8) and scale:
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / scale + zero), info.min, info.max)
        interp.set_tensor(inp["index"], xi.astype(inp["dtype"]))
        interp.invoke()
        o = interp.get_tensor(outd["index"]).astype(np.float32)
        if outd["dtype"] in (np.int8, np.uint8) and oscale:
            o = (o - ozero) * oscale
        outs.append(o)
    return np.concatenate(outs), runtime


def export_tflite(
    model: Any,
    path: str | os.PathLike,
    mode: str = "sparse",
    sample_inputs: Any = None,
    representative_data: Any = None,
    n_samples: int = 256,
    sparse_storage: bool = True,
    int8_io: bool = False,
    c_header: str | os.PathLike | None = None,
    c_var_name: str = "g_model",
) -> ExportReport:
    """Convert ``model`` to a .tflite file at ``path``, run it, and report.

    Args:
      model: a tf-keras model, wrapped or not (wrappers are stripped here, on
        a copy; ``model`` is not changed).
      path: where to write the .tflite file.
      mode: one of ``float``, ``sparse``, ``dynamic``, ``int8`` (see module doc).
      sample_inputs: inputs for the parity check: an array, ``(x, y)`` (then
        accuracies are reported too), a ``tf.data.Dataset`` or a generator of
        batches (any form `tfprune.data` reads). Default:
        ``n_samples`` standard-normal inputs (reported as random).
      representative_data: calibration inputs for ``int8`` (same forms);
        defaults to ``sample_inputs``.
      n_samples: how many samples the parity check (and calibration) uses.
      sparse_storage: add ``EXPERIMENTAL_SPARSITY`` for ``dynamic``/``int8``.
      int8_io: for ``int8``, make the model's input and output int8 too
        (microcontroller style); parity quantizes/dequantizes around it.
      c_header: also write the model as a C array header at this path.

    Returns:
      An `ExportReport`: bytes, gzip bytes, per-tensor storage and sparsity,
      parity (max abs diff, top-1 agreement) and accuracies when labels were given.
    """
    check_model(model)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("export_tflite's parity check supports models with one input and one output")
    plain = strip(model) if is_wrapped(model) else model
    random_inputs = sample_inputs is None
    if random_inputs:
        shape = [int(d) for d in plain.inputs[0].shape[1:]]
        sample_inputs = np.random.default_rng(0).standard_normal((int(n_samples), *shape)).astype(np.float32)
    samples = take(sample_inputs, int(n_samples))
    x, y = np.asarray(samples.x, np.float32), samples.y

    converter = tf.lite.TFLiteConverter.from_keras_model(plain)
    opts = []
    if mode == "sparse" or (mode in ("dynamic", "int8") and sparse_storage):
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if mode in ("dynamic", "int8"):
        opts.append(tf.lite.Optimize.DEFAULT)
    converter.optimizations = opts
    if mode == "int8":
        if representative_data is None and random_inputs:
            raise ValueError(
                "mode='int8' needs calibration data. Fix: pass representative_data=x_train[:256] "
                "(or sample_inputs=(x, y))."
            )
        rep = np.asarray(take(representative_data if representative_data is not None else sample_inputs, int(n_samples)).x, np.float32)

        def gen() -> Iterable[list[np.ndarray]]:
            for i in range(len(rep)):
                yield [rep[i : i + 1]]

        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    content = converter.convert()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)

    ref = plain.predict(x, verbose=0, batch_size=256)
    got, runtime = _run_tflite(content, x)
    ref = ref.reshape(len(x), -1)
    got = got.reshape(len(x), -1)
    report = ExportReport(
        path=path,
        mode=mode,
        bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)),
        tensors=tflite_tensor_sparsity(content),
        n_samples=len(x),
        max_abs_diff=float(np.max(np.abs(ref - got))),
        top1_agreement=float(np.mean(ref.argmax(-1) == got.argmax(-1))) if ref.shape[-1] > 1 else float("nan"),
        inputs_were_random=random_inputs,
        runtime=runtime,
    )
    if y is not None and ref.shape[-1] > 1:
        y = y.reshape(-1)
        report.keras_accuracy = float(np.mean(ref.argmax(-1) == y))
        report.tflite_accuracy = float(np.mean(got.argmax(-1) == y))
    if c_header is not None:
        report.c_header = write_c_header(content, c_header, c_var_name)
    return report
