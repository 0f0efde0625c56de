"""tfprune.TaskModel: a wrapped network trained with its original task's own compute_loss."""

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras
from tfprune.training.tasks import TaskModel


def _classifier():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Dense(32, activation="relu", name="h")(inp)
    m = keras.Model(inp, keras.layers.Dense(4, name="out")(h), name="task")
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _xy(n=512):
    x = np.random.default_rng(0).standard_normal((n, 8)).astype("float32")
    return x, x[:, :4].argmax(1).astype("int32")


def test_task_loss_prunes_nested_network_and_leaves_the_task_alone():
    task = _classifier()
    x, y = _xy()
    before = [w.copy() for w in task.get_weights()]
    net = tfprune.wrap(task)
    trainer = TaskModel(net, task)
    trainer.compile(keras.optimizers.Adam(1e-2))
    assert trainer.evaluate(x, y, verbose=0) == pytest.approx(task.evaluate(x, y, verbose=0), rel=1e-6)  # the task's own loss
    assert [p.name for p in tfprune.prunable_layers(trainer)] == ["h", "out"]  # found inside the nested network
    hist = trainer.fit(x, y, epochs=4, batch_size=64, verbose=0, callbacks=[tfprune.Pruning(0.5)])
    loss = hist.history["loss"]
    assert loss[-1] < 0.7 * loss[0]
    inv = tfprune.prunable_layers(net)  # the callback pruned the network the user holds
    assert inv.total_sparsity() == pytest.approx(0.5, abs=2e-3)
    assert "sparsity/h" in hist.history
    assert all(np.array_equal(a, b) for a, b in zip(before, task.get_weights()))  # the task's weights neither trained nor pruned
    assert len(trainer.trainable_weights) == len(net.trainable_weights)  # the task is not tracked by the trainer
    s = tfprune.strip(net)
    np.testing.assert_allclose(s.predict(x[:16], verbose=0), trainer.predict(x[:16], verbose=0), rtol=1e-5, atol=1e-5)


def test_clear_errors():
    task = _classifier()
    net = tfprune.wrap(task)
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="has outputs .* Fix: pass the network wrapped from this task"):
        TaskModel(other, task)
    fresh = keras.models.clone_model(task)
    with pytest.raises(ValueError, match="is not compiled"):
        TaskModel(net, fresh)
    trainer = TaskModel(net, task)
    with pytest.raises(ValueError, match="leave loss=None"):
        trainer.compile("adam", loss="mse")
