"""Tiny synthetic datasets and configs for the training / certify tests."""

from pathlib import Path

import numpy as np

from jaxcert.config import default_config


def write_tiny_npz(path: Path, n_train: int = 160, n_test: int = 40, size: int = 6) -> Path:
    """A 3-class problem that an MLP learns in a few steps: the class is the brightest
    of three horizontal bands (uint8 NHWC images)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 90, (n, size, size, 1))
        band = size // 3
        for i, label in enumerate(y):
            x[i, label * band : (label + 1) * band] += 150
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def tiny_config(npz: Path, method: str = "ibp", epochs: int = 2):
    c = default_config()
    c.data.name = "npz"
    c.data.path = str(npz)
    c.model.name = "mlp"
    c.method.name = method
    c.method.eps_train = 0.05
    c.train.epochs = epochs
    c.train.batch_size = 20
    c.train.warmup_epochs = 0
    c.train.ramp_epochs = 1
    c.train.lr = 3e-3
    c.train.log_every_steps = 1
    c.train.checkpoint_every_steps = 4
    c.certify.eps = 0.02
    c.certify.eps_grid = (0.0, 0.02)
    c.certify.pgd_steps = 10
    c.certify.batch_size = 16
    return c
