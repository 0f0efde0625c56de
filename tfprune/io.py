"""Loading models that hold tfprune / tfmot pruning wrappers."""

from __future__ import annotations

import os
from typing import Any

from tfprune._keras import keras
from tfprune.compat import ConstantSparsity, PolynomialDecay, PruneLowMagnitude
from tfprune.masks.channel_mask import ChannelMask
from tfprune.masks.schedule import LayerwiseSchedule
from tfprune.masks.wrapper import PruneLayer

__all__ = ["custom_objects", "custom_object_scope", "load_model"]


def custom_objects() -> dict[str, Any]:
    """Every class needed to deserialize a tfprune model (wrappers and schedules)."""
    objs: dict[str, Any] = {
        "PruneLowMagnitude": PruneLowMagnitude,
        "PruneLayer": PruneLayer,
        "ChannelMask": ChannelMask,
        "LayerwiseSchedule": LayerwiseSchedule,
        "ConstantSparsity": ConstantSparsity,
        "PolynomialDecay": PolynomialDecay,
    }
    from tfprune.training.distill import Distiller

    objs["Distiller"] = Distiller
    return objs


def custom_object_scope() -> Any:
    """A ``keras.utils.custom_object_scope`` with `custom_objects` in it."""
    return keras.utils.custom_object_scope(custom_objects())


def load_model(path: str | os.PathLike, compile: bool = True, **kwargs: Any) -> Any:
    """Load a ``.keras``, ``.h5`` or SavedModel file saved from a (possibly wrapped) tf-keras model.

    Wrappers, `LayerwiseSchedule` s (targets and ramps), masks and the pruning
    step come back as saved, so training can resume with the same callback.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    with custom_object_scope():
        return keras.models.load_model(path, compile=compile, **kwargs)
