"""The Keras 2 guard: tfprune (and tfmot) work only with tf-keras.

TensorFlow >= 2.16 routes ``tf.keras`` to Keras 3 unless the environment
variable ``TF_USE_LEGACY_KERAS=1`` is set before ``tf.keras`` is first
resolved. tfmot's wrappers are Keras 2 layers, and a Keras 3 model handed to
them fails deep inside Keras with an unrelated-looking error. This module:

* sets ``TF_USE_LEGACY_KERAS=1`` when it is still in time,
* raises :class:`ImportError` with the fix when it is too late,
* offers :func:`check_keras2` so every public function can reject a Keras 3
  object with a :class:`TypeError` that names the fix.

Import this module before anything else in the package.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_ENV = "TF_USE_LEGACY_KERAS"
_TRUE = ("1", "true", "True")

_TOO_LATE = (
    "tfprune needs tf.keras to be Keras 2 (the tf-keras package), but TensorFlow "
    "was imported and tf.keras already resolved to Keras 3. Fix: import tfprune "
    "before tensorflow (or anything that imports it), or set the environment "
    "variable TF_USE_LEGACY_KERAS=1 before Python starts, e.g. "
    "`TF_USE_LEGACY_KERAS=1 python train.py`."
)


def _tf_keras_state() -> str:
    """Return 'unresolved', 'keras2' or 'keras3' for an imported TensorFlow."""
    tf = sys.modules["tensorflow"]
    loader = tf.__dict__.get("keras")
    if loader is None:
        return "unresolved"
    if getattr(loader, "_tfll_initialized", True) is False:
        return "unresolved"
    version = getattr(loader, "_tfll_keras_version", None)
    if version == "keras_3":
        return "keras3"
    if version in ("tf_keras", "keras_2"):
        return "keras2"
    # Unknown loader layout: ask the module itself.
    ver = str(getattr(loader, "__version__", ""))
    return "keras3" if ver.startswith("3.") else "keras2"


def ensure_legacy_keras() -> None:
    """Make ``tf.keras`` resolve to tf-keras, or raise ImportError saying how."""
    value = os.environ.get(_ENV)
    if value is not None and value not in _TRUE:
        raise ImportError(
            f"{_ENV}={value!r} is set in your environment, which makes tf.keras "
            "Keras 3; tfprune and tensorflow-model-optimization need Keras 2 "
            f"(tf-keras). Fix: unset {_ENV} or set {_ENV}=1."
        )
    if "tensorflow" not in sys.modules:
        os.environ[_ENV] = "1"
        return
    state = _tf_keras_state()
    if state == "unresolved":
        os.environ[_ENV] = "1"
        return
    if state == "keras3":
        raise ImportError(_TOO_LATE)


ensure_legacy_keras()

import tf_keras as keras  # noqa: E402  (after the guard on purpose)


def is_keras3_object(obj: Any) -> bool:
    """True for a Keras 3 layer/model/optimizer (module ``keras.src`` / ``keras``)."""
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module == "keras" or module.startswith("keras.") or module.startswith("keras_core"):
            return True
    return False


#: What works on Keras 3 models (said by every refusal of one).
KERAS3_SUPPORTED = ("On Keras 3 models (import keras) these work: tfprune.wrap and tfprune.Pruning in model.fit (weights and channel "
                    "groups), tfprune.strip, tfprune.plan, every allocator and importance scorer, tfprune.prunable_layers, tfprune.profile, "
                    "tfprune.load_model, tfprune.export_tflite, tfprune.obs.prune, tfprune.channel_graph, tfprune.shrink, tfprune.analyze, "
                    "tfprune.shallow, tfprune.structured.prune_channels, retrain and reestimate_batchnorm (the last ones on a tf-keras twin, "
                    "the result converted back), and the command line.")


def keras_of(obj: Any) -> Any:
    """The Keras module ``obj`` belongs to: Keras 3 (``import keras``) for a Keras 3 object, else tf-keras."""
    if is_keras3_object(obj):
        import keras as keras3

        return keras3
    return keras


def check_keras2(obj: Any, argname: str = "model") -> None:
    """Raise TypeError if ``obj`` is a Keras 3 object or not a tf-keras Model/Layer."""
    if is_keras3_object(obj):
        raise TypeError(
            f"`{argname}` is a Keras 3 object ({type(obj).__module__}.{type(obj).__name__}), and this tfprune function works on "
            f"tf-keras models only. {KERAS3_SUPPORTED} Fix: for this function, build the model with `import tf_keras as keras` "
            "(or `tf.keras` after `import tfprune`, which sets TF_USE_LEGACY_KERAS=1) and load its weights from the Keras 3 "
            "model (tf_model.set_weights(keras3_model.get_weights()) for the same layers)."
        )
    if not isinstance(obj, keras.layers.Layer):
        raise TypeError(
            f"`{argname}` must be a tf-keras Model, got {type(obj).__name__}. "
            "Fix: pass a `tf_keras.Model` (Sequential or functional)."
        )


def check_is_model(model: Any, argname: str = "model") -> None:
    """Check ``model`` is a tf-keras Model (built or not); a single layer is refused with the fix."""
    check_keras2(model, argname)
    if not isinstance(model, keras.Model):
        name = getattr(model, "name", "")
        raise TypeError(
            f"`{argname}` must be a tf-keras Model, got layer {type(model).__name__} {name!r}. "
            "Fix: pass the model that holds the layer, or put the layer in a model with its input shape, e.g. "
            "`keras.Sequential([keras.Input(shape=(64,)), layer])`."
        )


def check_model(model: Any, argname: str = "model") -> None:
    """Check ``model`` is a built tf-keras Model (Sequential, functional; subclassed where the caller allows)."""
    check_is_model(model, argname)
    if not model.built or not model.weights and not model.inputs:
        raise ValueError(
            f"`{argname}` ({model.name}) is not built, so its weights do not exist "
            "yet. Fix: give the first layer an `input_shape`, call "
            "`model.build(input_shape)`, or call the model on a batch of data."
        )


__all__ = ["KERAS3_SUPPORTED", "keras", "keras_of", "check_keras2", "check_is_model", "check_model", "ensure_legacy_keras", "is_keras3_object"]
