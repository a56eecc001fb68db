"""IBP rules: per-primitive soundness, exactness where theory says so."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from primitive_cases import AFFINE_CASES, NONLINEAR_CASES

import jaxcert
from jaxcert import LinfBall
from jaxcert.domains.interval import propagate
from jaxcert.graph import trace

X = jax.random.uniform(jax.random.PRNGKey(0), (2, 8))
SET = LinfBall(X, 0.1)


def _ibp(fn):
    g = trace(fn, X.shape, X.dtype)
    return propagate(g, *SET.bounding_box())[g.output]


def _samples(fn, n=400):
    pts = jnp.concatenate(
        [SET.sample(jax.random.PRNGKey(1), n), SET.vertices(jax.random.PRNGKey(2), n)]
    )
    return jax.vmap(fn)(pts)


@pytest.mark.parametrize("name", sorted({**AFFINE_CASES, **NONLINEAR_CASES}))
def test_ibp_contains_every_sampled_output(name):
    fn = {**AFFINE_CASES, **NONLINEAR_CASES}[name]
    lo, hi = _ibp(fn)
    ys = _samples(fn)
    assert lo.shape == ys.shape[1:]
    assert np.all(np.asarray(ys) >= np.asarray(lo) - 1e-5), name
    assert np.all(np.asarray(ys) <= np.asarray(hi) + 1e-5), name


def test_ibp_is_exact_for_one_affine_layer():
    W = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
    x = jax.random.uniform(jax.random.PRNGKey(4), (1, 4))
    s = LinfBall(x, 0.2)
    g = trace(lambda z: z @ W + 0.5, x.shape, x.dtype)
    lo, hi = propagate(g, *s.bounding_box())[g.output]
    corners = jnp.array(list(itertools.product([-0.2, 0.2], repeat=4)))
    vals = (x + corners) @ W + 0.5
    np.testing.assert_allclose(lo[0], vals.min(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hi[0], vals.max(0), rtol=1e-5, atol=1e-6)


def test_relu_and_leaky_map_endpoints():
    lo, hi = _ibp(lambda x: jax.nn.leaky_relu(x - 0.5, 0.1))
    box_lo, box_hi = SET.bounding_box()
    np.testing.assert_allclose(lo, jax.nn.leaky_relu(box_lo - 0.5, 0.1), rtol=1e-6)
    np.testing.assert_allclose(hi, jax.nn.leaky_relu(box_hi - 0.5, 0.1), rtol=1e-6)


@pytest.mark.parametrize("fn", [jnp.sin, jnp.cos])
def test_sin_and_cos_ranges_are_exact_on_every_kind_of_interval(fn):
    # Around crests and troughs, between them, across several periods, far from 0.
    rng = np.random.default_rng(0)
    lo = rng.uniform(-20, 20, 500).astype(np.float32)
    width = (rng.uniform(0, 1, 500) * rng.choice([0.01, 1.0, 4.0, 10.0], 500)).astype(np.float32)
    lo[:4], width[:4] = [np.pi / 2 - 0.1, -np.pi / 2 - 0.1, 0.3, 1e3], [0.2, 0.2, 0.0, 1.0]
    box = jaxcert.Box(jnp.asarray(lo)[None], jnp.asarray(lo + width)[None])
    b = jaxcert.bound(fn, box, "ibp")
    grid = np.linspace(0, 1, 20001)[:, None] * width + lo
    values = np.asarray(fn(jnp.asarray(grid, jnp.float32)))
    assert np.all(np.asarray(b.lower)[0] <= values.min(0) + 1e-6)
    assert np.all(np.asarray(b.upper)[0] >= values.max(0) - 1e-6)
    # Exact up to the outward slack of a few float32 ulps of the argument.
    slack = 3e-5 * (1 + np.abs(lo) + width)
    assert np.all(np.asarray(b.lower)[0] >= values.min(0) - slack)
    assert np.all(np.asarray(b.upper)[0] <= values.max(0) + slack)
