"""`ImportancePruning`: score layers, allocate one total target, prune during ``fit``.

Flow: ``tfprune.wrap(model)`` -> compile -> ``fit(..., callbacks=[tfprune.ImportancePruning(0.9)])``
-> ``tfprune.export_tflite(...)``. It subsumes `LayerwisePruning` (step handling,
masks, logs).
"""

from __future__ import annotations

from typing import Any, Mapping

from tfprune.allocation import allocate_sparsity
from tfprune.callbacks import LayerwisePruning
from tfprune.granularity import GRANULARITIES, channel_mask
from tfprune.importance import get_importance, score_layers
from tfprune.layers import PrunableLayer
from tfprune.schedule import _check_int, _check_sparsity, polynomial_sparsity

__all__ = ["ImportancePruning"]

_NEVER = 2**62  # a schedule step no training reaches: tfmot then never recomputes the mask


class ImportancePruning(LayerwisePruning):
    """Prune to ``target_sparsity`` in total, split across layers by measured importance.

    Args:
      target_sparsity: fraction of all prunable weights removed, in [0, 1).
      importance: scorer name (``tfprune.importance.list_importance()``);
        default ``capacity`` (data-free).
      allocation: allocator name; default ``importance`` (How Compact?: LAMP
        scores weighted by layer importance). Any allocator works; score-free
        ones ignore the scores.
      data: ``(x, y)`` or a tf.data dataset, for data-driven scorers.
      reestimate_every: re-score and re-allocate every this many epochs while
        the ramp is running (None: score once at train begin).
      granularity: ``unstructured`` (default), ``block`` (use
        ``wrap(..., block_size=(4, 1))``; allocation unchanged) or ``channel``
        (whole output channels, masks set by this callback).
      importance_kwargs, allocation_kwargs: passed to the scorer / allocator.
      **kwargs: `LayerwisePruning` arguments (begin_step, end_step, frequency, ...).

    Attributes: ``scores_`` (`ImportanceScores`), ``allocation_``, ``targets_``,
    ``importance_seconds_``.
    """

    def __init__(
        self,
        target_sparsity: float,
        importance: str = "capacity",
        allocation: str = "importance",
        data: Any = None,
        reestimate_every: int | None = None,
        granularity: str = "unstructured",
        importance_kwargs: Mapping[str, Any] | None = None,
        allocation_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        target_sparsity = _check_sparsity(target_sparsity, "target_sparsity")
        super().__init__(target_sparsity, allocation=allocation, allocation_kwargs=allocation_kwargs, **kwargs)
        _, wants_data = get_importance(importance)  # validates the name
        if wants_data and data is None:
            raise ValueError(f"importance={importance!r} needs calibration data. Fix: pass data=(x_calib, y_calib).")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.target_sparsity = target_sparsity
        self.importance = importance
        self.data = data
        self.reestimate_every = None if reestimate_every is None else _check_int(reestimate_every, "reestimate_every", 1)
        self.granularity = granularity
        self.importance_kwargs = dict(importance_kwargs or {})
        self.scores_ = None
        self.importance_seconds_ = 0.0
        self._channel_layers: list[PrunableLayer] = []

    def compute_targets(self, layers: list[PrunableLayer]) -> dict[str, float]:
        kw = dict(self.importance_kwargs)
        if self.importance == "sensitivity":
            kw.setdefault("sparsity", self.target_sparsity)
        model = self.model if get_importance(self.importance)[1] else layers
        if self.verbose:
            print(f"ImportancePruning: scoring {len(layers)} layers with {self.importance!r}")
        self.scores_ = score_layers(model, self.importance, data=self.data, **kw)
        self.importance_seconds_ += self.scores_.seconds
        scores = {p.name: self.scores_.scores[p.name] for p in layers}
        self.allocation_ = allocate_sparsity(layers, self.target_sparsity, method=self.allocation, scores=scores, **self.allocation_kwargs)
        return dict(self.allocation_.targets)

    # ---------------------------------------------------------------- channel
    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        self._channel_layers = []
        if self.granularity == "channel":
            for p in self._layers():
                # tfmot must not touch these masks: move its pruning out of reach.
                p.schedule.set(begin_step=_NEVER, end_step=_NEVER)
                self._channel_layers.append(p)

    def _channel_step(self, step: int) -> None:
        begin, end, freq = self.begin_step_, self.end_step_, self.frequency_
        if step < begin or step > end or ((step - begin) % freq and step != end):
            return
        for p in self._channel_layers:
            target = self.targets_.get(p.name)
            if target is None:
                continue
            s = polynomial_sparsity(step, min(self.initial_sparsity, target), target, begin, end, self.power)
            kernel_var = getattr(p.inner, p.weight)
            mask_var = p.layer.pruning_vars[0][1]
            m = channel_mask(kernel_var.numpy() * mask_var.numpy(), s, transpose="Transpose" in p.layer_type)
            mask_var.assign(m.astype(mask_var.dtype.as_numpy_dtype))
            kernel_var.assign(kernel_var.numpy() * m)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._channel_layers:
            self._channel_step(int(self._channel_layers[0].layer.pruning_step.numpy()))

    # ------------------------------------------------------------ re-scoring
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.reestimate_every and (epoch + 1) % self.reestimate_every == 0:
            layers = self._layers()
            step = int(layers[0].layer.pruning_step.numpy())
            if step < (self.end_step_ or 0):
                self.targets_ = self.compute_targets(layers)
                for p in layers:
                    if p.name in self.targets_ and self.granularity != "channel":
                        p.schedule.set(target_sparsity=self.targets_[p.name])
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            logs["importance_seconds"] = float(self.importance_seconds_)


