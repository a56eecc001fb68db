"""Windowed coefficient rows: reading windows, writing them out densely, dot products."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcert.patch_rows import PatchRows, read_windows


def test_read_windows_clamps_out_of_range_positions():
    x = jnp.arange(12.0).reshape(1, 3, 4, 1)
    got = read_windows(x, jnp.array([[-1, 0], [2, 3]]), jnp.array([[3, 4], [0, 1]]))
    assert got.shape == (1, 2, 2, 2, 1)
    # Row -1 reads row 0, row 3 reads row 2, column 4 reads column 3.
    np.testing.assert_array_equal(got[0, 0, :, :, 0], [[3, 3], [3, 3]])
    np.testing.assert_array_equal(got[0, 1, :, :, 0], [[8, 9], [8, 9]])


def test_dense_rows_and_windowed_dots_agree():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    shape = (2, 5, 4, 3)
    rows = jnp.array([[0, 1], [2, 3], [3, 4]])
    cols = jnp.array([[1, 2, 3], [0, 1, 2], [1, 2, 3]])
    patches = PatchRows(jax.random.normal(k1, (2, 3, 2, 3, 3)), rows, cols)
    x = jax.random.normal(k2, shape)
    dense = patches.dense(shape)
    assert dense.shape == (2, 3, *shape[1:])
    np.testing.assert_allclose(patches.dot(x), jnp.einsum("brhwc,bhwc->br", dense, x), rtol=1e-5)
    np.testing.assert_allclose(
        patches.abs_dot(jnp.abs(x)),
        jnp.einsum("brhwc,bhwc->br", jnp.abs(dense), jnp.abs(x)),
        rtol=1e-5,
    )
    # Every coefficient lands once: the dense rows hold the same total.
    np.testing.assert_allclose(jnp.sum(dense), jnp.sum(patches.coefficients), rtol=1e-5)


def test_out_of_range_positions_are_dropped_when_written_out():
    patches = PatchRows(jnp.ones((1, 1, 2, 1, 1)), jnp.array([[-1, 0]]), jnp.array([[0]]))
    dense = patches.dense((1, 2, 2, 1))
    np.testing.assert_array_equal(dense[0, 0, :, :, 0], [[1, 0], [0, 0]])
