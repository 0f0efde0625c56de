"""`LayerwisePruning`: the one callback that drives per-layer pruning during ``fit``.

It replaces tfmot's ``UpdatePruningStep`` (initialises the pruning step,
re-applies masks at epoch end) and, at train begin, sets every wrapped
layer's `LayerwiseSchedule`: its target sparsity (fraction removed) and the
ramp. At each epoch end it writes the sparsity reached into ``logs``:
``sparsity`` (total over all prunable weights) and ``sparsity/<layer>``, so
History, CSVLogger and TensorBoard record them. Put it **before** CSVLogger
and TensorBoard in the ``callbacks`` list (Keras calls callbacks in order).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import numpy as np

from tfprune._keras import keras
from tfprune.allocation import Allocation, allocate_sparsity
from tfprune.layers import WRAPPER_PREFIX, PrunableLayer, prunable_layers
from tfprune.schedule import LayerwiseSchedule, _check_int, _check_sparsity
from tfprune.wrap import wrappers

__all__ = ["LayerwisePruning", "apply_masks"]

Targets = float | Mapping[str, float] | Allocation | Callable[[list[PrunableLayer]], Any]


def apply_masks(model: Any) -> None:
    """Multiply every wrapped weight by its mask now (in place, on ``model``)."""
    for w in wrappers(model):
        if w.pruning_obj is not None:
            w.pruning_obj.weight_mask_op()


class LayerwisePruning(keras.callbacks.Callback):
    """Prune each wrapped layer to its own target during ``model.fit``.

    Args:
      targets: what each layer should reach, as fraction removed:
        a float (a total target, split by ``allocation``), a dict
        ``{layer_name: sparsity}`` (layers not named keep the target their
        schedule already has), an `Allocation`, or a callable
        ``fn(layers) -> dict | Allocation`` called at train begin with the
        model's wrapped `PrunableLayer` list.
      begin_step: pruning step (optimizer step, counted by tfmot from the first
        pruned ``fit``) at which the ramp starts.
      end_step: step at which every layer reaches its target. ``None``: after
        ``ramp_fraction`` of this ``fit``'s remaining steps (needs a known
        number of steps per epoch); when resuming a model saved mid-pruning,
        ``None`` keeps the ramp saved in its schedules.
      frequency: steps between mask updates; ``None``: ramp length / 20
        (at least 1). Masks are also updated at ``end_step`` exactly.
      initial_sparsity: sparsity at ``begin_step`` (fraction removed).
      power: exponent of the polynomial ramp.
      allocation: allocator used when ``targets`` is a float (see
        ``tfprune.allocation.list_allocators()``).
      allocation_kwargs: extra arguments for ``allocate_sparsity``.
      ramp_fraction: share of the steps used for the ramp when ``end_step`` is None.
      log_layers: also write ``sparsity/<layer>`` to logs (total is always written).
      verbose: 1 prints the allocation table at train begin.

    Attributes (after train begin):
      targets_: dict layer -> target sparsity set on the schedules.
      allocation_: the `Allocation` when one was computed, else None.
      begin_step_, end_step_, frequency_: the ramp in use.
    """

    def __init__(
        self,
        targets: Targets,
        *,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int | None = None,
        initial_sparsity: float = 0.0,
        power: float = 3.0,
        allocation: str = "uniform",
        allocation_kwargs: Mapping[str, Any] | None = None,
        ramp_fraction: float = 0.7,
        log_layers: bool = True,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        self._validate_targets(targets)
        self.targets = targets
        self.begin_step = _check_int(begin_step, "begin_step", 0)
        self.end_step = None if end_step is None else _check_int(end_step, "end_step", 0)
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step})")
        self.frequency = None if frequency is None else _check_int(frequency, "frequency", 1)
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity")
        LayerwiseSchedule(power=power)  # validates power
        self.power = float(power)
        self.allocation = allocation
        self.allocation_kwargs = dict(allocation_kwargs or {})
        if not 0.0 < float(ramp_fraction) <= 1.0:
            raise ValueError(f"ramp_fraction must be in (0, 1], got {ramp_fraction!r}")
        self.ramp_fraction = float(ramp_fraction)
        self.log_layers = log_layers
        self.verbose = verbose
        self.targets_: dict[str, float] = {}
        self.allocation_: Allocation | None = None
        self.begin_step_ = self.end_step_ = self.frequency_ = None

    @staticmethod
    def _validate_targets(targets: Any) -> None:
        if isinstance(targets, Allocation) or callable(targets):
            return
        if isinstance(targets, Mapping):
            if not targets:
                raise ValueError("targets is an empty dict: name at least one layer")
            for k, v in targets.items():
                _check_sparsity(v, f"targets[{k!r}]")
            return
        _check_sparsity(targets, "targets")

    # ------------------------------------------------------------- helpers
    def _layers(self) -> list[PrunableLayer]:
        layers = [p for p in prunable_layers(self.model) if p.wrapped]
        if not layers:
            raise ValueError(
                f"{type(self).__name__}: model {self.model.name!r} has no pruning wrappers. "
                "Fix: wrap it first, `model = tfprune.wrap(model)`, then compile and fit."
            )
        for p in layers:
            if not isinstance(p.schedule, LayerwiseSchedule):
                raise TypeError(
                    f"layer {p.name!r} is wrapped with a {type(p.schedule).__name__} schedule; "
                    f"{type(self).__name__} needs tfprune.LayerwiseSchedule. Fix: wrap with tfprune.wrap(model)."
                )
        return layers

    def compute_targets(self, layers: list[PrunableLayer]) -> dict[str, float]:
        """Resolve ``self.targets`` to ``{layer_name: sparsity}`` (subclasses override)."""
        targets = self.targets
        if callable(targets) and not isinstance(targets, (Allocation, Mapping)):
            targets = targets(layers)
        if isinstance(targets, Allocation):
            self.allocation_ = targets
            targets = targets.targets
        if isinstance(targets, Mapping):
            names = {p.name for p in layers}
            out = {}
            for k, v in targets.items():
                name = k[len(WRAPPER_PREFIX):] if k.startswith(WRAPPER_PREFIX) else k
                if name not in names:
                    raise ValueError(f"unknown layer name {k!r} in targets; wrapped layers: {sorted(names)}")
                out[name] = _check_sparsity(v, f"targets[{k!r}]")
            return out
        self.allocation_ = allocate_sparsity(layers, float(targets), method=self.allocation, **self.allocation_kwargs)
        return dict(self.allocation_.targets)

    def _current_step(self, layers: list[PrunableLayer]) -> int:
        steps = [int(p.layer.pruning_step.numpy()) for p in layers]
        if max(steps) < 0:
            for p in layers:
                p.layer.pruning_step.assign(0)
            return 0
        for p in layers:  # layers added later (e.g. -1) follow the others
            if int(p.layer.pruning_step.numpy()) < 0:
                p.layer.pruning_step.assign(max(steps))
        return max(steps)

    def _fit_steps(self) -> int | None:
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        if not steps or not epochs:
            return None
        return int(steps) * int(epochs)

    # ----------------------------------------------------------- callbacks
    def on_train_begin(self, logs: dict | None = None) -> None:
        layers = self._layers()
        step = self._current_step(layers)
        self.targets_ = self.compute_targets(layers)
        fit_steps = self._fit_steps()
        resumed = step > 0
        first = layers[0].schedule
        if self.end_step is None and resumed:
            begin, end = first.begin_step, first.end_step
            freq = self.frequency or first.frequency
        else:
            begin = self.begin_step
            if self.end_step is not None:
                end = self.end_step
            else:
                if fit_steps is None:
                    raise ValueError(
                        "LayerwisePruning(end_step=None) needs the number of steps per epoch, which this "
                        "dataset does not tell. Fix: pass end_step=..., or steps_per_epoch=... to fit."
                    )
                remaining = max(step + fit_steps - begin, 1)
                end = begin + max(1, int(round(self.ramp_fraction * remaining)))
            freq = self.frequency or max(1, (end - begin) // 20)
        self.begin_step_, self.end_step_, self.frequency_ = begin, end, freq
        for p in layers:
            if p.name in self.targets_:
                p.schedule.set(
                    target_sparsity=self.targets_[p.name],
                    begin_step=begin,
                    end_step=end,
                    frequency=freq,
                    initial_sparsity=min(self.initial_sparsity, self.targets_[p.name]),
                    power=self.power,
                )
            else:
                p.schedule.set(begin_step=begin, end_step=end, frequency=freq)
        if fit_steps is not None and step + fit_steps < end:
            warnings.warn(
                f"this fit() ends at pruning step {step + fit_steps}, before end_step={end}: layers will not reach "
                "their targets in this run (pruning goes on if you fit again).",
                stacklevel=2,
            )
        if self.verbose:
            print(self.summary(layers, step))

    def summary(self, layers: list[PrunableLayer] | None = None, step: int | None = None) -> str:
        layers = layers if layers is not None else self._layers()
        total_n = sum(p.n_params for p in layers)
        removed = sum(round(self.targets_.get(p.name, p.schedule.target_sparsity) * p.n_params) for p in layers)
        rows = [
            f"{type(self).__name__}: steps {self.begin_step_}->{self.end_step_} every {self.frequency_}"
            + (f" (now at step {step})" if step is not None else ""),
            f"{'layer':<28}{'params':>10}{'target':>9}",
        ]
        for p in layers:
            rows.append(f"{p.name:<28}{p.n_params:>10}{p.schedule.target_sparsity:>9.4f}")
        rows.append(f"{'total (wrapped layers)':<28}{total_n:>10}{removed / max(total_n, 1):>9.4f}")
        return "\n".join(rows)

    def _log_sparsity(self, logs: dict | None) -> dict[str, float]:
        layers = [p for p in prunable_layers(self.model) if p.wrapped]
        per_layer = {}
        zeros = total = 0
        for p in layers:
            w = p.kernel()
            z = int(np.count_nonzero(w == 0))
            per_layer[p.name] = z / w.size
            zeros += z
            total += w.size
        result = {"sparsity": zeros / max(total, 1)}
        if self.log_layers:
            result.update({f"sparsity/{k}": v for k, v in per_layer.items()})
        if logs is not None:
            logs.update(result)
        return result

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        apply_masks(self.model)
        self._log_sparsity(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        apply_masks(self.model)


