"""Sparsity-preserving QAT (tfprune.quantize): zeros kept through QAT and into the int8 .tflite, accuracy, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tfprune
from tests.conftest import weights_snapshot
from tfprune._keras import keras
from tfprune.quantize import convert_qat, is_qat_model, kernel_zeros, pqat, run_tflite, tflite_kernel_zeros, tflite_kernels
from tfprune.training.finetune import freeze_zeros

SPARSITY = {"conv1": 0.25, "conv2": 0.6, "fc1": 0.9, "fc2": 0.5}


def magnitude_pruned(model, sparsity: dict):
    """A copy of ``model`` with the smallest ``sparsity[layer]`` of each kernel set to zero (a stand-in for a pruned model)."""
    out = tfprune.clone(model)
    for layer in out.layers:
        k = getattr(layer, "kernel", None)
        if k is None:
            continue
        v = k.numpy()
        cut = np.quantile(np.abs(v), sparsity[layer.name])
        k.assign(np.where(np.abs(v) <= cut, 0.0, v).astype(v.dtype))
    return out


def int8_kernels(content: bytes, names: list[str]) -> dict[str, np.ndarray]:
    """Each named layer's int8 kernel from a dense-stored .tflite, in Keras layout."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    out = {}
    for name in names:
        pat = re.compile(r"(^|[/;])quant_" + re.escape(name) + "/")
        for d in interp.get_tensor_details():
            if d["dtype"] == np.int8 and len(d["shape"]) in (2, 4) and pat.search(d["name"]):
                a = interp.get_tensor(d["index"])
                out[name] = a.transpose(1, 2, 3, 0) if a.ndim == 4 else a.T
                break
    return out


@pytest.fixture(scope="module")
def pruned(trained_tiny):
    m = magnitude_pruned(trained_tiny, SPARSITY)
    return tfprune.models.compile_classifier(m)


@pytest.fixture(scope="module")
def qat(pruned, digits_data):
    keras.utils.set_random_seed(0)
    (xt, yt), _ = digits_data
    return pqat(pruned, (xt, yt), epochs=2, batch_size=64, learning_rate=1e-3, metrics=["accuracy"])


def test_zeros_survive_qat_exactly(pruned, qat):
    before, after = kernel_zeros(pruned), kernel_zeros(qat)
    assert set(before) == {"conv1", "conv2", "fc1", "fc2"} == set(after)
    for name, kz in before.items():
        assert kz.sparsity == pytest.approx(SPARSITY[name], abs=0.02)
        assert after[name] == kz, name
    # same positions, and the nonzero weights were trained
    qk = {w.layer.name: w._weight_vars[0][0].numpy() for w in qat.layers if hasattr(w, "_weight_vars") and w._weight_vars}
    moved = 0.0
    for layer in pruned.layers:
        if layer.name in qk:
            k = layer.kernel.numpy()
            np.testing.assert_array_equal(qk[layer.name] == 0, k == 0)
            moved = max(moved, float(np.abs(qk[layer.name] - k).max()))
    assert moved > 1e-5, "pqat did not train"


@pytest.mark.slow  # keeps the default suite under 12 min; make test-all runs it
def test_zeros_survive_into_tflite(pruned, qat):
    before = kernel_zeros(pruned)
    sparse = convert_qat(qat)
    in_file = tflite_kernel_zeros(sparse, before)
    assert set(in_file) == set(before)
    dense = convert_qat(qat, sparse_storage=False)
    assert len(sparse) < len(dense)
    stored = sum(v.stored for v in in_file.values())
    assert stored < 0.6 * sum(v.n for v in before.values()), "the zeros are not stored sparsely"
    assert all(v.stored == v.n for v in tflite_kernel_zeros(dense, before).values())
    # decoding the sparse file gives the dense file's int8 values exactly
    for a, b in zip(tflite_kernels(sparse), tflite_kernels(dense)):
        np.testing.assert_array_equal(a["values"], b["values"])
    ints = int8_kernels(dense, list(before))
    for layer in pruned.layers:
        if layer.name in before:
            zero = layer.kernel.numpy() == 0
            q = ints[layer.name]
            assert q.shape == zero.shape
            assert np.all(q[zero] == 0), f"{layer.name}: a pruned zero became nonzero in the int8 kernel"
            # rounding may add zeros (weights below half a step), never remove one; both encodings agree
            assert in_file[layer.name].zeros == int(np.count_nonzero(q == 0)) >= before[layer.name].zeros
            assert in_file[layer.name].zeros - before[layer.name].zeros <= 0.01 * zero.size


def test_int8_tflite_accuracy_close_to_keras(pruned, qat, digits_data):
    _, (xs, ys) = digits_data
    content = convert_qat(qat)
    got, runtime = run_tflite(content, xs)
    ref = qat.predict(xs, verbose=0)
    acc_q = float(np.mean(ref.argmax(-1) == ys))
    acc_t = float(np.mean(got.argmax(-1) == ys))
    acc_p = float(np.mean(pruned.predict(xs, verbose=0).argmax(-1) == ys))
    assert acc_t > 0.8, (acc_t, acc_q, acc_p, runtime)
    assert abs(acc_t - acc_q) <= 0.02
    assert acc_t >= acc_p - 0.03
    assert np.mean(got.argmax(-1) == ref.argmax(-1)) >= 0.97
    # XNNPack-safe encoding runs with the default delegate and computes the same
    safe = convert_qat(qat, xnnpack_safe=True)
    got_safe, runtime_safe = run_tflite(safe, xs[:200])
    assert runtime_safe == "xnnpack"
    assert np.mean(got_safe.argmax(-1) == got[:200].argmax(-1)) >= 0.99


def test_export_tflite_int8_takes_a_qat_model(qat, digits_data):
    (xt, _), (xs, ys) = digits_data
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        r = tfprune.export_tflite(qat, f"{d}/q.tflite", mode="int8", sample_inputs=(xs[:300], ys[:300]), representative_data=xt[:64], n_samples=300)
    assert r.top1_agreement >= 0.97
    assert abs(r.tflite_accuracy - r.keras_accuracy) <= 0.03


def test_input_model_unchanged_plain_wrapped_and_tf_data(pruned, digits_data):
    (xt, yt), _ = digits_data
    snap = weights_snapshot(pruned)
    types = [type(layer) for layer in pruned.layers]
    wrapped = freeze_zeros(pruned)
    wsnap = weights_snapshot(wrapped)
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((xt[:512], yt[:512])).batch(64)
    q = pqat(wrapped, ds, epochs=1)
    assert is_qat_model(q) and not is_qat_model(pruned)
    for a, b in zip(snap, weights_snapshot(pruned)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(wsnap, weights_snapshot(wrapped)):
        np.testing.assert_array_equal(a, b)
    assert [type(layer) for layer in pruned.layers] == types
    assert kernel_zeros(q) == kernel_zeros(pruned) == kernel_zeros(wrapped)
    q_x_y = pqat(pruned, xt[:256], yt[:256], epochs=0)
    assert kernel_zeros(q_x_y) == kernel_zeros(pruned)


def test_clear_errors(pruned, qat, digits_data):
    (xt, _), _ = digits_data
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Flatten()(x)
    odd = keras.Model(inp, keras.layers.Dense(10, name="d")(x))
    with pytest.raises(ValueError, match=r"tfmot cannot quantize model .*Fix:"):
        pqat(odd, (xt[:64], np.zeros(64, int)), epochs=0)
    with pytest.raises(ValueError, match="not a QAT model"):
        convert_qat(pruned)
    with pytest.raises(ValueError, match="already a QAT model"):
        pqat(qat, (xt[:64], np.zeros(64, int)))
    with pytest.raises(ValueError, match="label"):
        pqat(pruned, xt[:64], epochs=1)


def test_decode_sparse_csr_and_blocks():
    from tfprune.quantize import decode_sparse

    dense = np.array([[0, 3, 0, 0], [5, 0, 0, 7]], np.int8)
    # rows dense, columns CSR: row 0 holds column 1, row 1 columns 0 and 3
    got = decode_sparse(np.array([3, 5, 7], np.int8), (2, 4), [0, 1], [], [("dense", 2), ("csr", [0, 1, 3], [1, 0, 3])])
    np.testing.assert_array_equal(got, dense)
    # 1x2 blocks along the columns: block columns CSR, then the block's 2 values dense (zeros inside a block are stored)
    got = decode_sparse(np.array([0, 3, 5, 0, 0, 7], np.int8), (2, 4), [0, 1, 2], [1],
                        [("dense", 2), ("csr", [0, 1, 3], [0, 0, 1]), ("dense", 2)])
    np.testing.assert_array_equal(got, dense)
    # a dimension of 3 in 1x2 blocks: the last block is padded with a zero past the edge
    got = decode_sparse(np.array([1, 2, 3, 0], np.int8), (1, 3), [0, 1, 2], [1], [("dense", 1), ("csr", [0, 2], [0, 1]), ("dense", 2)])
    np.testing.assert_array_equal(got, [[1, 2, 3]])
    with pytest.raises(ValueError, match="outside the shape"):
        decode_sparse(np.array([1, 2, 3, 4], np.int8), (1, 3), [0, 1, 2], [1], [("dense", 1), ("csr", [0, 2], [0, 1]), ("dense", 2)])
    with pytest.raises(ValueError, match="stored values"):
        decode_sparse(np.array([3, 5, 7, 9], np.int8), (2, 4), [0, 1], [], [("dense", 2), ("csr", [0, 1, 3], [1, 0, 3])])


@pytest.mark.slow  # ~9 s of PQAT fitting; make test-all runs it
def test_conv_batchnorm_kept_and_depthwise_warned():
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(10, name="d")(x))
    for name in ("c1", "dw", "d"):
        k = m.get_layer(name).weights[0]
        v = k.numpy()
        k.assign(np.where(np.abs(v) < np.quantile(np.abs(v), 0.5), 0.0, v))
    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28, 1)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"does not keep the zeros .*dw \(DepthwiseConv2D"):
        q = pqat(m, (x, rng.integers(0, 10, 256)), epochs=1, learning_rate=1e-3)
    before = kernel_zeros(m)
    assert kernel_zeros(q)["c1"] == before["c1"] and kernel_zeros(q)["d"] == before["d"]
    # the converter's 1x16 block encoding cannot hold the 8-input Dense kernel: convert_qat stores it dense, and says so
    with pytest.warns(UserWarning, match=r"stored dense: .*quant_d/"):
        sparse = convert_qat(q)
    in_file = tflite_kernel_zeros(sparse, before)
    for name in ("c1", "d"):  # the BatchNorm folded into c1 scales its kernel: zeros stay zeros
        assert in_file[name].zeros >= before[name].zeros
    got, _ = run_tflite(sparse, x[:32])
    ref, _ = run_tflite(convert_qat(q, sparse_storage=False), x[:32])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_allclose(got, q.predict(x[:32], verbose=0), atol=0.05 * float(np.abs(ref).max()))
