"""Item 2: the Keras guard, in fresh interpreters (the env var matters at import time)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tfprune
from tfprune._keras import keras


def _run(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_sets_legacy_keras_before_tensorflow():
    r = _run(
        "import os, tfprune, tensorflow as tf, tf_keras\n"
        "assert os.environ['TF_USE_LEGACY_KERAS'] == '1'\n"
        "assert tf.keras.Model is tf_keras.Model, tf.keras.Model\n"
        "print('ok')"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ok" in r.stdout


def test_tensorflow_imported_but_keras_unresolved_is_still_in_time():
    r = _run("import tensorflow as tf\nimport tfprune, tf_keras\nassert tf.keras.Model is tf_keras.Model\nprint('ok')")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")


def test_too_late_raises_importerror_with_the_fix():
    r = _run("import tensorflow as tf\n_ = tf.keras.layers\nimport tfprune")
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "TF_USE_LEGACY_KERAS=1" in r.stderr and "import tfprune before tensorflow" in r.stderr


def test_explicit_false_env_raises():
    r = _run("import tfprune", {"TF_USE_LEGACY_KERAS": "0"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "unset TF_USE_LEGACY_KERAS" in r.stderr


@pytest.fixture(scope="module")
def keras3_model():
    import keras as keras3  # Keras 3, importable beside tf-keras

    assert keras3.__version__.startswith("3.")
    m = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3)])
    return m


@pytest.mark.parametrize(
    "fn",
    [
        lambda m: tfprune.pqat(m, np.zeros((2, 4), np.float32), np.zeros(2)),
        lambda m: tfprune.Distiller(m, m),
    ],
)
def test_keras3_objects_get_typeerror_naming_what_works_and_the_fix(keras3_model, fn):
    """Functions that still need tf-keras say so, list what works on Keras 3, and name the route (tested in test_keras3.py)."""
    with pytest.raises(TypeError, match="Keras 3.*tf-keras models only.*tfprune.wrap.*tf_keras"):
        fn(keras3_model)


@pytest.mark.parametrize(
    "fn",
    [
        lambda m: tfprune.prunable_layers(m),
        lambda m: tfprune.wrap(m),
        lambda m: tfprune.strip(tfprune.wrap(m)),
        lambda m: tfprune.allocation.allocate_sparsity(m, 0.5),
        lambda m: tfprune.plan(m, 0.5),
        lambda m: tfprune.profile(m),
        lambda m: tfprune.training.finetune.retrain(m, np.zeros((2, 4), np.float32), np.zeros(2), steps=1),
        lambda m: tfprune.training.finetune.reestimate_batchnorm(m, np.zeros((2, 4), np.float32)),
    ],
)
def test_keras3_models_are_served(keras3_model, fn):
    assert fn(keras3_model) is not None


def test_non_model_gets_typeerror():
    with pytest.raises(TypeError, match="tf-keras Model"):
        tfprune.wrap("not a model")
    with pytest.raises(TypeError, match="put the layer in a model"):
        tfprune.wrap(keras.layers.Dense(3))
