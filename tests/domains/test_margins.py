"""Margin domains (SingleProp, DoubleMargin): hand examples and their stated properties.

These are approximations, so the tests check what the papers claim of them, not
soundness: exact values on hand-computed cases, equality with the sound verifiers
where the derivations are exact, the over-approximation of Fast-Lin's half-gap, and
DoubleMargin's ``v = 0`` on locally linear networks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_mlp

import jaxcert
from jaxcert.domains.margins import MARGIN_METHODS, margins

# y = relu(x0) - relu(x1) at x = (0.05, 1.0), eps = 0.1: the first ReLU is unstable.
X = jnp.array([[0.05, 1.0]])
W = jnp.array([[1.0], [-1.0]])


def tiny(x):
    return jax.nn.relu(x) @ W


# Hand computation (gamma = 0.1). Nominal output 0.05 - 1 = -0.95.
#  singleprop-zero: unstable ReLU -> (z + r)/2 = 0.075; stable -> 0.1; sum 0.175.
#  singleprop-fastlin: 3r/4 + z/2 - z^2/(4r) = 0.075 + 0.025 - 0.00625 = 0.09375; +0.1.
#  double-margin: s = 0.175; v = |relu(z+g r) - 2relu(z) + relu(z-g r)| / (2 g^2) is 0 on
#                 both ReLUs (|z| > g r = 0.01: linear there): range -0.95 -/+ 0.175.
#  ibp+v: IBP output [-1.1, -0.75], v = 0.
HAND = {
    "singleprop-zero": (-1.125, -0.775),
    "singleprop-fastlin": (-0.95 - 0.19375, -0.95 + 0.19375),
    # CROWN's adaptive lower slope is 1 here (u > -l): a_U = 0.75, b_U = 0.0375, so
    # Eq. 6 gives 1.75/2 * 0.1 + 0.0375/2 - 0.25/2 * 0.05 = 0.1; plus 0.1.
    "singleprop-crown": (-1.15, -0.75),
    "double-margin": (-1.125, -0.775),
    "double-margin-s": (-1.125, -0.775),
    "ibp+v": (-1.1, -0.75),
}
# gamma = 1 (the step is the whole margin): v = |0.15 - 0.1 + 0| / 2 = 0.025 on the first
# ReLU, the exact drift of IBP's midpoint there; 0 on the second (|z| > r).
HAND_GAMMA_1 = {"double-margin": (-1.15, -0.75), "ibp+v": (-1.125, -0.725)}


@pytest.mark.parametrize("method", MARGIN_METHODS)
def test_hand_computed_example(method):
    m = margins(tiny, jaxcert.LinfBall(X, 0.1), method)  # gamma: its default, 0.1
    np.testing.assert_allclose(m.nominal, [[-0.95]], atol=1e-6)
    np.testing.assert_allclose(m.lower, [[HAND[method][0]]], atol=1e-6)
    np.testing.assert_allclose(m.upper, [[HAND[method][1]]], atol=1e-6)


@pytest.mark.parametrize("method", sorted(HAND_GAMMA_1))
def test_hand_computed_example_with_the_whole_margin_as_step(method):
    m = margins(tiny, jaxcert.LinfBall(X, 0.1), method, gamma=1.0)
    np.testing.assert_allclose(m.lower, [[HAND_GAMMA_1[method][0]]], atol=1e-6)
    np.testing.assert_allclose(m.upper, [[HAND_GAMMA_1[method][1]]], atol=1e-6)


def _v_margin(fn, input_set, **options):
    """DoubleMargin's v at the output: its half-width minus s's."""
    full = margins(fn, input_set, "double-margin", **options)
    s_only = margins(fn, input_set, "double-margin-s")
    return (full.upper - full.lower) / 2 - (s_only.upper - s_only.lower) / 2


def test_v_tends_to_the_taylor_term_on_a_smooth_activation():
    # One activation: v = s^2/2 |sigma''(z)| + O(gamma^2), the paper's Taylor term.
    x = jnp.linspace(-2.0, 2.0, 9)[None, :]
    eps = 0.2
    curvature = jax.vmap(jax.grad(jax.grad(jnp.tanh)))(x[0])
    want = eps**2 / 2 * jnp.abs(curvature)
    for gamma, rtol in ((0.5, 0.1), (0.1, 0.02)):
        v = _v_margin(jnp.tanh, jaxcert.LinfBall(x, eps), gamma=gamma)
        np.testing.assert_allclose(v[0], want, rtol=rtol, atol=2e-5)


def _pool(x):
    """A 1-D max-pool (window 2, stride 2) of a scaled input: non-uniform margins."""
    y = x * jnp.array([1.0, 3.0, 2.0, 0.5])
    return jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2), (1, 2), "VALID")


def test_the_same_rule_covers_max_pool_and_relu():
    # gamma = 1: v is the exact drift of the midpoint, (f(z+s) + f(z-s))/2 - f(z), for
    # the pool and the ReLU alike (both convex); the step is the margin, never a constant.
    x = jnp.array([[0.3, 0.2, -0.1, 0.05]])
    eps = 0.1
    scale = jnp.array([1.0, 3.0, 2.0, 0.5])
    z, s = x * scale, eps * scale
    for fn, act in (
        (_pool, lambda y: _pool(y / scale)),
        (lambda v: jax.nn.relu(v * scale), jax.nn.relu),
    ):
        want = (act(z + s) + act(z - s)) / 2 - act(z)
        np.testing.assert_allclose(
            _v_margin(fn, jaxcert.LinfBall(x, eps), gamma=1.0), want, atol=1e-6
        )
    assert float(jnp.max(want)) > 0  # the ReLU at -0.2 +- 0.2 bends: not the trivial case


def test_v_commutes_with_rescaling():
    # A bias-free ReLU/max-pool network is positively homogeneous; with a step relative to
    # the margin, so are its margins (an absolute step would break this).
    def net(x):
        h = jax.nn.relu(x @ jax.random.normal(jax.random.PRNGKey(0), (8, 8)))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2), (1, 2), "VALID")
        return h @ jax.random.normal(jax.random.PRNGKey(1), (4, 3))

    x = jax.random.normal(jax.random.PRNGKey(2), (5, 8))
    v = _v_margin(net, jaxcert.LinfBall(x, 0.2), gamma=0.5)
    for c in (0.1, 10.0):
        scaled = _v_margin(net, jaxcert.LinfBall(c * x, c * 0.2), gamma=0.5)
        np.testing.assert_allclose(scaled, c * v, rtol=1e-3, atol=c * 1e-5)
    assert float(jnp.mean(v)) > 0.01  # v is not (almost) zero: the test has teeth


def _half_gaps(fn, s, verifier, method):
    # Pure Fast-Lin: no intersection with IBP, which the derivation does not model.
    b = jaxcert.bound(
        fn, s, verifier, return_intermediate=True, intersect_ibp=False, screen_ibp=False
    )
    m = margins(fn, s, method, return_intermediate=True)
    out = {}
    for name, ref in b.intermediate.items():
        lo, hi = m.intermediate[name]
        out[name] = ((hi - lo) / 2, (ref.upper - ref.lower) / 2)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_singleprop_fastlin_over_approximates_fastlin_half_gap(seed, eps):
    # Eq. 6 step (ii) bounds ||A B||_1 by |A| ||B||_1: v >= Fast-Lin's half-gap, with
    # equality on the first layer (exact) -- up to the midpoint assumption.
    fn = random_mlp(seed)
    x = jax.random.normal(jax.random.PRNGKey(10 + seed), (6, 8))
    gaps = _half_gaps(fn, jaxcert.LinfBall(x, eps), "fastlin", "singleprop-fastlin")
    first, *rest = gaps.values()
    np.testing.assert_allclose(first[0], first[1], rtol=1e-5, atol=1e-6)
    for v, h in rest:
        assert np.all(np.asarray(v) >= np.asarray(h) - 1e-5)


def test_singleprop_fastlin_equals_fastlin_without_cancellation():
    # Non-negative weights: no sign cancellation, so Eq. 6 is exact through the second
    # layer (where Fast-Lin's midpoints are still the nominal values).
    fn = random_mlp(3, nonnegative=True, bias_scale=1.0)
    x = jax.random.normal(jax.random.PRNGKey(4), (6, 8)) - 0.3
    s = jaxcert.LinfBall(x, 0.05)
    gaps = _half_gaps(fn, s, "fastlin", "singleprop-fastlin")
    for v, h in gaps.values():
        np.testing.assert_allclose(v, h, rtol=1e-5, atol=1e-6)
    # ... and some neurons are unstable, so this is not the trivial case.
    b = jaxcert.bound(fn, s, "fastlin", return_intermediate=True)
    unstable = [np.mean((iv.lower < 0) & (iv.upper > 0)) for iv in b.intermediate.values()]
    assert max(unstable) > 0


def test_double_margin_v_vanishes_on_locally_linear_networks():
    # Every pre-activation farther than gamma from the kink: ReLU is linear there, all
    # finite differences vanish, so v = 0 and DoubleMargin = s only.
    fn = random_mlp(7, bias_scale=5.0)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 8))
    s = jaxcert.LinfBall(x, 0.001)
    full = margins(fn, s, "double-margin", gamma=0.01)
    s_only = margins(fn, s, "double-margin-s")
    np.testing.assert_array_equal(full.lower, s_only.lower)
    np.testing.assert_array_equal(full.upper, s_only.upper)


def test_double_margin_v_is_positive_near_kinks_and_grows_with_eps():
    fn = random_mlp(9)
    x = jax.random.normal(jax.random.PRNGKey(9), (4, 8))
    widths = []
    for eps in (0.02, 0.05, 0.1):
        s = jaxcert.LinfBall(x, eps)
        full, s_only = margins(fn, s, "double-margin"), margins(fn, s, "double-margin-s")
        v = (full.upper - full.lower) / 2 - (s_only.upper - s_only.lower) / 2
        assert np.all(np.asarray(v) >= 0)
        widths.append(float(jnp.sum(v)))
    assert 0 < widths[0] < widths[1] < widths[2]


def test_ibp_plus_v_contains_ibp():
    fn = random_mlp(11)
    x = jax.random.normal(jax.random.PRNGKey(11), (4, 8))
    s = jaxcert.LinfBall(x, 0.05)
    b = jaxcert.bound(fn, s, "ibp")
    m = margins(fn, s, "ibp+v")
    assert np.all(np.asarray(m.lower) <= np.asarray(b.lower))
    assert np.all(np.asarray(m.upper) >= np.asarray(b.upper))
    assert np.any(np.asarray(m.lower) < np.asarray(b.lower))


@pytest.mark.parametrize(
    "make",
    [
        lambda x: jaxcert.L2Ball(x, 0.3),
        lambda x: jaxcert.L1Ball(x, 0.3),
        lambda x: jaxcert.L0Ball(x, 2),
    ],
)
def test_first_layer_margin_is_exact_half_range_for_other_norms(make):
    fn = random_mlp(12)
    x = jax.random.uniform(jax.random.PRNGKey(12), (3, 8))
    s = make(x)
    m = margins(fn, s, "double-margin", return_intermediate=True)
    lo, hi = m.intermediate["relu_0"]
    ref = jaxcert.bound(fn, s, "crown", return_intermediate=True).intermediate["relu_0"]
    np.testing.assert_allclose((hi - lo) / 2, (ref.upper - ref.lower) / 2, rtol=1e-5, atol=1e-6)
    # Centred at the nominal pre-activation, not the interval's midpoint.
    z = x @ jax.random.normal(jax.random.split(jax.random.PRNGKey(12), 6)[0], (8, 30))
    assert z.shape == lo.shape


def test_margins_compose_with_jit_and_grad():
    fn = random_mlp(13)
    x = jax.random.normal(jax.random.PRNGKey(13), (4, 8))

    def width(scale):
        m = margins(lambda z: scale * fn(z), jaxcert.LinfBall(x, 0.05), "double-margin")
        return jnp.sum(m.upper - m.lower)

    eager = width(2.0)
    np.testing.assert_allclose(jax.jit(width)(2.0), eager, rtol=1e-6)
    g = jax.grad(width)(2.0)
    np.testing.assert_allclose(g, eager / 2.0, rtol=1e-5)  # width is linear in scale


def test_margins_on_a_cnn_with_max_pool_and_sigmoid():
    k = jax.random.split(jax.random.PRNGKey(14), 3)
    w = jax.random.normal(k[0], (3, 3, 1, 4)) * 0.3
    dense = jax.random.normal(k[1], (36, 3)) * 0.3

    def cnn(x):
        h = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.sigmoid(h)
        return h.reshape(h.shape[0], -1) @ dense

    x = jax.random.uniform(k[2], (2, 6, 6, 1))
    s = jaxcert.LinfBall(x, 0.02)
    ibp = jaxcert.bound(cnn, s, "ibp")
    for method in MARGIN_METHODS:
        m = margins(cnn, s, method)
        np.testing.assert_allclose(m.nominal, cnn(x), rtol=1e-5, atol=1e-6)
        assert np.all(np.isfinite(np.asarray(m.lower))) and np.all(m.upper >= m.lower)
        # Same order of magnitude as IBP's widths: a sanity check on every rule.
        ratio = jnp.sum(m.upper - m.lower) / jnp.sum(ibp.upper - ibp.lower)
        assert 0.3 < float(ratio) < 3.0, (method, float(ratio))


def test_bad_arguments():
    s = jaxcert.LinfBall(X, 0.1)
    with pytest.raises(ValueError, match="unknown margin method"):
        margins(tiny, s, "ibp")
    with pytest.raises(ValueError, match="gamma"):
        margins(tiny, s, "double-margin", gamma=0.0)
    with pytest.raises(jaxcert.UnsupportedOperation, match="periodic"):
        margins(lambda x: jnp.sin(x), s)  # sin is bounded, but not monotone
    with pytest.raises(jaxcert.UnsupportedOperation, match="tan"):
        margins(lambda x: jnp.tan(x), s)


def test_margin_methods_are_option_objects():
    from jaxcert.domains.margins import DoubleMargin, SingleProp

    assert MARGIN_METHODS["singleprop-fastlin"] == SingleProp("fastlin")
    assert MARGIN_METHODS["ibp+v"] == DoubleMargin(ibp_radii=True)
    s = jaxcert.LinfBall(X, 0.1)
    by_name = margins(tiny, s, "double-margin", gamma=0.05)
    by_object = margins(tiny, s, DoubleMargin(gamma=0.05))
    np.testing.assert_allclose(by_name.upper, by_object.upper)
    # An option the method does not have is refused, not dropped.
    with pytest.raises(TypeError, match="SingleProp has no option 'gamma'"):
        margins(tiny, s, "singleprop-zero", gamma=0.1)
    with pytest.raises(ValueError, match="relaxation|lower slope"):
        margins(tiny, s, SingleProp("bogus"))


def test_margins_refuse_abs_and_even_powers_by_name():
    from jaxcert.domains.margins import margins

    s = jaxcert.LinfBall(jnp.zeros((1, 3)), 0.1)
    with pytest.raises(jaxcert.UnsupportedOperation, match="non-decreasing"):
        margins(lambda x: jnp.abs(x) @ jnp.ones((3, 2)), s, "singleprop-zero")
