"""Intermediate bounds by backward passes: chunked, intersected with IBP, exact on one layer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    small_cnn_case,
)

import jaxcert


@pytest.mark.parametrize("chunk", [2, 16])  # 32-40 chunks per layer (lax.map) and 4-5 (unrolled)
def test_chunked_intermediate_passes_equal_one_pass(chunk):
    fn, s = small_cnn_case()
    whole = jaxcert.bound(fn, s, "crown", chunk_size=10_000)
    chunked = jaxcert.bound(fn, s, "crown", chunk_size=chunk)
    np.testing.assert_allclose(whole.lower, chunked.lower, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.upper, chunked.upper, rtol=1e-5, atol=1e-6)


def test_intersecting_with_ibp_only_tightens():
    fn, s = small_cnn_case()
    tight = jaxcert.bound(fn, s, "crown", return_intermediate=True)
    loose = jaxcert.bound(
        fn, s, "crown", intersect_ibp=False, screen_ibp=False, return_intermediate=True
    )
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    for name, t in tight.intermediate.items():
        # Within IBP's box at every layer, and within both at the first layer (later
        # layers' adaptive slopes change with the refined bounds: no ordering there).
        others = [ibp.intermediate[name]] + ([loose.intermediate[name]] if name == "relu_0" else [])
        for o in others:
            assert np.all(np.asarray(t.lower) >= np.asarray(o.lower) - 1e-6), name
            assert np.all(np.asarray(t.upper) <= np.asarray(o.upper) + 1e-6), name


def test_first_layer_crown_bounds_are_exact():
    fn, s = small_cnn_case()
    b = jaxcert.bound(fn, s, "crown", return_intermediate=True, intersect_ibp=False)
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    # One affine layer over a box: both are exact, so they agree.
    np.testing.assert_allclose(
        b.intermediate["relu_0"].lower, ibp.intermediate["relu_0"].lower, rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------- IBP's first layer over norm balls

_W = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
_B = np.linspace(-1, 1, 5).astype(np.float32)
_X = np.random.default_rng(1).uniform(0.2, 0.8, size=(3, 12)).astype(np.float32)


def _dense(x):
    return x @ _W + _B


def _closed_form(kind, eps, k=2):
    """``W x + b`` over each set, written out: dual norms; L0 by the k best coordinates."""
    center = _X @ _W + _B
    if kind == "l2":
        dev = eps * np.linalg.norm(_W, axis=0)
        return center - dev, center + dev
    if kind == "l1":
        dev = eps * np.abs(_W).max(axis=0)
        return center - dev, center + dev
    # L0 in [0, 1]: moving coordinate i changes output j by W_ij (t - x_i), t in [0, 1].
    up = np.maximum(_W[None] * (1 - _X[:, :, None]), _W[None] * (0 - _X[:, :, None]))
    down = -np.minimum(_W[None] * (1 - _X[:, :, None]), _W[None] * (0 - _X[:, :, None]))
    top = lambda g: -np.sort(-g, axis=1)[:, :k].sum(axis=1)  # noqa: E731
    return center - top(down), center + top(up)


@pytest.mark.parametrize(
    "kind, make",
    [
        ("l2", lambda: jaxcert.L2Ball(_X, 0.3)),
        ("l1", lambda: jaxcert.L1Ball(_X, 0.3)),
        ("l0", lambda: jaxcert.L0Ball(_X, 2, clip=(0.0, 1.0))),
    ],
)
@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "cap-ibp", "crown"])
def test_one_affine_layer_over_a_norm_ball_is_exact_under_every_method(kind, make, method):
    b = jaxcert.bound(_dense, make(), method)
    lo, hi = _closed_form(kind, 0.3)
    np.testing.assert_allclose(b.lower, lo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.upper, hi, rtol=1e-5, atol=1e-5)


def test_a_clipped_ball_takes_the_better_of_ball_and_box_per_neuron():
    import jax.numpy as jnp

    # Near the clip with a large radius the box is the tighter side; a small radius
    # leaves the ball tighter.
    x = np.full((2, 12), 0.02, np.float32)
    eps = np.array([0.3, 2.0], np.float32)
    ball = jaxcert.L2Ball(jnp.asarray(x), jnp.asarray(eps), clip=(0.0, 1.0))
    b = jaxcert.bound(_dense, ball, "ibp")
    center = x @ _W + _B
    dev = eps[:, None] * np.linalg.norm(_W, axis=0)
    box = jaxcert.bound(_dense, jaxcert.Box(*ball.bounding_box()), "ibp")
    box_lo, box_hi = np.asarray(box.lower), np.asarray(box.upper)
    np.testing.assert_allclose(b.lower, np.maximum(center - dev, box_lo), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.upper, np.minimum(center + dev, box_hi), rtol=1e-5, atol=1e-5)
    assert np.any(box_lo > center - dev)  # both sides are used somewhere
    assert np.any(box_lo < center - dev)


def test_a_convolution_behind_a_normalisation_is_exact_over_an_l2_ball():
    import jax
    import jax.numpy as jnp

    kernel = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 1, 2))
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 6, 6, 1))

    def first(z):  # normalise, then a padded, strided convolution
        z = (z - 0.5) / 0.25
        return jax.lax.conv_general_dilated(
            z, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def net(z):
        return jax.nn.relu(first(z)).reshape(2, -1) @ jnp.ones((18, 1))

    ball = jaxcert.L2Ball(x, 0.1)
    b = jaxcert.bound(net, ball, "ibp", return_intermediate=True)
    # Each neuron's row, from the Jacobian of one example (padding cuts some rows short).
    jac = jax.jacobian(lambda v: first(v.reshape(1, 6, 6, 1)).reshape(-1))(x[0].reshape(-1))
    dev = 0.1 * np.linalg.norm(np.asarray(jac), axis=1)
    center = np.asarray(first(x)).reshape(2, -1)
    inter = b.intermediate["relu_0"]
    np.testing.assert_allclose(
        np.asarray(inter.lower).reshape(2, -1), center - dev, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(inter.upper).reshape(2, -1), center + dev, rtol=1e-5, atol=1e-5
    )
    # Tighter than IBP from the bounding box, and sound on points of the ball.
    box = jaxcert.bound(net, jaxcert.Box(*ball.bounding_box()), "ibp")
    assert np.all(np.asarray(b.lower) >= np.asarray(box.lower) - 1e-5)
    assert float(np.sum(b.upper - b.lower)) < 0.8 * float(np.sum(box.upper - box.lower))
    points = ball.sample(jax.random.PRNGKey(4), 256)
    values = jax.vmap(net)(points)
    assert np.all(np.asarray(values) >= np.asarray(b.lower) - 1e-5)
    assert np.all(np.asarray(values) <= np.asarray(b.upper) + 1e-5)


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_a_residual_shortcut_over_a_norm_ball_is_exact(kind):
    # x @ W reaches the output through a sum with a ReLU branch (a residual shortcut):
    # not an activation's input, still an affine map of the ball. The branch is zero.
    import jax
    import jax.numpy as jnp

    def net(x):
        return jax.nn.relu(x @ jnp.ones((12, 3))) @ jnp.zeros((3, 5)) + _dense(x)

    ball = (jaxcert.L2Ball if kind == "l2" else jaxcert.L1Ball)(_X, 0.3)
    b = jaxcert.bound(net, ball, "ibp")
    lo, hi = _closed_form(kind, 0.3)
    np.testing.assert_allclose(b.lower, lo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.upper, hi, rtol=1e-5, atol=1e-5)


def test_the_weighted_affine_prefix_skips_pure_reshapes_and_stops_at_activations():
    import jax
    import jax.numpy as jnp

    from jaxcert.domains.intermediate import weighted_affine_prefix
    from jaxcert.graph import trace

    def fn(x):
        h = x.reshape(1, 4) * 2.0  # a reshape (structural) then a scaling (weighted)
        return jax.nn.relu(h + 1.0) @ jnp.ones((4, 2))

    g = trace(fn, (1, 2, 2), jnp.float32)
    ops_of = [g.nodes[i].op for i in weighted_affine_prefix(g)]
    assert ops_of == ["mul", "add"]  # not the reshape, nothing after the ReLU
