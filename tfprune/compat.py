"""The one home of the private tfmot and tf-keras internals tfprune uses.

Every use of a name outside a package's public API goes through this module, and
``tests/test_compat.py`` checks each one against the pinned versions
(tensorflow-model-optimization 0.8.1, tf-keras 2.21): a version that moves or
changes one of them fails that test, not a user's training run.

tfmot (``tensorflow_model_optimization.python.core``):

* `PruneLowMagnitude` (the pruning wrapper: ``pruning_vars``, ``pruning_step``,
  ``pruning_obj``), `TfmotPruning` (its mask updater; tfprune overrides the
  hook ``_maybe_update_block_mask(weights)`` and reads ``_pruning_schedule`` and
  ``_step_fn``), `PruningSchedule`, `ConstantSparsity`, `PolynomialDecay`,
  `PrunableLayer`, `tfmot_can_prune` (``PruneRegistry.supports``) and
  `quantize_wrapper_class` (``QuantizeWrapper``).

tf-keras (``tf_keras.src``): `losses_container` (``compile_utils.LossesContainer``:
the compiled loss of a model rebuilt from its config), `deserialize_compile_config`
(``saving_lib.deserialize_keras_object``), `unsafe_lambda_scope`
(``SafeModeScope(False)``), `layer_scale_class` (ConvNeXt's ``LayerScale``),
`batch_input_shape` / `set_batch_input_shape` and `is_graph_network`.
"""

from __future__ import annotations

from typing import Any

from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry, pruning_impl, pruning_schedule, pruning_wrapper

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneLowMagnitude",
    "PruningSchedule",
    "TfmotPruning",
    "batch_input_shape",
    "deserialize_compile_config",
    "is_graph_network",
    "layer_scale_class",
    "losses_container",
    "quantize_wrapper_class",
    "savedmodel_keras_metadata",
    "set_batch_input_shape",
    "tfmot_can_prune",
    "unsafe_lambda_scope",
]

PruneLowMagnitude = pruning_wrapper.PruneLowMagnitude
TfmotPruning = pruning_impl.Pruning
PruningSchedule = pruning_schedule.PruningSchedule
ConstantSparsity = pruning_schedule.ConstantSparsity
PolynomialDecay = pruning_schedule.PolynomialDecay
PrunableLayer = pruning_wrapper.prunable_layer.PrunableLayer


def tfmot_can_prune(layer: Any) -> bool:
    """True when tfmot can wrap ``layer``: a `PrunableLayer`, a layer with ``get_prunable_weights``, or one in its registry."""
    return isinstance(layer, PrunableLayer) or hasattr(layer, "get_prunable_weights") or prune_registry.PruneRegistry.supports(layer)


def quantize_wrapper_class() -> type:
    """tfmot's ``QuantizeWrapper`` (the layer class of a QAT model)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_wrapper

    return quantize_wrapper.QuantizeWrapper


def losses_container(loss: Any, loss_weights: Any, output_names: Any) -> Any:
    """tf-keras' ``LossesContainer``: the compiled loss (per-output losses and weights) as ``fit`` computes it."""
    from tf_keras.src.engine import compile_utils

    return compile_utils.LossesContainer(loss, loss_weights, output_names=output_names)


def deserialize_compile_config(config: Any) -> Any:
    """tf-keras' deserialisation of a saved compile config (``compile_from_config``)."""
    from tf_keras.src.saving import saving_lib

    return saving_lib.deserialize_keras_object(config)


def unsafe_lambda_scope() -> Any:
    """A scope that lets ``from_config`` rebuild ``Lambda`` layers; only for configs serialised in this process."""
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(False)


def savedmodel_keras_metadata(path: str) -> list[str]:
    """The Keras metadata (one JSON string per saved object) of a SavedModel folder, wherever tf-keras would read it from.

    ``keras_metadata.pb`` (TF >= 2.5) when present, else the ``user_object``
    metadata inside ``saved_model.pb`` (the older layout tf-keras still loads).
    Parsed as protocol buffers, never executed.
    """
    import os

    meta_file = os.path.join(path, "keras_metadata.pb")
    if os.path.exists(meta_file):
        from tf_keras.protobuf import saved_metadata_pb2

        meta = saved_metadata_pb2.SavedMetadata()
        with open(meta_file, "rb") as f:
            meta.ParseFromString(f.read())
        return [node.metadata for node in meta.nodes]
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    return [node.user_object.metadata for mg in sm.meta_graphs for node in mg.object_graph_def.nodes
            if node.HasField("user_object") and node.user_object.metadata]


def layer_scale_class() -> type | None:
    """ConvNeXt's per-channel ``LayerScale`` layer of tf_keras.applications (None if absent)."""
    try:
        from tf_keras.src.applications.convnext import LayerScale
    except ImportError:  # pragma: no cover  (an older tf-keras without ConvNeXt)
        return None
    return LayerScale


def batch_input_shape(layer: Any) -> Any:
    """The ``batch_input_shape`` a layer was declared with (None if it has none)."""
    return getattr(layer, "_batch_input_shape", None)


def set_batch_input_shape(layer: Any, shape: Any) -> None:
    layer._batch_input_shape = shape


def is_graph_network(model: Any) -> bool:
    """True for a functional (graph) model, False for a subclassed one."""
    return bool(getattr(model, "_is_graph_network", False))
