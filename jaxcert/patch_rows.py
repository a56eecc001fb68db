"""Rows of a linear function of an NHWC array that vanish outside a window per row.

Full CROWN bounds each neuron of a convolutional layer with its own backward pass,
whose coefficients are zero outside the neuron's receptive field. :class:`PatchRows`
keeps only the window: ``coefficients`` ``(B, R, ph, pw, C)`` for rows ``r`` covering
rows ``rows[r]`` ``(R, ph)`` and columns ``cols[r]`` ``(R, pw)`` of the ``(B, H, W, C)``
array. Positions outside the array carry zero coefficients. The patch domain
(:mod:`jaxcert.domains.patches`) builds them; input sets concretise them
(:meth:`jaxcert.sets.InputSet.concretize_patches`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["PatchRows", "read_windows"]


def read_windows(x: Array, rows: Array, cols: Array) -> Array:
    """``x`` (B, H, W, C) read on the windows ``rows`` (R, ph), ``cols`` (R, pw):
    (B, R, ph, pw, C); out-of-range positions read a clamped neighbour.

    Example:
      >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
      >>> read_windows(x, jnp.array([[0, 1]]), jnp.array([[1]]))[0, 0, :, :, 0]
      Array([[1.],
             [3.]], dtype=float32)
    """
    h, w = x.shape[1:3]
    ii = jnp.clip(rows, 0, h - 1)[:, :, None]
    jj = jnp.clip(cols, 0, w - 1)[:, None, :]
    return x[:, ii, jj, :]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PatchRows:
    """Windowed coefficient rows (see the module docstring).

    Example:
      >>> p = PatchRows(jnp.ones((1, 1, 1, 1, 1)), jnp.array([[1]]), jnp.array([[0]]))
      >>> p.dense((1, 2, 2, 1))[0, 0, :, :, 0]  # the row's one coefficient at (1, 0)
      Array([[0., 0.],
             [1., 0.]], dtype=float32)
    """

    coefficients: Array
    rows: Array
    cols: Array

    def read(self, x: Array) -> Array:
        """``x`` (B, H, W, C) on every row's window: (B, R, ph, pw, C)."""
        return read_windows(x, self.rows, self.cols)

    def dot(self, x: Array) -> Array:
        """``A_r . x`` for every row: (B, R)."""
        return jnp.sum(self.coefficients * self.read(x), axis=(2, 3, 4))

    def abs_dot(self, x: Array) -> Array:
        """``|A_r| . x`` for every row: (B, R)."""
        return jnp.sum(jnp.abs(self.coefficients) * self.read(x), axis=(2, 3, 4))

    def dense(self, shape: Sequence[int]) -> Array:
        """The rows as dense coefficients (B, R, H, W, C) of an array of ``shape``
        (out-of-range entries, all zero, are dropped)."""
        A = self.coefficients
        h, w = shape[1:3]
        dense = jnp.zeros((A.shape[0], A.shape[1], h + 2, w + 2, A.shape[4]), A.dtype)
        # Out-of-range positions go to a spare border row/column that is cut off.
        ii = jnp.clip(self.rows + 1, 0, h + 1)[:, :, None]
        jj = jnp.clip(self.cols + 1, 0, w + 1)[:, None, :]
        r = jnp.arange(A.shape[1])[:, None, None]
        dense = dense.at[:, r, ii, jj, :].add(A)
        return dense[:, :, 1 : h + 1, 1 : w + 1, :]
