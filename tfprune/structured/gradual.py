"""The gradual structured path: train a copy with `tfprune.Pruning` over channel groups, remove them, fine-tune.

``prune_channels_gradually(model, macs=0.5, data=..., epochs=...)`` wraps a
copy of ``model`` with `tfprune.wrap(granularity="channel")`, trains it with
``tfprune.Pruning(macs=...)`` (channel groups masked inside the train step
along the polynomial ramp, see `tfprune.masks.channel_mask`), calls
``finalize()`` (the physically smaller model, checked exact) and optionally
fine-tunes it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import tensorflow as tf

from tfprune.validation import check_int

__all__ = ["prune_channels_gradually"]


def prune_channels_gradually(
    model: Any,
    macs: float | None = 0.5,
    params: float | None = None,
    *,
    data: Any,
    epochs: int,
    eval_data: Any = None,
    finetune_epochs: int = 0,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    loss: Any = None,
    importance: str = "l2",
    allocation: str = "uniform",
    layer_importance: str = "capacity",
    min_channels: int = 1,
    include_outputs: bool = False,
    tolerance: float = 0.01,
    ramp_fraction: float = 0.7,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[Any, Any]:
    """Train a wrapped copy of ``model`` with `tfprune.Pruning` over channel groups, shrink it, optionally fine-tune it.

    Args:
      model: a trained tf-keras model (not modified: a copy is trained).
      macs, params: the target, fraction of MACs (default 0.5) or of
        parameters removed (pass ``macs=None, params=f``).
      data: labelled training data (anything `tfprune.data` reads).
      epochs: epochs of ``fit`` with the callback; the ramp takes
        ``ramp_fraction`` of them, the rest trains with the final masks.
      eval_data: labelled data for the accuracies (default ``data``).
      finetune_epochs: further epochs on the shrunk model (0: none).
      batch_size, learning_rate: both trainings (Adam, cosine decay to 0).
      loss: default: the model's compiled loss, else `tfprune.training.finetune.model_loss`'s.
      importance, allocation, layer_importance, min_channels, include_outputs,
      tolerance: see `tfprune.plan` (``granularity="channel"``).

    Returns ``(small_model, PruneChannelsReport)``: ``acc_shrunk`` is the
    accuracy after the gradual training (the shrunk model computes what the
    masked model computes), ``acc_after`` after fine-tuning.
    """
    from tfprune import data as _data
    from tfprune._keras import check_model
    from tfprune.importance import needs_data
    from tfprune.masks.wrapping import wrap
    from tfprune.structured.prune import PruneChannelsReport, top1_accuracy
    from tfprune.training.callbacks import Pruning
    from tfprune.training.finetune import adam_cosine, check_labels, model_loss

    t0 = time.perf_counter()
    check_model(model)
    if macs is not None and params is not None:
        raise ValueError("give one target: macs= or params= (pass macs=None with params=)")
    epochs = check_int(epochs, "epochs", 1)
    train = _data.take(data, None, need_labels="gradual channel pruning")
    evals = eval_data if eval_data is not None else data
    ev = _data.take(evals, None, need_labels=False)
    source = ("eval_data" if eval_data is not None else "data") if ev.y is not None else ""
    spec = model_loss(model, loss)
    check_labels(model, train.y, spec, "data labels")
    if ev.y is not None and eval_data is not None:
        check_labels(model, ev.y, spec, "eval_data labels")

    def acc(m: Any) -> float | None:
        return top1_accuracy(ev.y, np.asarray(m.predict(ev.x, batch_size=batch_size, verbose=0))) if source else None

    acc_before = acc(model)
    tf.keras.utils.set_random_seed(int(seed))
    work = wrap(model, granularity="channel", include_outputs=include_outputs)
    per_epoch = -(-train.n // int(batch_size))
    work.compile(optimizer=adam_cosine(learning_rate, decay_steps=epochs * per_epoch), loss=spec.loss, loss_weights=spec.loss_weights)
    calib = None
    if needs_data(importance, "channel"):
        n = min(train.n, 512)
        calib = (train.x[:n], train.y[:n]) if not isinstance(train.x, (dict, list, tuple)) else (tf.nest.map_structure(lambda a: a[:n], train.x),
                                                                                                 train.y[:n])
    cb = Pruning(macs=macs, params=params, granularity="channel", importance=importance, data=calib, allocation=allocation,
                 layer_importance=layer_importance, min_channels=min_channels, include_outputs=include_outputs, tolerance=tolerance,
                 ramp_fraction=ramp_fraction)
    work.fit(train.x, train.y, epochs=epochs, batch_size=int(batch_size), shuffle=True, verbose=verbose, callbacks=[cb])
    x_check = None if isinstance(train.x, (dict, list, tuple)) else np.asarray(train.x[:8])
    small = cb.finalize(x=x_check)
    rep = cb.shrink_report_
    acc_shrunk = acc(small)
    small.compile(optimizer=adam_cosine(learning_rate, decay_steps=max(1, finetune_epochs * per_epoch)), loss=spec.loss,
                  loss_weights=spec.loss_weights)
    ft_seconds, acc_after = 0.0, None
    if finetune_epochs:
        t1 = time.perf_counter()
        small.fit(train.x, train.y, epochs=int(finetune_epochs), batch_size=int(batch_size), shuffle=True, verbose=verbose)
        ft_seconds = time.perf_counter() - t1
        acc_after = acc(small)
    notes = [f"gradual: {epochs} epochs with Pruning over channel groups (ramp over pruning steps {cb.begin_step_} -> {cb.end_step_}, "
             f"masks updated every {cb.frequency_}), then shrink"]
    if (rep.macs_after, rep.params_after) != (cb.plan_.macs_after, cb.plan_.params_after):
        notes.append(f"the shrunk model has {rep.macs_after} MACs / {rep.params_after} params, the plan {cb.plan_.macs_after} / "
                     f"{cb.plan_.params_after} (channels already zero in the input model stayed masked)")
    report = PruneChannelsReport(cb.plan_, rep.max_abs_diff, int(finetune_epochs), ft_seconds, acc_before, acc_shrunk, acc_after,
                                 source, spec.source, time.perf_counter() - t0, notes)
    return small, report
