"""Each ReLU / leaky-ReLU relaxation is a valid pair of lines on [l, u]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcert.relaxations import (
    clip_relaxation,
    constant_relaxation,
    monotone_relaxation,
    relu_relaxation,
)


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


# ------------------------------------------------- smooth activations by curvature

from jaxcert.relaxations import CURVATURE, curved_relaxation  # noqa: E402

# Each function of the curvature table, and the part of the line it is defined on.
FUNCTIONS = {
    "exp": (jnp.exp, None),
    "expm1": (jnp.expm1, None),
    "softplus": (jax.nn.softplus, None),
    "squareplus": (jax.nn.squareplus, None),
    "log": (jnp.log, 1e-3),
    "log1p": (jnp.log1p, -1 + 1e-3),
    "sqrt": (jnp.sqrt, 0.0),
    "log_sigmoid": (jax.nn.log_sigmoid, None),
    "logistic": (jax.lax.logistic, None),
    "sigmoid": (jax.nn.sigmoid, None),
    "tanh": (jnp.tanh, None),
    "erf": (jax.scipy.special.erf, None),
    "atan": (jnp.arctan, None),
    "asinh": (jnp.arcsinh, None),
    "soft_sign": (jax.nn.soft_sign, None),
    "cbrt": (jnp.cbrt, None),
    "sinh": (jnp.sinh, None),
    "odd_pow": (lambda z: z**3, None),
}


def test_every_function_of_the_curvature_table_is_tested():
    assert set(FUNCTIONS) == set(CURVATURE)


@pytest.mark.parametrize("name", sorted(CURVATURE))
def test_the_curvature_table_is_right(name):
    # Second differences on a grid: >= 0 where the table says convex, <= 0 where concave.
    fn, start = FUNCTIONS[name]
    with jax.enable_x64(True):
        z = jnp.linspace(start if start is not None else -6.0, 6.0, 4001)
        f = np.asarray(fn(z))
    second = f[:-2] - 2 * f[1:-1] + f[2:]
    mid = np.asarray(z[1:-1])
    tol = 1e-9 * np.maximum(1, np.abs(f[1:-1]))
    kind = CURVATURE[name]
    convex_part = {"convex": mid == mid, "concave": mid != mid, "s": mid <= 0}.get(kind, mid >= 0)
    assert np.all(second[convex_part] >= -tol[convex_part])
    assert np.all(second[~convex_part] <= tol[~convex_part])


def _curved_intervals(start, n=600, seed=0):
    """Random intervals with the hard cases: around 0, one-sided, very wide, far from
    zero, tiny, and points."""
    rng = np.random.default_rng(seed)
    lo = rng.normal(size=n) * 3
    width = np.abs(rng.normal(size=n)) * np.exp(rng.normal(size=n) * 2)
    lo[:8] = [-1e3, -50.0, 30.0, -0.5, 0.7, 2.0, -3.0, -1e-4]
    width[:8] = [2e3, 10.0, 5.0, 1.0, 1e-7, 0.0, 0.0, 2e-4]
    if start is not None:
        lo = start + np.abs(lo)
    lo = np.minimum(lo, 20.0)  # exp and sinh stay finite at the upper end in float32
    hi = np.minimum(lo + width, 40.0)
    return jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)


@pytest.mark.parametrize("name", sorted(CURVATURE))
def test_curved_lines_bound_the_function_on_every_interval(name):
    fn, start = FUNCTIONS[name]
    lo, hi = _curved_intervals(start)
    r = curved_relaxation(CURVATURE[name], fn, lo, hi)
    # No NaN, points (l = u) included; a line is infinite only where f is (sinh(-1e3)).
    assert not any(bool(jnp.any(jnp.isnan(v))) for v in r)
    finite = jnp.isfinite(fn(lo)) & jnp.isfinite(fn(hi))
    assert all(bool(jnp.all(jnp.isfinite(v) | ~finite)) for v in r)
    t = jnp.linspace(0, 1, 2001)[:, None]
    z = jnp.clip(lo + t * (hi - lo), lo, hi)
    z = jnp.concatenate([z, lo[None], hi[None]])
    f = fn(z)
    below = r.lower_slope * z + r.lower_bias
    above = r.upper_slope * z + r.upper_bias
    assert bool(jnp.all(below <= f)), float(jnp.max(below - f))
    assert bool(jnp.all(f <= above)), float(jnp.max(f - above))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "exp", "log", "sinh", "atan"])
def test_curved_lines_are_linear_information_not_constants(name):
    # On moderate intervals the lines carry the function's slope, and they are much
    # tighter than the constant lines on average.
    fn, start = FUNCTIONS[name]
    lo = jnp.linspace(-2.0, 1.0, 50) + (0 if start is None else 3.0)
    hi = lo + 0.8
    r = curved_relaxation(CURVATURE[name], fn, lo, hi)
    assert bool(jnp.all(r.lower_slope > 0)) and bool(jnp.all(r.upper_slope > 0))
    z = jnp.linspace(0, 1, 101)[:, None] * (hi - lo) + lo
    lines = jnp.mean((r.upper_slope * z + r.upper_bias) - (r.lower_slope * z + r.lower_bias))
    assert float(lines) < 0.3 * float(jnp.mean(fn(hi) - fn(lo)))


@pytest.mark.parametrize(
    "name, fn", [("hard_tanh", jax.nn.hard_tanh), ("clip", lambda z: jnp.clip(z, -1.0, 1.0))]
)
def test_hard_tanh_is_exact_inside_each_linear_piece(name, fn):
    lo = jnp.array([-0.9, 0.1, -0.5, -7.0, 1.5])
    hi = jnp.array([-0.2, 0.8, 0.95, -1.5, 9.0])
    r = monotone_relaxation(name, fn, lo, hi)
    np.testing.assert_allclose(r.lower_slope, [1, 1, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(r.upper_slope, [1, 1, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(r.lower_bias, [0, 0, 0, -1, 1], atol=1e-5)
    np.testing.assert_allclose(r.upper_bias, [0, 0, 0, -1, 1], atol=1e-5)


def _clip_cases(n=3000, seed=0):
    """Random intervals and limits: degenerate, very wide, far from the limits, one or
    both limits infinite, a = b."""
    rng = np.random.default_rng(seed)
    lo = rng.normal(size=n) * rng.choice([0.1, 2.0, 50.0], size=n)
    width = np.abs(rng.normal(size=n)) * rng.choice([0.0, 0.5, 5.0, 1e3], size=n)
    a = rng.normal(size=n) * 2
    b = a + np.abs(rng.normal(size=n)) * rng.choice([0.0, 1.0, 4.0], size=n)
    a[::5], b[::7] = -np.inf, np.inf
    return tuple(jnp.asarray(v, jnp.float32) for v in (lo, lo + width, a, b))


def test_clip_lines_bound_the_function_on_every_interval():
    lo, hi, a, b = _clip_cases()
    r = clip_relaxation(lo, hi, a, b)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in r)  # no NaN or inf, points too
    t = jnp.linspace(0, 1, 1001)[:, None]
    z = jnp.concatenate([jnp.clip(lo + t * (hi - lo), lo, hi), lo[None], hi[None]])
    f = jnp.clip(z, a, b)
    assert bool(jnp.all(r.lower_slope * z + r.lower_bias <= f))
    assert bool(jnp.all(f <= r.upper_slope * z + r.upper_bias))


def test_clip_lines_across_a_corner_are_the_area_optimal_ones():
    # [-3, 0.5] on clip(., -1, 1): above, the chord from (-3, -1) to (0.5, 0.5); below,
    # the constant -1 (the identity would leave more area: its midpoint -1.25 < -1).
    # [-0.5, 3]: the mirror. [-3, 3]: both corners; chord(0) = 1/3 < 1 beats the constant.
    lo, hi = jnp.array([-3.0, -0.5, -3.0]), jnp.array([0.5, 3.0, 3.0])
    r = clip_relaxation(lo, hi, -1.0, 1.0)
    np.testing.assert_allclose(r.upper_slope, [1.5 / 3.5, 0.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(r.lower_slope, [0.0, 1.5 / 3.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(r.upper_bias, [-1 + 3 * 1.5 / 3.5, 1.0, 0.5], atol=1e-5)
    np.testing.assert_allclose(r.lower_bias, [-1.0, 1 - 3 * 1.5 / 3.5, -0.5], atol=1e-5)


def test_clip_lines_are_never_looser_than_relus_on_one_corner():
    # With one limit (a ReLU shifted by a), the lines are the ReLU's adaptive ones.
    lo, hi = _intervals()
    r = clip_relaxation(lo + 0.5, hi + 0.5, 0.5, jnp.inf)
    relu = relu_relaxation(lo, hi, "adaptive")
    unstable = (lo < 0) & (hi > 0)  # elsewhere both are exact
    np.testing.assert_allclose(r.upper_slope[unstable], relu.upper_slope[unstable], atol=1e-5)
    np.testing.assert_allclose(r.lower_slope[unstable], relu.lower_slope[unstable], atol=1e-6)
    assert int(unstable.sum()) > 100


def test_s_shaped_rule_takes_the_tangent_through_the_far_end():
    # tanh on [-0.5, 1]: the chord crosses tanh near u (tanh'(1) < the chord's slope),
    # so the upper line is the tangent through (l, tanh(l)); [-1, 0.5] is the mirror.
    lo, hi = jnp.array([-0.5, -1.0]), jnp.array([1.0, 0.5])
    r = curved_relaxation("s", jnp.tanh, lo, hi)
    upper_at_l = r.upper_slope[0] * lo[0] + r.upper_bias[0]
    assert abs(float(upper_at_l - jnp.tanh(lo[0]))) < 1e-4
    d = jnp.linspace(0, 1, 10001)
    gap = r.upper_slope[0] * d + r.upper_bias[0] - jnp.tanh(d)
    assert 0 <= float(jnp.min(gap)) < 1e-4  # above, and it touches
    lower_at_u = r.lower_slope[1] * hi[1] + r.lower_bias[1]
    assert abs(float(lower_at_u - jnp.tanh(hi[1]))) < 1e-4
    # Mostly on the convex side, the chord is the upper line (tanh'(u) >= its slope);
    # mostly on the concave side, the lower line.
    lo, hi = jnp.array([-3.0, -0.3]), jnp.array([0.3, 3.0])
    r = curved_relaxation("s", jnp.tanh, lo, hi)
    chord = (jnp.tanh(hi) - jnp.tanh(lo)) / (hi - lo)
    np.testing.assert_allclose([r.upper_slope[0], r.lower_slope[1]], chord, rtol=1e-5)
