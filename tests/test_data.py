"""tfprune.data: one reader for arrays, (x, y[, w]), tf.data (batched or not), generators and dict inputs."""

import numpy as np
import pytest
import tensorflow as tf

import tfprune  # noqa: F401  (first: sets TF_USE_LEGACY_KERAS)
from tfprune import data as D
from tfprune._keras import keras

X = np.arange(50 * 3, dtype="float32").reshape(50, 3)
Y = np.arange(50) % 7
W = np.linspace(0.1, 1.0, 50).astype("float32")


def _forms():
    """Every accepted form of the same 50 samples, with whether it carries labels and weights."""
    ds = tf.data.Dataset.from_tensor_slices((X, Y))
    gen_spec = (tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    return {
        "x": (X, False, False),
        "tensor": (tf.constant(X), False, False),
        "(x,)": ((X,), False, False),
        "(x, y)": ((X, Y), True, False),
        "[x, y]": ([X, Y], True, False),
        "(x, y, w)": ((X, Y, W), True, True),
        "ds unbatched": (ds, True, False),
        "ds batched": (ds.batch(16).prefetch(1), True, False),
        "ds batched, mapped": (ds.batch(16).map(lambda a, b: (a, b)), True, False),
        "ds x only": (tf.data.Dataset.from_tensor_slices(X).batch(8), False, False),
        "ds (x, y, w)": (tf.data.Dataset.from_tensor_slices((X, Y, W)).batch(13), True, True),
        "ds unknown cardinality": (ds.filter(lambda a, b: True).batch(16), True, False),
        "ds unbatch()": (ds.batch(16).unbatch(), True, False),
        "from_generator": (
            tf.data.Dataset.from_generator(lambda: ((X[i : i + 20], Y[i : i + 20]) for i in range(0, 50, 20)), output_signature=gen_spec),
            True,
            False,
        ),
        "generator": (((X[i : i + 9], Y[i : i + 9]) for i in range(0, 50, 9)), True, False),
        "list of batches (iterator)": (iter([(X[:25], Y[:25]), (X[25:], Y[25:])]), True, False),
    }


@pytest.mark.parametrize("name", list(_forms()))
def test_take_reads_every_form_the_same(name):
    data, has_y, has_w = _forms()[name]
    s = D.take(data)
    np.testing.assert_array_equal(s.x, X)
    assert s.n == 50 and isinstance(s.x, np.ndarray)
    if has_y:
        np.testing.assert_array_equal(s.y, Y)
    else:
        assert s.y is None
    if has_w:
        np.testing.assert_allclose(s.w, W)
    else:
        assert s.w is None


@pytest.mark.parametrize("name", list(_forms()))
def test_take_first_n_and_batches_stream_in_order(name):
    data, has_y, _ = _forms()[name]
    s = D.take(data, 23)
    np.testing.assert_array_equal(s.x, X[:23])
    data, _, _ = _forms()[name]  # generators are consumed: a fresh one
    got = list(D.batches(data, batch_size=10, n_samples=37))
    assert sum(len(b[0]) for b in got) == 37
    np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), X[:37])
    assert all((b[1] is not None) == has_y for b in got)
    if name in ("x", "(x, y)", "ds unbatched"):  # cut by batch_size; batched sources keep their own batches
        assert [len(b[0]) for b in got] == [10, 10, 10, 7]


def test_labels_needed_error_is_clear():
    for data in (X, tf.data.Dataset.from_tensor_slices(X).batch(5), (X,)):
        with pytest.raises(ValueError, match=r"sensitivity scoring needs labels; pass \(x, y\)"):
            D.take(data, 10, need_labels="sensitivity scoring")
    with pytest.raises(ValueError, match=r"this function needs labels; pass \(x, y\)"):
        list(D.batches(X, need_labels=True))
    assert D.take((X, Y), 5, need_labels=True).y.tolist() == Y[:5].tolist()


def test_seeded_take_is_a_random_subset_and_reproducible():
    a = D.take((X, Y), 20, seed=1)
    b = D.take(tf.data.Dataset.from_tensor_slices((X, Y)).batch(7), 20, seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    rows = a.x[:, 0] / 3
    assert len(set(rows.tolist())) == 20 and not np.array_equal(rows, np.arange(20))  # not the first 20
    np.testing.assert_array_equal(a.y, Y[rows.astype(int)])  # labels follow their inputs


def test_dict_and_multi_input_multi_output():
    x = {"a": X, "b": X[:, :2] * 2}
    s = D.take((x, [Y, Y * 2]), 12)
    assert set(s.x) == {"a", "b"} and s.n == 12
    np.testing.assert_array_equal(s.x["b"], X[:12, :2] * 2)
    np.testing.assert_array_equal(s.y[1], Y[:12] * 2)
    ds = tf.data.Dataset.from_tensor_slices((x, Y)).batch(5)
    parts = list(D.batches(ds, n_samples=12))
    assert [p[0]["a"].shape[0] for p in parts] == [5, 5, 2]
    s2 = D.take(((X, X + 1), Y))  # a tuple of inputs inside (x, y)
    assert isinstance(s2.x, tuple) and s2.n == 50
    np.testing.assert_array_equal(s2.subset(slice(3, 5)).x[1], X[3:5] + 1)


def test_split_is_a_partition_and_errors():
    sp = D.split((X, Y), 0.6, n_samples=40, seed=3)
    assert len(sp.train_index) == 24 and len(sp.held_out_index) == 16
    assert sorted(np.concatenate([sp.train_index, sp.held_out_index]).tolist()) == list(range(40))
    np.testing.assert_array_equal(sp.train.x, X[sp.train_index])
    np.testing.assert_array_equal(sp.held_out.y, Y[sp.held_out_index])
    again = D.split(tf.data.Dataset.from_tensor_slices((X, Y)).batch(8), 0.6, n_samples=40, seed=3)
    np.testing.assert_array_equal(again.train_index, sp.train_index)
    with pytest.raises(ValueError, match="at least 2 samples on each side"):
        D.split((X[:3], Y[:3]), 0.5, min_per_side=2)
    with pytest.raises(ValueError, match="needs labels"):
        D.split(X, 0.5, need_labels="probe_layers")


def test_errors_and_size():
    with pytest.raises(ValueError, match="repeats forever"):
        D.take(tf.data.Dataset.from_tensor_slices(X).repeat())
    assert D.take(tf.data.Dataset.from_tensor_slices(X).repeat().batch(4), 6).n == 6  # fine with n_samples
    with pytest.raises(ValueError, match="same number of samples"):
        D.take((X, Y[:10]))
    with pytest.raises(ValueError, match="tuple of 4"):
        D.take((X, Y, W, W))
    with pytest.raises(ValueError, match="empty"):
        D.take(iter([]))
    assert D.size(X) == 50 and D.size((X, Y)) == 50 and D.size(tf.data.Dataset.from_tensor_slices(X)) == 50
    assert D.size(tf.data.Dataset.from_tensor_slices(X).batch(4)) is None and D.size(iter([X])) is None


def test_keras_sequence_and_batched_override():
    class Seq(keras.utils.Sequence):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return X[10 * i : 10 * i + 10], Y[10 * i : 10 * i + 10]

    s = D.take(Seq())
    np.testing.assert_array_equal(s.y, Y)
    # from_tensors holds one element = the whole array: counted as one batch of 50
    assert D.take(tf.data.Dataset.from_tensors((X, Y))).n == 50
    # a generator of single samples with a fixed shape: say batched=False
    one = tf.data.Dataset.from_generator(lambda: iter(X), output_signature=tf.TensorSpec((3,), tf.float32))
    np.testing.assert_array_equal(D.take(one, batched=False).x, X)
