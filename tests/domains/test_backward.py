"""The backward core: chunking of many passes, and the transposed convolutions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    small_cnn_case,
)

from jaxcert.domains import backward
from jaxcert.graph import trace


def test_default_chunk_size_respects_the_budget():
    fn, s = small_cnn_case()
    g = trace(fn, s.shape, jnp.float32)
    chunk = backward.default_chunk_size(g, budget=10_000)
    assert 2 * 3 * chunk * 64 <= 10_000 or chunk == 1


@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window_strides=(1, 1), padding="VALID"),
        dict(window_strides=(2, 2), padding=((1, 0), (0, 1))),
        dict(window_strides=(1, 2), padding="SAME", rhs_dilation=(2, 1)),
        dict(window_strides=(1, 1), padding="VALID", feature_group_count=2),
    ],
)
def test_conv_transpose_has_the_gradient_of_plain_autodiff(kwargs, chunk):
    # The conv rule's hand-written VJP must equal differentiating the transpose itself,
    # whole or on uneven slices of the batch (6 examples, chunks of 4 and 2).
    from jax import lax

    from jaxcert.domains.backward import conv_transpose

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x_shape = (6, 7, 7, 4)
    w = jax.random.normal(k1, (3, 3, 4 // kwargs.get("feature_group_count", 1), 6))

    def conv(x, w):
        dn = ("NHWC", "HWIO", "NHWC")
        return lax.conv_general_dilated(x, w, dimension_numbers=dn, **kwargs)

    out_shape = jax.eval_shape(conv, jnp.zeros(x_shape), w).shape
    a = jax.random.normal(k2, out_shape)
    g = jax.random.normal(k3, x_shape)

    def plain(a, w):
        return jax.vjp(lambda x: conv(x, w), jnp.zeros(x_shape))[1](a)[0]

    fast = conv_transpose(conv, x_shape, jnp.float32, chunk)
    np.testing.assert_allclose(fast(a, w), plain(a, w), rtol=1e-5, atol=1e-5)
    for argnum in (0, 1):
        want = jax.grad(lambda a, w: jnp.sum(g * plain(a, w)), argnum)(a, w)
        got = jax.grad(lambda a, w: jnp.sum(g * fast(a, w)), argnum)(a, w)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_batch_chunk_splits_big_batches_on_cpu_only():
    from jaxcert.domains.backward import CPU_CONV_CHUNK_BYTES, conv_batch_chunk

    per_example = CPU_CONV_CHUNK_BYTES // 100
    assert conv_batch_chunk(900, per_example, "cpu") == 100
    assert conv_batch_chunk(50, per_example, "cpu") == 50
    assert conv_batch_chunk(30, 4 * CPU_CONV_CHUNK_BYTES, "cpu") == 1
    assert conv_batch_chunk(900, 4 * CPU_CONV_CHUNK_BYTES, "cpu") == 900 // 32 + 1  # <= 32 calls
    assert conv_batch_chunk(900, per_example, "gpu") == 900
