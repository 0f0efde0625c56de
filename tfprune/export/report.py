"""`ExportReport`: what `tfprune.export.export_tflite` produced and how faithful it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from tfprune.export.flatbuffer import TensorInfo
from tfprune.export.micro import MicroCheck
from tfprune.export.parity import OutputParity
from tfprune.report import Report, Table

__all__ = ["ExportReport"]


@dataclass
class ExportReport(Report):
    """What `export_tflite` produced and how faithful it is; ``table()``, ``to_markdown()``, ``to_dict()`` (NaN -> None).

    ``bytes`` / ``gzip_bytes``: the file's size, raw and gzip-compressed
    (level 9). ``max_abs_diff`` and ``rel_error`` are the worst over the
    outputs; ``top1_agreement`` is the first classification-like output's (NaN where
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
