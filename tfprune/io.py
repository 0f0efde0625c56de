"""Loading models that hold tfprune / tfmot pruning wrappers."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

from tfprune._keras import keras
from tfprune.compat import ConstantSparsity, PolynomialDecay, PruneLowMagnitude, savedmodel_keras_metadata
from tfprune.masks.channel_mask import ChannelMask
from tfprune.masks.schedule import LayerwiseSchedule
from tfprune.masks.wrapper import PruneLayer

__all__ = ["custom_objects", "custom_object_scope", "load_model", "stored_code", "saved_keras_version"]


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


def _format(path: str) -> str:
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise ValueError(f"{path!r} is a folder without saved_model.pb, not a model. Fix: pass a .keras or .h5 file or a SavedModel folder")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        return "keras"
    if head == b"\x89HDF\r\n\x1a\n":
        return "h5"
    raise ValueError(f"{path!r} is neither a .keras (zip) nor an .h5 (HDF5) model file: it is damaged or another format. "
                     "Fix: pass the file model.save() wrote (.keras or .h5), or a SavedModel folder")


def saved_keras_version(path: str | os.PathLike) -> str | None:
    """The Keras version that wrote a ``.keras`` or ``.h5`` model file (``"3.15.1"``, ``"2.21.0"``), None when the file does not say.

    ``.keras``: ``metadata.json`` in the archive; ``.h5``: the ``keras_version`` attribute. Nothing is deserialised.
    """
    path = os.fspath(path)
    kind = _format(path)
    try:
        if kind == "keras":
            import zipfile

            with zipfile.ZipFile(path) as z:
                if "metadata.json" not in z.namelist():
                    return None
                version = json.loads(z.read("metadata.json")).get("keras_version")
        elif kind == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
        else:
            return None
    except Exception:  # noqa: BLE001  (a damaged file is reported by the loader with its own message)
        return None
    if isinstance(version, bytes):
        version = version.decode()
    return str(version) if version else None


def _damaged(path: str, kind: str, err: BaseException) -> str:
    why = " ".join(str(err).split()) or type(err).__name__
    return (f"{path!r} is a damaged {kind} model file ({why}): truncated or corrupted, e.g. by an interrupted copy or download. "
            "Fix: save or copy the model again (model.save(path))")


def _code_layers(config: Any) -> list[str]:
    """Names of the layers in a (nested) Keras config whose saved form holds Python code (``Lambda``)."""
    out: list[str] = []
    if isinstance(config, dict):
        cls = config.get("class_name")
        if isinstance(cls, str) and cls.split(">")[-1].split(".")[-1] == "Lambda":  # also registered / module-qualified names
            inner = config.get("config")
            out.append(str(inner.get("name", "?") if isinstance(inner, dict) else "?"))
        for v in config.values():
            out += _code_layers(v)
    elif isinstance(config, list):
        for v in config:
            out += _code_layers(v)
    return out


def stored_code(path: str | os.PathLike) -> list[str]:
    """Layers of a saved model whose loading would run Python code stored in the file (``Lambda`` layers), by name.

    Reads only the file's configuration (``.keras``: ``config.json``; ``.h5``: the
    ``model_config`` attribute; SavedModel: ``keras_metadata.pb``); nothing is deserialised.
    """
    path = os.fspath(path)
    kind = _format(path)
    if kind == "keras":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                if "config.json" not in z.namelist():
                    raise ValueError(f"{path!r} is a zip archive without config.json, not a .keras model (a .npz, or another zip). "
                                     "Fix: pass the file model.save() wrote (.keras or .h5), or a SavedModel folder")
                return _code_layers(json.loads(z.read("config.json")))
        except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(_damaged(path, ".keras", err)) from err
    if kind == "h5":
        import h5py

        try:
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ValueError(f"{path!r} holds weights only (model.save_weights wrote it), not a model. Fix: build the model in code, "
                                 "then model.load_weights(path); or load the file model.save() wrote")
            return _code_layers(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(_damaged(path, ".h5", err)) from err
    from google.protobuf.message import DecodeError

    try:
        metadata = savedmodel_keras_metadata(path)
    except (OSError, DecodeError) as err:
        raise ValueError(_damaged(path, "SavedModel", err)) from err
    found: list[str] = []
    for text in metadata:
        try:
            found += _code_layers(json.loads(text))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(_damaged(path, "SavedModel (its Keras metadata is not JSON)", err)) from err
    return sorted(set(found))


def load_model(path: str | os.PathLike, compile: bool = True, *, unsafe: bool = False, **kwargs: Any) -> Any:
    """Load a ``.keras``, ``.h5`` or SavedModel file saved from a (possibly wrapped) model, without running stored code.

    A file written by Keras 3 (its metadata says so) loads as a Keras 3 model,
    with tfprune's Keras 3 classes registered; a file written by tf-keras loads
    as a tf-keras model. Either can then be pruned.

    Wrappers, `LayerwiseSchedule` s (targets and ramps), masks and the pruning
    step come back as saved, so training can resume with the same callback.

    Args:
      path: the model file (or SavedModel folder).
      compile: also restore the optimizer and loss saved with it.
      unsafe: allow ``Lambda`` layers, whose Python code the file stores and
        loading runs. By default such a file is refused, in every format
        (``.keras`` also through Keras' ``safe_mode``): only pass True for files you trust.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}. Fix: check the path (a .keras or .h5 file, or a SavedModel folder)")
    kind = _format(path)
    if not unsafe:
        code = stored_code(path)
        if code:
            raise ValueError(f"{path!r} stores Python code in layer(s) {code} (Lambda): loading it would run that code. "
                             "Fix: only for a file you trust, tfprune.load_model(path, unsafe=True) (command line: --unsafe)")
    version = saved_keras_version(path)
    if version is not None and version.startswith("3."):
        return _load_keras3(path, kind, compile, unsafe, **kwargs)
    if kind == "keras":
        kwargs.setdefault("safe_mode", not unsafe)
    with custom_object_scope():
        model = keras.models.load_model(path, compile=compile, **kwargs)
    return _said_mid_ramp(path, model)


def _said_mid_ramp(path: str, model: Any) -> Any:
    """``model``, after warning when its wrappers stopped before the end of their ramp."""
    from tfprune.masks.wrapping import mid_ramp

    short = mid_ramp(model) if hasattr(model, "layers") else ""
    if short:
        warnings.warn(f"{path!r}: {short}", stacklevel=3)
    return model


def _load_keras3(path: str, kind: str, compile: bool, unsafe: bool, **kwargs: Any) -> Any:
    """A Keras 3 file as a Keras 3 model (`tfprune.keras3.wrapper.PruneWrapper` registered)."""
    import keras as keras3

    import tfprune.keras3.wrapper  # noqa: F401  (registers PruneWrapper for deserialisation)

    if kind == "keras":
        kwargs.setdefault("safe_mode", not unsafe)
    return _said_mid_ramp(path, keras3.saving.load_model(path, compile=compile, **kwargs))
