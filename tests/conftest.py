"""Shared fixtures and the test data switch.

Data: ``$TFPRUNE_MNIST``, else ../shared/data/mnist/mnist.npz (this project's
machines), else the MNIST subset bundled with tfprune (a fresh machine).
``TFPRUNE_TEST_DATA=bundled`` ignores the first two (and removes
``$TFPRUNE_MNIST`` from this process and the CLI subprocesses it starts), so
the fresh-machine path runs here too:

    TFPRUNE_TEST_DATA=bundled make test

Every fixture takes the same number of images in every case (the bundled
subset's first 4,000 / 1,000 are the full set's first 4,000 / 1,000), so no
test depends on which file was found.

Tests whose code reads a data file or the environment (``mnist_path()``,
``datasets.``, ``$TFPRUNE_MNIST``) get the ``data_file`` marker: they are the
ones whose inputs differ in bundled mode, and what ``make test-bundled`` runs
by default (``-m data_file``); the rest see byte-identical data either way.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pytest

import tfprune  # noqa: F401  (first: sets TF_USE_LEGACY_KERAS)
from tfprune import datasets
from tfprune._keras import keras

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist" / "mnist.npz"
TEST_DATA_VAR = "TFPRUNE_TEST_DATA"
TEST_DATA_MODES = ("auto", "bundled")
N_TRAIN, N_TEST = 4000, 1000


def data_mode() -> str:
    mode = os.environ.get(TEST_DATA_VAR, "").strip().lower() or "auto"
    if mode not in TEST_DATA_MODES:
        raise pytest.UsageError(f"{TEST_DATA_VAR}={mode!r}: expected one of {TEST_DATA_MODES} (bundled: ignore ../shared and ${datasets.ENV_VAR})")
    return mode


if data_mode() == "bundled":
    os.environ.pop(datasets.ENV_VAR, None)


def mnist_path() -> str:
    """The mnist.npz (keras layout) the tests use; see the module docstring for the order."""
    if data_mode() != "bundled":
        env = os.environ.get(datasets.ENV_VAR)
        if env and os.path.isfile(env):
            return env
        if SHARED_MNIST.is_file():
            return str(SHARED_MNIST)
    return datasets.BUNDLED_MNIST


def pytest_report_header(config) -> str:
    return f"tfprune test data ({TEST_DATA_VAR}={data_mode()}): {mnist_path()}"


DATA_FILE_USES = ("mnist_path(", "datasets.", datasets.ENV_VAR)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "data_file: reads a data file or $TFPRUNE_MNIST (set by conftest from the test's source)")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        fn = getattr(item, "function", None)
        try:
            src = inspect.getsource(fn) if fn is not None else ""
        except (OSError, TypeError):
            src = ""
        if any(use in src for use in DATA_FILE_USES) or "offline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data_file)


@pytest.fixture(scope="session")
def digits_data():
    """(x_train, y_train), (x_test, y_test): the first 4,000 / 1,000 real MNIST digits of `mnist_path()`."""
    (xt, yt), (xs, ys) = datasets.mnist(mnist_path(), fallback=False)
    if len(xt) < N_TRAIN or len(xs) < N_TEST:
        raise RuntimeError(f"{mnist_path()} has {len(xt)} train / {len(xs)} test images; the tests need {N_TRAIN} / {N_TEST}")
    return (xt[:N_TRAIN], yt[:N_TRAIN]), (xs[:N_TEST], ys[:N_TEST])


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
    """A tiny CNN trained for two epochs (returned weights are copied per test via tfprune.clone)."""
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
