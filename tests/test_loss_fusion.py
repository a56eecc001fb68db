"""Loss fusion: a sound upper bound of the cross-entropy from one backward row."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import CLIP, EPS, box_points, box_vertices, clipped_box, make_case

import jaxcert
from jaxcert.loss_fusion import LINEAR_METHODS
from jaxcert.loss_fusion import fused_cross_entropy_bound as _fused_eager
from jaxcert.losses import robust_cross_entropy

# Jitted once per (fn, classes, method): eager dispatch would dominate these tests.
fused_cross_entropy_bound = jax.jit(_fused_eager, static_argnums=(0, 3, 4))


def _per_example_ce(logits, y):
    return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _ce_at(fn, points, y):
    """Cross-entropy at each of ``points`` ``(num, batch, ...)``: ``(num, batch)``."""
    num, batch = points.shape[:2]
    logits = fn(jnp.asarray(points.reshape((num * batch, *points.shape[2:]))))
    return _per_example_ce(logits, jnp.tile(y, num)).reshape(num, batch)


def _ce_attack(fn, lo, hi, y, seed, steps=30):
    """Points of the box pushed up the cross-entropy (signed gradient ascent)."""
    x = jnp.asarray(box_vertices(np.random.default_rng(seed), lo, hi, 1)[0])
    lo, hi = jnp.asarray(lo), jnp.asarray(hi)
    loss = lambda z: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(fn(z), y))  # noqa: E731

    def step(i, x):
        size = (hi - lo) * 0.25 * (1 - i / steps)
        return jnp.clip(x + size * jnp.sign(jax.grad(loss)(x)), lo, hi)

    return np.asarray(jax.jit(lambda x: jax.lax.fori_loop(0, steps, step, x))(x))


_ibp = jax.jit(
    lambda fn, s, y, k: jaxcert.bound(fn, s, "ibp", spec=jaxcert.margin_spec(y, k)).lower,
    static_argnums=(0, 3),
)


@pytest.mark.parametrize(
    "model, method",
    [("mlp", m) for m in LINEAR_METHODS] + [("cnn", "crown-ibp"), ("cnn", "cap-ibp")],
)
def test_upper_bounds_the_cross_entropy_everywhere_in_the_set(model, method):
    case = make_case(model, batch=3)
    s = jaxcert.LinfBall(case.x, EPS * 4, clip=CLIP)
    b = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out, method)
    lo, hi = clipped_box(case.x, EPS * 4)
    rng = np.random.default_rng(0)
    points = np.concatenate(
        [
            box_points(rng, lo, hi, 64),
            box_vertices(rng, lo, hi, 64),
            _ce_attack(case.fn, lo, hi, case.y, 1)[None],
        ]
    )
    ce = _ce_at(case.fn, points, case.y)
    assert np.all(ce <= np.asarray(b.upper)[None] + 1e-5), (ce.max(0), b.upper)
    # The attack gets close: the bound is not vacuous on these small networks.
    assert np.all(np.asarray(b.upper) < ce.max(0) + 5.0)


def test_l2_set():
    case = make_case("mlp", batch=3)
    s = jaxcert.L2Ball(case.x, 0.3)
    b = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out)
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(200, *case.x.shape))
    unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    points = (np.asarray(case.x)[None] + 0.3 * unit).astype(np.float32)
    ce = _ce_at(case.fn, points, case.y)
    assert np.all(ce <= np.asarray(b.upper)[None] + 1e-5)


def test_hand_computed_three_classes_is_exact_where_margins_are_not():
    # z = (x, 0, -x) on x in [-1, 1], label 1: d = (x, -x). The chords of exp on
    # [-1, 1] are sinh(1) d + cosh(1); their x terms cancel, so the fused bound is
    # exactly max S = 1 + 2 cosh(1). Margin-wise worst logits take each d at 1
    # separately: 1 + 2e.
    fn = lambda x: x @ jnp.array([[1.0, 0.0, -1.0]])  # noqa: E731
    s = jaxcert.LinfBall(jnp.zeros((1, 1)), 1.0)
    y = jnp.array([1])
    b = fused_cross_entropy_bound(fn, s, y, 3)
    np.testing.assert_allclose(b.upper, [np.log(1 + 2 * np.cosh(1.0))], rtol=1e-6)
    m = jaxcert.bound(fn, s, "crown-ibp", spec=jaxcert.margin_spec(y, 3)).lower
    np.testing.assert_allclose(robust_cross_entropy(m, y, 3), np.log(1 + 2 * np.e), rtol=1e-6)
    assert not bool(b.verified[0])


def test_zero_radius_gives_the_natural_cross_entropy():
    case = make_case("cnn", batch=3)
    s = jaxcert.LinfBall(case.x, 0.0)
    b = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out)
    want = _per_example_ce(case.fn(case.x), case.y)
    np.testing.assert_allclose(b.upper, want, rtol=1e-4, atol=1e-5)


def test_beta_zero_is_ibps_robust_cross_entropy():
    case = make_case("mlp", batch=4)
    s = jaxcert.LinfBall(case.x, EPS * 4, clip=CLIP)
    b = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out, beta=0.0)
    m = _ibp(case.fn, s, case.y, case.num_out)
    np.testing.assert_allclose(
        jnp.mean(b.upper), robust_cross_entropy(m, case.y, case.num_out), rtol=1e-5
    )
    # Mixing is monotone between the two ends.
    full = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out, beta=1.0).upper
    half = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out, beta=0.5).upper
    assert np.all(half <= np.maximum(b.upper, full) + 1e-6)
    assert np.all(half >= np.minimum(b.upper, full) - 1e-6)


def test_verified_is_sound_and_contains_ibps_certificates():
    case = make_case("mlp", batch=8)
    rng = np.random.default_rng(0)
    for eps in (0.002, 0.02, 0.2):
        s = jaxcert.LinfBall(case.x, eps, clip=CLIP)
        b = fused_cross_entropy_bound(case.fn, s, case.y, case.num_out)
        m = _ibp(case.fn, s, case.y, case.num_out)
        ibp_ok = np.all(np.asarray(m) > 0, axis=-1)
        ok = np.asarray(b.verified)
        assert np.all(ok >= ibp_ok)
        lo, hi = clipped_box(case.x, eps)
        points = np.concatenate([box_points(rng, lo, hi, 32), box_vertices(rng, lo, hi, 32)])
        logits = case.fn(jnp.asarray(points.reshape((-1, *points.shape[2:]))))
        predicted = np.argmax(np.asarray(logits), axis=-1).reshape(points.shape[:2])
        assert np.all(predicted[:, ok] == np.asarray(case.y)[ok])
    # The loss-based certificate S < 2 holds on a clear-cut linear case.
    fn = lambda x: x @ jnp.array([[1.0, -1.0]])  # noqa: E731
    b = fused_cross_entropy_bound(fn, jaxcert.LinfBall(jnp.ones((1, 1)), 0.5), jnp.array([0]), 2)
    assert bool(b.verified[0])


def test_gradient_matches_finite_differences():
    fn_of = lambda w: lambda x: jax.nn.relu(x @ w[0]) @ w[1]  # noqa: E731
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    w = (jax.random.normal(k1, (4, 6)), jax.random.normal(k2, (6, 3)))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 4))
    y = jnp.array([0, 2])

    def loss(scale):
        s = jaxcert.LinfBall(x, 0.1)
        return jnp.mean(_fused_eager(fn_of((w[0], w[1] * scale)), s, y, 3).upper)

    grad = jax.jit(jax.grad(loss))(1.0)
    h = 1e-3
    loss = jax.jit(loss)
    numeric = (loss(1.0 + h) - loss(1.0 - h)) / (2 * h)
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, numeric, rtol=2e-2)


def test_no_overflow_for_huge_logit_ranges():
    fn = lambda x: 1e4 * x @ jnp.array([[1.0, -1.0, 0.5]])  # noqa: E731
    s = jaxcert.LinfBall(jnp.zeros((1, 1)), 1.0)
    b = fused_cross_entropy_bound(fn, s, jnp.array([0]), 3)
    assert np.all(np.isfinite(np.asarray(b.upper)))
    assert float(b.upper[0]) >= 2e4 - 1  # the worst case: x = -1, z_1 - z_0 = 2e4


def test_rejects_a_non_linear_method():
    with pytest.raises(ValueError, match="linear method"):
        _fused_eager(
            lambda x: x, jaxcert.LinfBall(jnp.zeros((1, 2)), 0.1), jnp.array([0]), 2, "ibp"
        )
