"""Each ReLU / leaky-ReLU relaxation is a valid pair of lines on [l, u]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcert.relaxations import constant_relaxation, relu_relaxation


def _intervals(n=400, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    a = jax.random.normal(k1, (n,)) * 2
    b = jax.random.normal(k2, (n,)) * 2
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    # Include the edge cases: a point interval at 0, l = 0, u = 0, l = -u.
    lo = lo.at[:4].set(jnp.array([0.0, 0.0, -1.0, -2.0]))
    hi = hi.at[:4].set(jnp.array([0.0, 1.0, 0.0, 2.0]))
    return lo, hi


def _leaky(z, k):
    return jnp.maximum(z, k * z)


SLOPES = ["adaptive", "fastlin", "zero", "one", "array"]


@pytest.mark.parametrize("k", [0.0, 0.01, 0.3])
@pytest.mark.parametrize("choice", SLOPES)
def test_lines_bound_the_activation_on_the_interval(choice, k):
    lo, hi = _intervals()
    slope = jax.random.uniform(jax.random.PRNGKey(1), lo.shape) if choice == "array" else choice
    r = relu_relaxation(lo, hi, slope, k)
    t = jnp.linspace(0, 1, 101)[:, None]
    z = lo + t * (hi - lo)
    f = _leaky(z, k)
    assert np.all(np.asarray(r.lower_slope * z + r.lower_bias) <= np.asarray(f) + 1e-6)
    assert np.all(np.asarray(r.upper_slope * z + r.upper_bias) >= np.asarray(f) - 1e-6)
    assert np.all(np.asarray(r.lower_slope) >= k - 1e-7)
    assert np.all(np.asarray(r.lower_slope) <= 1 + 1e-7)


@pytest.mark.parametrize("k", [0.0, 0.1])
def test_stable_neurons_are_exact_and_upper_line_is_the_chord(k):
    lo, hi = _intervals()
    r = relu_relaxation(lo, hi, "adaptive", k)
    # (The point interval [0, 0] is both; either slope is exact there.)
    active, inactive = np.asarray((lo >= 0) & (hi > 0)), np.asarray(hi <= 0)
    for slope in (r.lower_slope, r.upper_slope):
        np.testing.assert_allclose(np.asarray(slope)[active], 1.0)
        np.testing.assert_allclose(np.asarray(slope)[inactive & (lo < 0)], k, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r.upper_bias)[active | inactive], 0.0, atol=1e-7)
    unstable = ~(active | inactive)
    # The upper line passes through (l, f(l)) and (u, f(u)).
    for end in (lo, hi):
        line = r.upper_slope * end + r.upper_bias
        np.testing.assert_allclose(
            np.asarray(line)[unstable], np.asarray(_leaky(end, k))[unstable], atol=1e-5
        )


def test_adaptive_rule_is_strict_and_fastlin_equals_upper_slope():
    lo = jnp.array([-1.0, -1.0, -2.0])
    hi = jnp.array([2.0, 1.0, 1.0])
    r = relu_relaxation(lo, hi, "adaptive")
    np.testing.assert_array_equal(r.lower_slope, [1.0, 0.0, 0.0])  # u > -l strictly
    f = relu_relaxation(lo, hi, "fastlin")
    np.testing.assert_allclose(f.lower_slope, f.upper_slope)
    np.testing.assert_allclose(f.upper_slope, hi / (hi - lo))


def test_array_slopes_map_to_k_plus_a_times_one_minus_k():
    lo, hi = jnp.array([-1.0, -1.0]), jnp.array([1.0, 1.0])
    r = relu_relaxation(lo, hi, jnp.array([0.0, 0.5]), 0.2)
    np.testing.assert_allclose(r.lower_slope, [0.2, 0.6])


def test_unknown_rule_raises():
    with pytest.raises(ValueError, match="unknown lower slope rule"):
        relu_relaxation(jnp.zeros(1), jnp.ones(1), "steep")


def test_constant_relaxation_bounds_a_monotone_function():
    lo, hi = _intervals()
    r = constant_relaxation(jnp.tanh(lo), jnp.tanh(hi))
    z = lo + 0.37 * (hi - lo)
    assert np.all(np.asarray(r.lower_bias) <= np.asarray(jnp.tanh(z)) + 1e-7)
    assert np.all(np.asarray(r.upper_bias) >= np.asarray(jnp.tanh(z)) - 1e-7)
