"""TensorFlow Lite Micro: running a file with TFLM's Python interpreter, its smallest arena, and C headers.

TFLM has no DENSIFY kernel and no sparse tensors (tflite-micro#491): only
dense files (``micro`` or ``float`` mode) run there. TFLM's interpreter comes
with ``pip install 'tfprune[micro]'``; without it `micro_check` warns and
returns None.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from tfprune.export.flatbuffer import operators, schema
from tfprune.export.parity import OutputParity, output_parity
from tfprune.export.runtime import dequantize_output, quantize_input
from tfprune.files import atomic_write

__all__ = [
    "MICRO_MAX_SAMPLES",
    "MicroCheck",
    "micro_runtime",
    "micro_version",
    "micro_interpreter",
    "micro_arena_bytes",
    "run_micro",
    "micro_check",
    "write_c_header",
]

_ARENA_STEP = 16  # TFLM aligns arena allocations to 16 bytes
#: The TFLM check runs at most this many of the parity samples (TFLM's Python
#: interpreter takes about 3 ms per LeNet-5 inference here).
MICRO_MAX_SAMPLES = 1000


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


def micro_runtime() -> Any:
    """TFLM's Python runtime module, or None when tflite-micro is not installed."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        return None
    return runtime


def micro_version() -> str:
    """``"tflite-micro <version>"`` of the installed distribution (``"tflite-micro"`` when unknown)."""
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


def micro_interpreter(content: bytes, arena_size: int) -> Any:
    """A TFLM interpreter for ``content`` with an ``arena_size``-byte tensor arena, allocated.

    Raises RuntimeError with TFLM's own message when it does not allocate.
    """
    runtime = micro_runtime()
    with _captured_fds() as log:
        try:
            return runtime.Interpreter.from_bytes(content, arena_size=int(arena_size))
        except RuntimeError as err:
            failure = err
    message = " ".join(" ".join(log).split())
    raise RuntimeError(f"{failure}: {message}" if message else str(failure))


def micro_arena_bytes(content: bytes) -> int:
    """The smallest TFLM tensor arena (bytes, to 16) with which the model allocates, by bisection.

    Needs tflite-micro. Raises RuntimeError with TFLM's message when the model
    does not allocate even with a large arena (an operator TFLM lacks).
    """
    if micro_runtime() is None:
        raise ImportError("micro_arena_bytes needs tflite-micro. Fix: pip install 'tfprune[micro]'")
    hi = max(len(content) * 10, 1 << 16)
    while True:
        try:
            micro_interpreter(content, hi)
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
            micro_interpreter(content, mid)
            hi = mid
        except RuntimeError:
            lo = mid
    return hi


def run_micro(content: bytes, x: np.ndarray, arena_size: int | None = None) -> list[np.ndarray]:
    """Run the model with TFLM's interpreter on each row of ``x`` (shape ``(n, *input_shape)``, float).

    Returns every output, dequantized to float32, shape ``(n, *output_shape)``.
    ``arena_size`` in bytes (default: ten times the file, at least 64 KiB).
    Raises RuntimeError with TFLM's message when TFLM cannot run the file.
    """
    if micro_runtime() is None:
        raise ImportError("run_micro needs tflite-micro. Fix: pip install 'tfprune[micro]'")
    interp = micro_interpreter(content, arena_size if arena_size is not None else max(len(content) * 10, 1 << 16))
    inp = interp.get_input_details(0)
    q = inp["quantization_parameters"]
    iq = (float(q["scales"][0]), int(q["zero_points"][0])) if len(q["scales"]) else (0.0, 0)
    n_out = schema().Model.GetRootAs(content, 0).Subgraphs(0).OutputsLength()
    oq = []
    for j in range(n_out):
        p = interp.get_output_details(j)["quantization_parameters"]
        oq.append((float(p["scales"][0]), int(p["zero_points"][0])) if len(p["scales"]) else (0.0, 0))
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for i in range(len(x)):
        interp.set_input(quantize_input(x[i : i + 1], inp["dtype"], iq), 0)
        with _captured_fds() as log:
            try:
                interp.invoke()
                err = None
            except RuntimeError as e:
                err = e
        if err is not None:
            raise RuntimeError(f"TFLM failed to run the model: {err}: {' '.join(' '.join(log).split())}")
        for j in range(n_out):
            outs[j].append(dequantize_output(np.array(interp.get_output(j)), oq[j]))
    return [np.concatenate(o) for o in outs]


def micro_check(
    content: bytes, x: np.ndarray, y: Any, refs: list, names: list[str], positions: list[int], classes: list[bool], notes: list[str]
) -> MicroCheck | None:
    """Run the file with TFLM (when installed): smallest arena, parity with Keras.

    Args:
      content: the .tflite bytes (dense: no DENSIFY op).
      x: parity inputs ``(n, *input_shape)``; the first `MICRO_MAX_SAMPLES` are run.
      y: labels for an accuracy (or None).
      refs: the Keras outputs on ``x``, one ``(n, ...)`` array per output.
      names: the outputs' report names.
      positions: for each Keras output, its position among the file's outputs.
      classes: per output, whether to measure top-1 agreement.
      notes: a list the "not installed" note is appended to.

    Returns:
      The `MicroCheck`, or None (with a warning and a note) when tflite-micro
      is not installed.
    """
    if micro_runtime() is None:
        msg = "tflite-micro is not installed: the file was not run with TensorFlow Lite Micro. Fix: pip install 'tfprune[micro]'"
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
        return None
    ops = set(operators(content))
    if "DENSIFY" in ops:
        raise RuntimeError("TensorFlow Lite Micro has no DENSIFY kernel: this file cannot run there. Fix: mode='micro'")
    x = x[:MICRO_MAX_SAMPLES]
    refs = [np.asarray(r)[:MICRO_MAX_SAMPLES] for r in refs]
    try:
        arena = micro_arena_bytes(content)
        got = run_micro(content, x, arena)
    except RuntimeError as err:
        raise RuntimeError(f"TensorFlow Lite Micro cannot run this file ({err}). Fix: mode='micro' (int8, dense, builtin ops TFLM has)") from err
    outputs = [output_parity(n, refs[i], got[positions[i]], classes[i]) for i, n in enumerate(names)]
    check = MicroCheck(micro_version(), len(content), arena, len(x), outputs)
    first = next((i for i, c in enumerate(classes) if c), None)
    if y is not None and first is not None:
        yy = np.asarray(y).reshape(-1)[: len(x)]
        check.accuracy = float(np.mean(got[positions[first]].reshape(len(x), -1).argmax(-1) == yy))
    return check


def check_c_identifier(var_name: Any, argname: str = "var_name") -> str:
    """``var_name`` when it is a C identifier (letters, digits, underscores; not starting with a digit)."""
    if not isinstance(var_name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var_name):
        raise ValueError(f"{argname} must be a C identifier (letters, digits and _; not starting with a digit), got {var_name!r}. "
                         "Fix: e.g. g_model")
    return var_name


def c_header_text(content: bytes, path: str | os.PathLike, var_name: str = "g_model") -> str:
    """The C/C++ array (16-byte aligned) `write_c_header` writes, as text (its include guard from ``path``'s name)."""
    check_c_identifier(var_name)
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
    return "\n".join(lines)


def write_c_header(content: bytes, path: str | os.PathLike, var_name: str = "g_model") -> str:
    """Write the model as a C/C++ array (16-byte aligned) for TFLite Micro, atomically; returns the path written.

    TFLM has no DENSIFY kernel and no sparse tensors: write a ``micro`` (or
    ``float``) file here; `export_tflite` refuses a C header for sparse files.
    """
    text = c_header_text(content, path, var_name)
    with atomic_write(path, "w") as f:
        f.write(text)
    return os.fspath(path)
