"""Backward (CROWN-family) rules: exact on affine functions, sound on the rest."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from primitive_cases import AFFINE_CASES, NONLINEAR_CASES

import jaxcert
from jaxcert import LinfBall
from jaxcert.domains import backward
from jaxcert.graph import trace

X = jax.random.uniform(jax.random.PRNGKey(0), (2, 8))
SET = LinfBall(X, 0.1)
CORNERS = jnp.array(list(itertools.product([-0.1, 0.1], repeat=8)))  # (256, 8)


def _flat(y):
    return y.reshape(y.shape[0], -1)


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
@pytest.mark.parametrize("method", ["crown-ibp", "crown"])
def test_linear_bounds_are_exact_on_affine_functions(name, method):
    fn = AFFINE_CASES[name]
    b = jaxcert.bound(fn, SET, method)
    vals = jax.vmap(lambda d: _flat(fn(X + d)))(CORNERS)  # (256, batch, n_out)
    np.testing.assert_allclose(b.lower, vals.min(0), rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(b.upper, vals.max(0), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", sorted(NONLINEAR_CASES))
@pytest.mark.parametrize("method", ["crown-ibp", "crown", "fastlin", "cap-ibp"])
def test_linear_bounds_contain_samples_on_nonlinear_functions(name, method):
    fn = NONLINEAR_CASES[name]
    b = jaxcert.bound(fn, SET, method)
    pts = jnp.concatenate([SET.sample(jax.random.PRNGKey(1), 300), X + CORNERS[:, None]])
    ys = jax.vmap(lambda x: _flat(fn(x)))(pts)
    assert np.all(np.asarray(ys) >= np.asarray(b.lower) - 1e-5), (name, method)
    assert np.all(np.asarray(ys) <= np.asarray(b.upper) + 1e-5), (name, method)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(5, (3, 3))(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _cnn():
    x = jax.random.uniform(jax.random.PRNGKey(5), (3, 8, 8, 1))
    model = _CNN()
    variables = model.init(jax.random.PRNGKey(6), x)
    return (lambda z: model.apply(variables, z)), LinfBall(x, 0.05, clip=(0.0, 1.0))


@pytest.mark.parametrize("chunk", [2, 16])  # 32-40 chunks per layer (lax.map) and 4-5 (unrolled)
def test_chunked_intermediate_passes_equal_one_pass(chunk):
    fn, s = _cnn()
    whole = jaxcert.bound(fn, s, "crown", chunk_size=10_000)
    chunked = jaxcert.bound(fn, s, "crown", chunk_size=chunk)
    np.testing.assert_allclose(whole.lower, chunked.lower, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.upper, chunked.upper, rtol=1e-5, atol=1e-6)


def test_intersecting_with_ibp_only_tightens():
    fn, s = _cnn()
    tight = jaxcert.bound(fn, s, "crown", return_intermediate=True)
    loose = jaxcert.bound(fn, s, "crown", intersect_ibp=False, return_intermediate=True)
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    for name, t in tight.intermediate.items():
        # Within IBP's box at every layer, and within both at the first layer (later
        # layers' adaptive slopes change with the refined bounds: no ordering there).
        others = [ibp.intermediate[name]] + ([loose.intermediate[name]] if name == "relu_0" else [])
        for o in others:
            assert np.all(np.asarray(t.lower) >= np.asarray(o.lower) - 1e-6), name
            assert np.all(np.asarray(t.upper) <= np.asarray(o.upper) + 1e-6), name


def test_first_layer_crown_bounds_are_exact():
    fn, s = _cnn()
    b = jaxcert.bound(fn, s, "crown", return_intermediate=True, intersect_ibp=False)
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    # One affine layer over a box: both are exact, so they agree.
    np.testing.assert_allclose(
        b.intermediate["relu_0"].lower, ibp.intermediate["relu_0"].lower, rtol=1e-5, atol=1e-5
    )


def test_default_chunk_size_respects_the_budget():
    fn, s = _cnn()
    g = trace(fn, s.shape, jnp.float32)
    chunk = backward.default_chunk_size(g, budget=10_000)
    assert 2 * 3 * chunk * 64 <= 10_000 or chunk == 1


def test_user_slopes_change_the_final_pass_only_where_unstable():
    fn, s = _cnn()
    y = jnp.array([0, 1, 2])
    C = jaxcert.margin_spec(y, 3)
    base = jaxcert.bound(fn, s, "crown-ibp", spec=C, return_intermediate=True)
    names = list(base.intermediate)
    ones = {n: jnp.ones(base.intermediate[n].lower.shape) for n in names}
    zeros = {n: jnp.zeros(base.intermediate[n].lower.shape) for n in names}
    b1 = jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes=ones)
    b0 = jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes=zeros)
    assert not np.allclose(b1.lower, b0.lower)
    with pytest.raises(ValueError, match="unknown ReLU node"):
        jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes={"relu_9": ones[names[0]]})
    with pytest.raises(ValueError, match="must have shape"):
        jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes={names[0]: jnp.ones((1,))})


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
