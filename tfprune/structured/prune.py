"""`prune_channels`: the one-shot structured path: plan -> shrink -> fine-tune -> report.

``prune_channels(model, macs=0.5, data=(x, y), finetune_epochs=2)`` plans the
channels to remove at group level (`tfprune.plan(granularity="channel")`: whole coupled groups, so
every planned channel is physically removable), shrinks the model
(`shrink`, outputs checked equal to the masked model's), optionally
fine-tunes the small model with the model's compiled loss (or
`tfprune.training.finetune.model_loss`'s default) and reports the per-group table,
MACs/params before and after, and the accuracy before, right after the
shrink and after fine-tuning when labelled data is given. With ``data`` the
shrunk model's BatchNorm statistics are re-estimated
(`tfprune.training.finetune.reestimate_batchnorm`; the dense ones no longer match the
smaller layers' inputs, and a shrunk ResNet can drop to chance without it)
before those accuracies are measured. The input model is never modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfprune import data as _data
from tfprune._keras import check_model, is_keras3_object
from tfprune.planning.plans import Plan
from tfprune.report import Report, Table
from tfprune.structured.plan import plan_and_shrink

__all__ = ["PruneChannelsReport", "prune_channels", "top1_accuracy"]


def top1_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of rows whose argmax over the last axis equals the integer label (one-hot labels are argmaxed too)."""
    y = np.asarray(y_true)
    p = np.asarray(y_pred)
    if y.ndim == p.ndim and y.shape[-1] == p.shape[-1] and y.shape[-1] > 1:
        y = y.argmax(-1)
    y = y.reshape(p.shape[:-1])
    return float(np.mean(p.argmax(-1) == y)) if y.size else float("nan")


@dataclass
class PruneChannelsReport(Report):
    """What `prune_channels` did: the plan (per-group table), the shrink check, fine-tuning, accuracies.

    Attributes:
      plan: the channel `Plan` (requested vs achieved, per-group counts, MACs/params).
      max_abs_diff: the shrink check (shrunk vs masked model outputs).
      finetune_epochs, finetune_seconds: the fine-tuning done (0 for none).
      acc_before, acc_shrunk, acc_after: top-1 accuracy of the input model,
        the shrunk model before fine-tuning and after it, on ``eval_data``
        (None without labelled data or for a non-classifier).
      eval_source: what the accuracies were measured on.
      seconds: total time.
      bn_recalibrated: BatchNorm layers whose moving statistics were
        re-estimated (``recalibrate_bn``); 0 for none.
    """

    plan: Plan
    max_abs_diff: float
    finetune_epochs: int = 0
    finetune_seconds: float = 0.0
    acc_before: float | None = None
    acc_shrunk: float | None = None
    acc_after: float | None = None
    eval_source: str = ""
    loss_source: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    bn_recalibrated: int = 0

    def _extra_dict(self) -> dict[str, Any]:
        return {"macs_removed": self.plan.macs_removed, "params_removed": self.plan.params_removed}

    def _blocks(self) -> list[str | Table]:
        out: list[str | Table] = list(self.plan._blocks())
        out.append(f"shrink check: max |shrunk - masked| = {self.max_abs_diff:.3g}")
        if self.finetune_epochs:
            out.append(f"fine-tuned {self.finetune_epochs} epochs in {self.finetune_seconds:.1f}s ({self.loss_source})")
        if self.acc_before is not None:
            fmt = lambda a: "-" if a is None else f"{a:.4f}"  # noqa: E731
            out.append(Table(["accuracy", "dense", "shrunk", "fine-tuned"],
                             [[self.eval_source, fmt(self.acc_before), fmt(self.acc_shrunk), fmt(self.acc_after)]], "lrrr"))
        out += self.notes
        return out


def _recalibrate(model: Any, train: Any, n_samples: int) -> int:
    """`tfprune.training.finetune.reestimate_batchnorm` on the first ``n_samples`` training inputs, in one exact pass when the
    inputs are small (at most 4M input values), else streamed in batches of 256; returns the BN layers updated."""
    from tfprune._keras import keras
    from tfprune.training.finetune import reestimate_batchnorm

    n = min(int(n_samples), train.n)
    per_sample = sum(int(np.prod(np.shape(a)[1:])) for a in (train.x.values() if isinstance(train.x, dict) else
                                                           train.x if isinstance(train.x, (list, tuple)) else [train.x]))
    reestimate_batchnorm(model, train.x, batch_size=None if n * per_sample <= 4_000_000 else 256, n_samples=n)
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.submodules)


def _predict(model: Any, x: Any, batch_size: int) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def prune_channels(
    model: Any,
    macs: float | None = 0.5,
    params: float | None = None,
    *,
    data: Any = None,
    eval_data: Any = None,
    finetune_epochs: int = 0,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    loss: Any = None,
    importance: str = "l2",
    importance_options: dict[str, Any] | None = None,
    allocation: str = "uniform",
    layer_importance: str = "capacity",
    min_channels: int = 1,
    include_outputs: bool = False,
    tolerance: float = 0.01,
    recalibrate_bn: int = 2048,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[Any, PruneChannelsReport]:
    """Remove channels for real from a trained model to reach a MACs (or params) target, then fine-tune.

    Args:
      model: a trained tf-keras model (not modified).
      macs: fraction of MACs to remove (default 0.5); pass ``macs=None, params=f``
        to target parameters instead.
      data: labelled training data for fine-tuning (anything `tfprune.data`
        reads: ``(x, y)``, a dataset, ...); also the accuracy data when
        ``eval_data`` is not given.
      eval_data: labelled data for the accuracies (before, shrunk, after).
      finetune_epochs: epochs of ``fit`` on ``data`` (0: no fine-tuning).
      batch_size, learning_rate: fine-tuning (Adam, cosine decay to 0).
      loss: default: the model's compiled loss, else `tfprune.training.finetune.model_loss`'s.
      importance, allocation, layer_importance, min_channels, include_outputs,
      tolerance, importance_options: see `tfprune.plan` (``granularity="channel"``). A data scorer
        (``"taylor"``, ``"obs"``) reads ``data`` (its first
        ``importance_options["n_samples"]`` samples, default 1024).
      seed: fine-tuning shuffle seed.

    Returns ``(small_model, PruneChannelsReport)``; the small model is compiled
    with the fine-tuning loss.
    """
    from tfprune.training.finetune import adam_cosine, check_labels, model_loss

    if is_keras3_object(model):  # planned, shrunk and fine-tuned as its tf-keras twin; the small model comes back as Keras 3
        from tfprune.keras3.convert import on_tf_keras_twin

        return on_tf_keras_twin(prune_channels, model, macs, params, data=data, eval_data=eval_data, finetune_epochs=finetune_epochs,
                                batch_size=batch_size, learning_rate=learning_rate, loss=loss, importance=importance,
                                importance_options=importance_options, allocation=allocation, layer_importance=layer_importance,
                                min_channels=min_channels, include_outputs=include_outputs, tolerance=tolerance,
                                recalibrate_bn=recalibrate_bn, seed=seed, verbose=verbose)
    t0 = time.perf_counter()
    check_model(model)
    if macs is not None and params is not None:
        raise ValueError("give one target: macs= or params= (pass macs=None with params=)")
    if finetune_epochs and data is None:
        raise ValueError(f"finetune_epochs={finetune_epochs} needs labelled training data: pass data=(x, y)")
    train = _data.take(data, None, need_labels="fine-tuning") if data is not None else None
    evals = eval_data if eval_data is not None else data
    ev = _data.take(evals, None, need_labels=False) if evals is not None else None
    source = ("eval_data" if eval_data is not None else "data") if ev is not None and ev.y is not None else ""
    notes: list[str] = []
    spec = model_loss(model, loss, warn=bool(finetune_epochs))
    for part, name in ((train, "data labels"), (ev if source == "eval_data" else None, "eval_data labels")):
        if part is not None and part.y is not None:
            check_labels(model, part.y, spec, name)

    def acc(m: Any) -> float | None:
        if not source:
            return None
        return top1_accuracy(ev.y, _predict(m, ev.x, batch_size))

    acc_before = acc(model)
    x_check = None
    if train is not None and not isinstance(train.x, (dict, list, tuple)):
        x_check = np.asarray(train.x[:8])
    score_data = None if train is None else (train.x, train.y) if train.w is None else (train.x, train.y, train.w)
    plan, small, rep = plan_and_shrink(model, macs, params, importance=importance, allocation=allocation,
                                       layer_importance=layer_importance, min_channels=min_channels,
                                       include_outputs=include_outputs, tolerance=tolerance, x=x_check,
                                       data=score_data, importance_options=importance_options)
    bn_layers = 0
    if recalibrate_bn:
        if train is not None:
            bn_layers = _recalibrate(small, train, recalibrate_bn)
            if bn_layers:
                notes.append(f"BatchNorm moving statistics of {bn_layers} layers re-estimated on {min(train.n, recalibrate_bn)} "
                             "training samples after the shrink" + (" and after fine-tuning" if finetune_epochs else ""))
        elif train is None:
            notes.append("BatchNorm statistics not re-estimated (no data=): a shrunk model with BatchNorm can lose much "
                         "accuracy until fine-tuned")
    acc_shrunk = acc(small)
    steps = max(1, finetune_epochs * -(-train.n // batch_size)) if train is not None else 1
    small.compile(optimizer=adam_cosine(learning_rate, decay_steps=steps), loss=spec.loss, loss_weights=spec.loss_weights)
    ft_seconds = 0.0
    acc_after = None
    if finetune_epochs:
        import tensorflow as tf

        tf.keras.utils.set_random_seed(int(seed))
        t1 = time.perf_counter()
        small.fit(train.x, train.y, epochs=int(finetune_epochs), batch_size=int(batch_size), shuffle=True, verbose=verbose)
        if bn_layers:
            _recalibrate(small, train, recalibrate_bn)
        ft_seconds = time.perf_counter() - t1
        acc_after = acc(small)
    if acc_before is not None and not finetune_epochs:
        notes.append("no fine-tuning (finetune_epochs=0): the shrunk model's accuracy is the one-shot accuracy")
    report = PruneChannelsReport(plan, rep.max_abs_diff, int(finetune_epochs), ft_seconds, acc_before, acc_shrunk, acc_after,
                                 source, spec.source, time.perf_counter() - t0, notes, bn_layers)
    return small, report
