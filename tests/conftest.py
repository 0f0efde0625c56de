"""Shared fixtures. Real MNIST from ../shared/data/mnist when present, else sklearn digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import tfprune  # noqa: F401  (first: sets TF_USE_LEGACY_KERAS)
from tfprune import datasets
from tfprune._keras import keras

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist" / "mnist.npz"


def mnist_path() -> str | None:
    env = os.environ.get(datasets.ENV_VAR)
    if env and os.path.isfile(env):
        return env
    return str(SHARED_MNIST) if SHARED_MNIST.is_file() else None


@pytest.fixture(scope="session")
def digits_data():
    """(x_train, y_train), (x_test, y_test): 4,000 / 1,000 real MNIST digits (or sklearn digits)."""
    path = mnist_path()
    if path:
        (xt, yt), (xs, ys) = datasets.mnist(path)
        return (xt[:4000], yt[:4000]), (xs[:1000], ys[:1000])
    return datasets.digits()


def tiny_cnn(name: str = "tiny") -> keras.Model:
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    out = keras.layers.Dense(10, name="fc2")(x)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="session")
def trained_tiny(digits_data):
    """A tiny CNN trained for one epoch (returned weights are copied per test via tfprune.clone)."""
    keras.utils.set_random_seed(0)
    (xt, yt), _ = digits_data
    m = tfprune.models.compile_classifier(tiny_cnn())
    m.fit(xt, yt, epochs=2, batch_size=64, verbose=0)
    return m


@pytest.fixture
def tiny(trained_tiny):
    return tfprune.clone(trained_tiny)


def weights_snapshot(model) -> list[np.ndarray]:
    return [w.numpy().copy() for w in model.weights]
