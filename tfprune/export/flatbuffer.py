"""Reading and rewriting .tflite flatbuffers: constant tensors and their storage, operators, outputs.

Uses the TFLite schema bindings that ship with ai-edge-litert
(``ai_edge_litert.schema_py_generated``) and the ``flatbuffers`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TFLITE_DTYPES",
    "TFLITE_INT8",
    "TensorInfo",
    "schema",
    "tflite_tensor_sparsity",
    "op_names",
    "operators",
    "output_positions",
    "pack_aligned",
    "remove_tensors",
]

#: TensorType enum of the TFLite schema -> numpy dtype.
TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64}
#: The schema's TensorType of int8.
TFLITE_INT8 = 9


@dataclass
class TensorInfo:
    """A constant tensor as stored in the .tflite flatbuffer.

    ``stored`` is ``dense`` or ``sparse`` (TFLite sparsity parameters);
    ``zero_fraction`` is the fraction of the logical tensor's entries that are
    zero (for sparse storage: 1 - stored values / entries); ``bytes`` is the
    size of its buffer in the file.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    stored: str
    n_elements: int
    n_stored_values: int
    zero_fraction: float
    bytes: int


def schema() -> Any:
    """The TFLite flatbuffer schema module (``ai_edge_litert.schema_py_generated``)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def tflite_tensor_sparsity(content: bytes, min_elements: int = 2) -> list[TensorInfo]:
    """Read every constant tensor of a .tflite flatbuffer and how it is stored.

    Args:
      content: the .tflite file's bytes.
      min_elements: leave out tensors with fewer entries (scalars).

    Returns:
      One `TensorInfo` per constant buffer (shared buffers once), in tensor order.
    """
    fb = schema()
    model = fb.Model.GetRootAs(content, 0)
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
            dtype = TFLITE_DTYPES.get(t.Type())
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


def op_names(model: Any) -> dict[int, str]:
    """Operator-code index -> builtin operator name (``"CONV_2D"``; ``"?"`` if unknown) of an unpacked ``ModelT``."""
    fb = schema()
    codes = {getattr(fb.BuiltinOperator, k): k for k in dir(fb.BuiltinOperator) if not k.startswith("_")}
    return {i: codes.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "?") for i, oc in enumerate(model.operatorCodes or [])}


def operators(content: bytes) -> list[str]:
    """The builtin operator name of every operator of the main subgraph of a .tflite file, in order."""
    model = schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = op_names(model)
    return [names[op.opcodeIndex] for op in model.subgraphs[0].operators or []]


def output_positions(content: bytes, names: list[str], shapes: list[tuple[int, ...]] | None = None) -> list[int]:
    """For each Keras output, its position among the main subgraph's outputs.

    By the signature's output names (the Keras ``output_names``); where they
    do not all match, by the per-sample shape (``shapes``, without the batch
    axis) when each is unique; else in order, which holds only for
    single-output files (ValueError otherwise).
    """
    model = schema().Model.GetRootAs(content, 0)
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


def pack_aligned(model: Any) -> bytes:
    """Serialize a ``ModelT`` with every buffer 16-byte aligned (as the converter writes them)."""
    import flatbuffers

    fb = schema()

    class _AlignedBuffer(fb.BufferT):
        def Pack(self, builder: Any) -> int:  # noqa: N802  (flatbuffers' name)
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.Head() : builder.Head() + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            fb.BufferAddOffset(builder, self.offset)
            fb.BufferAddSize(builder, self.size)
            return fb.BufferEnd(builder)

    for i, b in enumerate(model.buffers or []):
        nb = _AlignedBuffer()
        nb.data, nb.offset, nb.size = b.data, b.offset, b.size
        model.buffers[i] = nb
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def remove_tensors(model: Any, sub_index: int, drop: set[int]) -> None:
    """Delete tensors ``drop`` of subgraph ``sub_index`` of a ``ModelT`` and renumber every reference to the rest (in place)."""
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
