"""Every private tfmot / tf-keras internal tfprune uses (all reached through tfprune.compat) is still what tfprune expects.

A pinned version that moves or changes one of them fails here, naming it, instead of in a user's training run.
"""

import inspect
from importlib.metadata import version

import numpy as np
import pytest
import tensorflow as tf

from tfprune import compat
from tfprune._keras import keras


def test_pinned_versions():
    assert version("tensorflow-model-optimization") == "0.8.1"
    assert version("tf-keras").startswith("2.21.")


def test_tfmot_pruning_internals_tfprune_overrides_or_reads():
    # RulePruning subclasses TfmotPruning and overrides this hook (one weight in, (threshold, mask) out)
    hook = inspect.signature(compat.TfmotPruning._maybe_update_block_mask)
    assert list(hook.parameters) == ["self", "weights"]
    init = inspect.signature(compat.TfmotPruning.__init__).parameters
    assert {"training_step_fn", "pruning_vars", "pruning_schedule", "block_size", "block_pooling_type"} <= set(init)
    for name in ("weight_mask_op", "conditional_mask_update"):
        assert callable(getattr(compat.TfmotPruning, name)), name
    # the attributes RulePruning reads: set by __init__
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    mask = tf.Variable(np.ones((3, 2), np.float32))
    p = compat.TfmotPruning(training_step_fn=lambda: tf.constant(1, tf.int64), pruning_vars=[(layer.kernel, mask, tf.Variable(0.0))],
                            pruning_schedule=compat.ConstantSparsity(0.5, 0), block_size=(1, 1), block_pooling_type="AVG")
    assert callable(p._pruning_schedule) and callable(p._step_fn)


def test_tfmot_wrapper_and_registry():
    w = compat.PruneLowMagnitude(keras.layers.Dense(2), pruning_schedule=compat.ConstantSparsity(0.5, 0))
    w.build((None, 3))
    assert hasattr(w, "pruning_vars") and hasattr(w, "pruning_step") and hasattr(w, "pruning_obj")
    class Custom(keras.layers.Layer):  # a user's layer with weights: tfmot cannot know which to prune
        def build(self, shape):
            self.w = self.add_weight("w", shape=(int(shape[-1]),))

    assert compat.tfmot_can_prune(keras.layers.Conv2D(2, 3)) and not compat.tfmot_can_prune(Custom())
    assert issubclass(compat.PolynomialDecay, compat.PruningSchedule) and issubclass(compat.ConstantSparsity, compat.PruningSchedule)
    assert compat.quantize_wrapper_class().__name__ == "QuantizeWrapper"


def test_tf_keras_internals():
    container = compat.losses_container(keras.losses.MeanSquaredError(), None, None)
    assert float(container(tf.zeros((2, 1)), tf.ones((2, 1)))) == pytest.approx(1.0)
    opt = compat.deserialize_compile_config({"optimizer": "sgd", "loss": "mse"})
    assert set(opt) == {"optimizer", "loss"}
    lam = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    with compat.unsafe_lambda_scope():
        keras.Sequential.from_config(lam.get_config())
    assert compat.layer_scale_class().__name__ == "LayerScale"
    dense = keras.layers.Dense(2, batch_input_shape=(None, 3))
    assert tuple(compat.batch_input_shape(dense)) == (None, 3)
    compat.set_batch_input_shape(dense, (None, 4))
    assert tuple(compat.batch_input_shape(dense)) == (None, 4)
    inp = keras.Input((3,))
    assert compat.is_graph_network(keras.Model(inp, keras.layers.Dense(1)(inp)))

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not compat.is_graph_network(Sub())
