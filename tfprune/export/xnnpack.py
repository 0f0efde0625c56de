"""Making sparse int8 files run on XNNPack: int8 kernels XNNPack refuses from DENSIFY are stored dense.

XNNPack (ai-edge-litert's default CPU delegate) refuses a FULLY_CONNECTED node
whose int8 weights come out of a DENSIFY op (a sparse-stored int8 kernel, at
any sparsity; it prepares int8 CONV_2D / DEPTHWISE_CONV_2D weights from
DENSIFY fine) at the first ``invoke``, and so it does a hybrid (``dynamic``)
CONV_2D / FULLY_CONNECTED with int8 weights from DENSIFY.
"""

from __future__ import annotations

import numpy as np

from tfprune.export.flatbuffer import TFLITE_INT8, op_names, pack_aligned, remove_tensors, schema
from tfprune.export.runtime import densified_values

__all__ = ["densify_for_xnnpack"]


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
    model = schema().ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = op_names(model)
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
        if sub.tensors[dst].type == TFLITE_INT8 and any(_xnnpack_refuses(u, a) for u, _, a in uses) and len(consumers.get(src, [])) == 1:
            targets.append((k, src, dst))
    if not targets or any((b.offset or 0) > 1 for b in model.buffers or []):
        return content, []
    values = densified_values(content, [dst for _, _, dst in targets])
    for _, src, dst in targets:
        buffer = sub.tensors[src].buffer
        model.buffers[buffer].data = np.ascontiguousarray(values[dst]).view(np.uint8).reshape(-1)
        sub.tensors[dst].buffer = buffer
        sub.tensors[dst].name = sub.tensors[src].name  # the weight's own name (the DENSIFY output has a generated one)
        sub.tensors[src].buffer = 0
    made = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in (sub.tensors[dst].name for _, _, dst in targets)]
    drop_ops = {k for k, _, _ in targets}
    sub.operators = [op for k, op in enumerate(ops) if k not in drop_ops]
    remove_tensors(model, 0, {src for _, src, _ in targets})
    return pack_aligned(model), made
