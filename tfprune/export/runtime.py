"""Running .tflite files with ai-edge-litert: the interpreter (XNNPack, or the builtin kernels), inputs in, outputs out."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["make_interpreter", "quantize_input", "dequantize_output", "run_tflite_outputs", "densified_values"]


def _zero_invoke(interp: Any) -> None:
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()


def make_interpreter(content: bytes, num_threads: int | None = None) -> tuple[Any, str]:
    """An allocated ai-edge-litert Interpreter that has run once, and the name of its runtime.

    XNNPack (the default delegate) refuses some nodes (sparse int8
    FULLY_CONNECTED weights, see `tfprune.export.xnnpack`), at
    ``allocate_tensors`` or at the first ``invoke``; then the builtin kernels
    run the model, and the runtime (``"builtin (XNNPack refused: ...)"``
    instead of ``"xnnpack"``) says so.
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


def quantize_input(x: np.ndarray, dtype: Any, quant: tuple[float, int]) -> np.ndarray:
    """``x`` (float) as the input tensor's ``dtype``: quantized with ``quant = (scale, zero point)`` for int8/uint8 (scale 0: cast)."""
    scale, zero = quant
    if np.dtype(dtype) in (np.dtype(np.int8), np.dtype(np.uint8)) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize_output(o: np.ndarray, quant: tuple[float, int]) -> np.ndarray:
    """An output tensor as float32: int8/uint8 dequantized with ``quant = (scale, zero point)`` (scale 0: cast)."""
    scale, zero = quant
    if o.dtype in (np.int8, np.uint8) and scale:
        return (o.astype(np.float32) - zero) * scale
    return o.astype(np.float32)


def run_tflite_outputs(content: bytes, x: np.ndarray, num_threads: int | None = None) -> tuple[list[np.ndarray], str]:
    """Run a one-input .tflite file on each row of ``x`` (shape ``(n, *input_shape)``, float).

    Returns:
      Every output, in the main subgraph's order, dequantized to float32,
      shape ``(n, *output_shape)``; and the runtime that ran it (`make_interpreter`).
    """
    interp, runtime = make_interpreter(content, num_threads)
    inp = interp.get_input_details()[0]
    outd = interp.get_output_details()
    if list(inp["shape"][1:]) != list(x.shape[1:]):
        raise ValueError(f"sample inputs have shape {x.shape[1:]}, the model expects {tuple(inp['shape'][1:])}")
    outs: list[list[np.ndarray]] = [[] for _ in outd]
    for i in range(len(x)):
        interp.set_tensor(inp["index"], quantize_input(x[i : i + 1], inp["dtype"], inp.get("quantization", (0.0, 0))))
        interp.invoke()
        for j, d in enumerate(outd):
            outs[j].append(dequantize_output(interp.get_tensor(d["index"]), d.get("quantization", (0.0, 0))))
    return [np.concatenate(o) for o in outs], runtime


def densified_values(content: bytes, tensor_ids: list[int]) -> dict[int, np.ndarray]:
    """Tensor index -> values of the main subgraph's tensors ``tensor_ids`` (DENSIFY outputs) after one run of the builtin kernels on zero inputs."""
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
