"""Safe loading (no stored code runs unless asked) and atomic outputs (no partial file, an existing file unchanged)."""

import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

import tfprune
from tfprune import cli
from tfprune._keras import keras
from tfprune.files import atomic_write, save_model, write_with


def _payload_model(marker):
    """A model whose Lambda layer, when the model is built from its config, creates ``marker`` (stands for any code)."""
    inp = keras.Input((4,))
    x = keras.layers.Dense(3, name="d")(inp)
    x = keras.layers.Lambda(lambda t, p=str(marker): (__import__("pathlib").Path(p).touch(), t)[1], name="payload")(x)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(x))


@pytest.mark.parametrize("fmt", ["keras", "h5", "savedmodel"])
def test_stored_code_is_refused_unless_asked(tmp_path, fmt, capsys):
    marker = tmp_path / f"ran_{uuid.uuid4().hex}"
    model = _payload_model(marker)
    path = str(tmp_path / ("m.keras" if fmt == "keras" else "m.h5" if fmt == "h5" else "saved"))
    model.save(path, **({"save_format": "tf"} if fmt == "savedmodel" else {}))
    if marker.exists():
        marker.unlink()  # saving traced the model; only loading matters here
    assert tfprune.io.stored_code(path)
    with pytest.raises(ValueError, match="stores Python code.*unsafe=True"):
        tfprune.load_model(path)
    assert cli.main(["layers", path]) == 2
    err = capsys.readouterr().err
    assert "stores Python code" in err and "--unsafe" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists(), "no stored code ran"
    if fmt != "savedmodel":  # asked for: it loads (and the code runs, as the user accepted)
        loaded = tfprune.load_model(path, unsafe=True)
        assert loaded.get_layer("payload") is not None


def test_models_without_code_and_damaged_files(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    for name in ("ok.keras", "ok.h5"):
        model.save(str(tmp_path / name))
        assert tfprune.io.stored_code(str(tmp_path / name)) == [] and tfprune.load_model(str(tmp_path / name)) is not None
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="damaged or another format"):
        tfprune.load_model(str(bad))
    with pytest.raises(ValueError, match="without saved_model.pb"):
        tfprune.load_model(str(tmp_path))


def test_failing_writer_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "model.tflite"

    def half_then_fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x" * 1000)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_with(target, half_then_fail)
    assert not target.exists() and os.listdir(tmp_path) == []
    target.write_bytes(b"old complete file")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"new, half written")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old complete file" and os.listdir(tmp_path) == ["model.tflite"]
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.tflite"]
    with pytest.raises(IsADirectoryError, match="is a directory"):
        with atomic_write(tmp_path) as f:
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_model(None, tmp_path / "missing" / "m.keras")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root only): writes past it fail with ENOSPC, as on a full disk."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_export_and_cli_onto_a_full_disk_leave_nothing_behind(full_disk, tmp_path):
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Dense(512)(inp)))  # ~150 KB of float32 weights
    x = np.random.default_rng(0).random((8, 64), dtype=np.float32)
    (full_disk / "keep.tflite").write_bytes(b"an earlier export")
    with pytest.raises(OSError):
        tfprune.export_tflite(model, str(full_disk / "m.tflite"), mode="float", sample_inputs=x)
    with pytest.raises(OSError):
        tfprune.export_tflite(model, str(full_disk / "keep.tflite"), mode="float", sample_inputs=x)
    assert sorted(os.listdir(full_disk)) == ["keep.tflite"] and (full_disk / "keep.tflite").read_bytes() == b"an earlier export"
    path = str(tmp_path / "m.keras")
    model.save(path)
    proc = subprocess.run([sys.executable, "-m", "tfprune.cli", "export", path, "--mode", "float", "--out", str(full_disk / "c.tflite")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2 and "No space left" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(os.listdir(full_disk)) == ["keep.tflite"]


@pytest.mark.parametrize("variant", ["spaced", "escaped", "legacy"])
def test_savedmodel_lambda_payload_is_found_however_the_metadata_is_written(tmp_path, variant):
    """The metadata is parsed (protocol buffer, then JSON), not searched as bytes: spacing, escapes and the old layout hide nothing."""
    from tf_keras.protobuf import saved_metadata_pb2

    marker = tmp_path / "PWNED"
    inp = keras.Input((4,))
    h = keras.layers.Lambda(lambda t, _m=str(marker): (__import__("pathlib").Path(_m).touch(), t)[1], name="payload")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    path = str(tmp_path / "sm")
    model.save(path, save_format="tf")
    meta_path = os.path.join(path, "keras_metadata.pb")
    meta = saved_metadata_pb2.SavedMetadata()
    with open(meta_path, "rb") as f:
        meta.ParseFromString(f.read())
    if variant == "legacy":  # Keras metadata inside saved_model.pb, no keras_metadata.pb: tf-keras still loads it
        from tensorflow.core.protobuf import saved_model_pb2

        sm = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            sm.ParseFromString(f.read())
        for node in meta.nodes:
            sm.meta_graphs[0].object_graph_def.nodes[node.node_id].user_object.metadata = node.metadata
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(sm.SerializeToString())
        os.remove(meta_path)
    else:
        for node in meta.nodes:
            node.metadata = node.metadata.replace('"class_name": "Lambda"', '"class_name" : "Lambda"' if variant == "spaced" else
                                                  '"class_name": "\\u004cambda"')
        with open(meta_path, "wb") as f:
            f.write(meta.SerializeToString())
    if marker.exists():
        marker.unlink()  # building the model ran the lambda once
    assert tfprune.io.stored_code(path) == ["payload"]
    with pytest.raises(ValueError, match="stores Python code in layer"):
        tfprune.load_model(path)
    assert not marker.exists()
