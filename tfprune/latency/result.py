"""What `tfprune.compress` returns: the model, the search's path, measured latencies and accuracies, a table and a plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tfprune.report import Report, Table

__all__ = ["SearchStep", "CompressResult"]


@dataclass
class SearchStep:
    """One accepted step of the search.

    Attributes:
      iteration: 1, 2, ...
      group: the channel group cut (named after its first producer layer), or the last layer of the unit removed.
      removed: channels removed from the group (``kind == "channels"``), or layers removed with the unit.
      predicted_ms: the table's latency of the model after the step (ms per batch-1 invocation).
      proxy_accuracy: the proposal's score (validation accuracy on the proposal images before fine-tuning).
      accuracy: the same images' accuracy after the step's fine-tuning.
      proposals: how many proposals were scored (every group and unit that proposed a cut, over every try of a halved step).
      seconds: wall time of the step.
      kind: ``"channels"`` (a channel cut), ``"layer"`` or ``"block"`` (a unit removed, as shallowing removes them).
      measured_ratio: the model's latency after the step as float TFLite / the dense model's, timed together (NaN when the
        search did not check latencies).
      params: the model's parameters after the step (0 in states written before it was recorded).
      step_ms: the latency saving this step was asked for (ms; the planned step, halved each time the best proposal lost
        more than ``max_step_drop``; 0 in states written before it was recorded).
      finetune_steps: fine-tuning steps this step ran (``finetune_steps`` scaled by ``step_ms`` over the planned step).
      file_bytes: with `compress`'s ``size``, the bytes of the model's file after the step, converted as it would be written
        (``CompressResult.size_format``); 0 without ``size``.
    """

    iteration: int
    group: str
    removed: int
    predicted_ms: float
    proxy_accuracy: float
    accuracy: float
    proposals: int
    seconds: float
    kind: str = "channels"
    measured_ratio: float = float("nan")
    params: int = 0
    step_ms: float = 0.0
    finetune_steps: int = 0
    file_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompressResult(Report):
    """The result of `tfprune.compress`.

    Latencies are milliseconds per batch-1 invocation: ``*_predicted_ms`` from
    the latency table, ``dense_ms`` / ``final_ms`` measured on float TFLite
    files of the dense and final models (interleaved, same machine and
    threads). Accuracies are fractions on the validation images. Sizes:
    ``dense_params`` / ``final_params`` (parameters), ``dense_bytes`` /
    ``final_float_bytes`` (float .tflite files); `stages` puts them side by
    side. ``stop_reason`` says why the search ended (budget met, time
    budget, no proposal left). ``size_budget``: the most bytes the written
    file may have (None: no limit), ``size_format`` the format the search
    sized (``"int8"`` or ``"float"``); `meets_size` says whether the file fits.
    """

    model: Any = field(repr=False)
    steps: list[SearchStep]
    latency_kind: str
    latency_budget: float
    budget_ms: float
    dense_predicted_ms: float
    final_predicted_ms: float
    dense_ms: float
    final_ms: float
    dense_accuracy: float
    final_accuracy: float
    max_accuracy_drop: float
    search_seconds: float
    total_seconds: float
    dense_proposal_accuracy: float = float("nan")
    threads: int = 1
    device: str = "host"
    export: Any = field(default=None, repr=False)
    out: str | None = None
    file_choice: dict | None = None
    final_steps: int = 0
    dense_params: int = 0
    final_params: int = 0
    dense_bytes: int = 0
    final_float_bytes: int = 0
    stop_reason: str = ""
    size_budget: int | None = None
    size_format: str | None = None

    def stages(self) -> list[dict[str, Any]]:
        """The pipeline stage by stage: what each did, its latency, size and accuracy.

        One dict per stage (``stage``, ``what``, ``params``, ``bytes``, ``latency_ratio``, ``ms``, ``accuracy``, ``images``):
        ``"dense"``; ``"search"`` (the accepted cuts, latency as the last step's measured ratio, accuracy on the proposal images
        after the step's fine-tuning); ``"fine-tune"`` (the final Keras model, measured as float TFLite, accuracy on all
        validation images); and with ``out``, ``"file"`` (the written .tflite: float or int8, its own timing and accuracy on
        the first 1,000 validation images). ``bytes`` are float TFLite file sizes except for an int8 file; NaN or 0 where a
        number was not measured.
        """
        nan = float("nan")
        channels = sum(s.removed for s in self.steps if s.kind == "channels")
        layers = sum(s.removed for s in self.steps if s.kind != "channels")
        last = self.steps[-1] if self.steps else None
        rows = [{"stage": "dense", "what": "the trained model", "params": self.dense_params, "bytes": self.dense_bytes,
                 "latency_ratio": 1.0, "ms": self.dense_ms, "accuracy": self.dense_accuracy, "images": "validation"}]
        if last is not None:
            what = f"{len(self.steps)} step(s): {channels} channel(s) cut" + (f", {layers} layer(s) removed" if layers else "")
            rows.append({"stage": "search", "what": what, "params": last.params, "bytes": 0,
                         "latency_ratio": last.measured_ratio if last.measured_ratio == last.measured_ratio
                         else last.predicted_ms / self.dense_predicted_ms,
                         "ms": nan, "accuracy": last.accuracy, "images": "proposal"})
        rows.append({"stage": "fine-tune", "what": f"{self.final_steps} fine-tuning step(s)", "params": self.final_params,
                     "bytes": self.final_float_bytes, "latency_ratio": self.latency_ratio, "ms": self.final_ms,
                     "accuracy": self.final_accuracy, "images": "validation"})
        if self.file_choice:
            c, fmt = self.file_choice, self.file_choice.get("format", "float")
            ms = c.get(f"{fmt}_ms", nan)
            float_ms = c.get("float_ms")
            ratio = self.latency_ratio * ms / float_ms if float_ms else nan
            rows.append({"stage": "file", "what": f"{fmt} .tflite", "params": self.final_params, "bytes": int(c.get(f"{fmt}_bytes") or 0),
                         "latency_ratio": ratio, "ms": ms, "accuracy": c.get(f"{fmt}_accuracy") or nan, "images": "validation[:1000]"})
        return rows

    @property
    def latency_ratio(self) -> float:
        """Measured final / dense latency."""
        return self.final_ms / self.dense_ms if self.dense_ms else float("nan")

    @property
    def predicted_ratio(self) -> float:
        """Predicted final / dense latency (the table's)."""
        return self.final_predicted_ms / self.dense_predicted_ms if self.dense_predicted_ms else float("nan")

    @property
    def table_error(self) -> float:
        """The table's relative error on the final model's latency ratio: predicted ratio / measured ratio - 1.

        Ratios to the dense model, not milliseconds: a host's absolute speed drifts between the table's timings and the
        final ones (by 12% within minutes on this project's machine), and both models are timed together, so the ratio
        is what the table is asked to predict. `table_error_ms` is the error in milliseconds."""
        return self.predicted_ratio / self.latency_ratio - 1.0 if self.latency_ratio else float("nan")

    @property
    def table_error_ms(self) -> float:
        """Predicted / measured milliseconds of the final model - 1 (includes the host's drift since the table was built)."""
        return self.final_predicted_ms / self.final_ms - 1.0 if self.final_ms else float("nan")

    @property
    def meets_latency(self) -> bool:
        """The measured final latency is within the budget (a ratio: of the measured dense latency)."""
        if self.latency_kind == "ratio":
            return self.latency_ratio <= self.latency_budget
        return self.final_ms <= self.latency_budget

    @property
    def meets_accuracy(self) -> bool:
        return self.dense_accuracy - self.final_accuracy <= self.max_accuracy_drop

    @property
    def file_bytes(self) -> int | None:
        """Bytes of the written file (None without ``out``)."""
        return None if self.export is None else int(self.export.bytes)

    @property
    def meets_size(self) -> bool | None:
        """The written file has at most ``size_budget`` bytes (None when no size was asked for or no file was written)."""
        if self.size_budget is None or self.file_bytes is None:
            return None
        return self.file_bytes <= self.size_budget

    def _extra_dict(self) -> dict[str, Any]:
        return {"latency_ratio": self.latency_ratio, "predicted_ratio": self.predicted_ratio, "table_error": self.table_error,
                "table_error_ms": self.table_error_ms,
                "meets_latency": self.meets_latency, "meets_accuracy": self.meets_accuracy, "meets_size": self.meets_size,
                "tflite_bytes": self.file_bytes,
                "stages": self.stages()}

    def _blocks(self) -> list[str | Table]:
        budget = f"{self.latency_budget:g}x dense" if self.latency_kind == "ratio" else f"{self.latency_budget:g} ms"
        sized = self.size_budget is not None
        rows = [[0, "dense", "", round(self.dense_predicted_ms, 4), 1.0, 1.0, "", round(self.dense_proposal_accuracy, 4)]
                + ([""] if sized else [])]
        for s in self.steps:
            what = s.group if s.kind == "channels" else f"{s.group} ({s.kind} removed)"
            rows.append([s.iteration, what, s.removed, round(s.predicted_ms, 4), round(s.predicted_ms / self.dense_predicted_ms, 3),
                         "" if s.measured_ratio != s.measured_ratio else round(s.measured_ratio, 3),
                         round(s.proxy_accuracy, 4), round(s.accuracy, 4)] + ([f"{s.file_bytes:,}" if s.file_bytes else ""] if sized else []))
        return [
            f"compress: budget {budget} ({self.budget_ms:.4f} ms predicted), {len(self.steps)} step(s), search {self.search_seconds:.0f} s, "
            f"total {self.total_seconds:.0f} s; table for {self.device!r}, {self.threads} thread(s)"
            + (f"; the search stopped: {self.stop_reason}" if self.stop_reason else ""),
            Table(["step", "group cut", "channels / layers", "predicted ms", "ratio", "measured ratio", "proxy acc", "acc after fine-tune"]
                  + ([f"{self.size_format} file bytes"] if sized else []), rows),
            "stages:",
            Table(["stage", "what", "params", "bytes", "latency ratio", "ms", "accuracy", "images"],
                  [[r["stage"], r["what"], f"{r['params']:,}", f"{r['bytes']:,}" if r["bytes"] else "",
                    "" if r["latency_ratio"] != r["latency_ratio"] else round(r["latency_ratio"], 3),
                    "" if r["ms"] != r["ms"] else round(r["ms"], 4), round(r["accuracy"], 4), r["images"]] for r in self.stages()]),
            f"measured (float TFLite, batch 1): dense {self.dense_ms:.4f} ms, final {self.final_ms:.4f} ms, ratio {self.latency_ratio:.3f} "
            f"(predicted {self.predicted_ratio:.3f}; table error on the final model {self.table_error:+.1%}); "
            f"{'meets' if self.meets_latency else 'MISSES'} the budget",
            f"accuracy: dense {self.dense_accuracy:.4f}, final {self.final_accuracy:.4f} (drop {self.dense_accuracy - self.final_accuracy:+.4f}, "
            f"allowed {self.max_accuracy_drop:g}: {'within' if self.meets_accuracy else 'OVER'})",
        ] + ([self._file_line()] if self.file_choice else []) + ([self._size_line()] if self.size_budget is not None else [])

    def _size_line(self) -> str:
        if self.file_bytes is None:
            return f"size: allowed {self.size_budget:,} bytes; no file written"
        return (f"size: file {self.file_bytes:,} bytes, allowed {self.size_budget:,} "
                f"({'within' if self.meets_size else 'OVER'})")

    def _file_line(self) -> str:
        c = self.file_choice or {}
        fmt = c.get("format", "?")
        parts = [f"file {self.out}: {fmt}, {c.get(f'{fmt}_bytes', 0):,} bytes, {c.get(f'{fmt}_ms', float('nan')):.4f} ms, "
                 f"TFLite accuracy {c.get(f'{fmt}_accuracy') or float('nan'):.4f}"]
        if c.get("reason"):
            parts.append(f"({c['reason']})")
        return " ".join(parts)

    def plot(self, path: str, others: dict[str, tuple[float, float]] | None = None) -> str:
        """Accuracy vs latency ratio of every accepted step (the search's path: measured when the search checked latencies, else
        predicted), the final point measured, and ``others``
        (label -> (measured latency ratio, accuracy), e.g. uniform channel pruning at the same latency). Writes a PNG; returns ``path``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from tfprune.files import atomic_path

        fig, ax = plt.subplots(figsize=(6, 4))
        measured = bool(self.steps) and all(s.measured_ratio == s.measured_ratio for s in self.steps)
        xs = [1.0] + [s.measured_ratio if measured else s.predicted_ms / self.dense_predicted_ms for s in self.steps]
        ys = [self.dense_proposal_accuracy] + [s.accuracy for s in self.steps]
        ax.plot(xs, ys, "o-", color="tab:blue", label=f"search path ({'measured' if measured else 'predicted'} latency, proposal images)")
        tuned = f", after {self.final_steps} fine-tuning steps" if self.final_steps else ", before a final fine-tune"
        ax.plot([self.latency_ratio], [self.final_accuracy], "*", ms=14, color="tab:red", label=f"final (measured{tuned}; all validation images)")
        for i, (label, (lx, ly)) in enumerate((others or {}).items()):
            ax.plot([lx], [ly], "s", ms=8, color=f"C{i + 2}", label=label)
        if self.latency_kind == "ratio":
            ax.axvline(self.latency_budget, ls="--", color="grey", lw=1, label="budget")
        ax.set_xlabel("latency / dense latency")
        ax.set_ylabel("accuracy")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        return path
