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

Modules: `convert` (converter settings per mode), `flatbuffer` (reading and
rewriting the file, storage and sparsity of its tensors), `xnnpack` (int8
kernels stored dense for XNNPack), `runtime` (ai-edge-litert interpreter),
`micro` (TFLM interpreter, arena, C header), `parity` (Keras against TFLite),
`report` (`ExportReport`), `pipeline` (`export_tflite`).
"""

from tfprune.export.convert import INTEGER_MODES, MODES
from tfprune.export.flatbuffer import TensorInfo, operators, tflite_tensor_sparsity
from tfprune.export.micro import MICRO_MAX_SAMPLES, MicroCheck, micro_arena_bytes, micro_interpreter, run_micro, write_c_header
from tfprune.export.parity import OutputParity, relative_error, top1_stats
from tfprune.export.pipeline import export_tflite
from tfprune.export.report import ExportReport
from tfprune.export.runtime import densified_values, make_interpreter, run_tflite_outputs
from tfprune.export.xnnpack import densify_for_xnnpack

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
    "densified_values",
    "run_micro",
    "micro_arena_bytes",
    "micro_interpreter",
    "run_tflite_outputs",
    "operators",
    "relative_error",
    "top1_stats",
    "MODES",
    "INTEGER_MODES",
    "MICRO_MAX_SAMPLES",
]
