"""Tightness indicators d and r of linear relaxation bounds (001_… Eq. 2-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import count_primitive, random_mlp

import jaxcert
from jaxcert.tightness import TIGHTNESS_METHODS, tightness


def _case(seed, batch=5):
    fn = random_mlp(seed)
    x = jax.random.uniform(jax.random.PRNGKey(100 + seed), (batch, 8))
    y = jnp.arange(batch) % 5
    return fn, x, jaxcert.margin_spec(y, 5)


SETS = [
    lambda x: jaxcert.LinfBall(x, 0.1, clip=(0.0, 1.0)),
    lambda x: jaxcert.L2Ball(x, 0.5),
    lambda x: jaxcert.L1Ball(x, 1.0),
    lambda x: jaxcert.L0Ball(x, 2),
]


# Every set with CROWN-IBP; every method with the first set (full CROWN is slow).
@pytest.mark.parametrize(
    "method, make",
    [("crown-ibp", make) for make in SETS] + [(m, SETS[0]) for m in ("crown", "fastlin")],
)
def test_d_is_nonnegative_and_lower_is_the_bound(method, make):
    fn, x, spec = _case(0)
    s = make(x)
    t = tightness(fn, s, spec, method)
    assert np.all(np.asarray(t.d) >= -1e-5)
    assert np.all(np.asarray(t.r) >= 0)
    np.testing.assert_allclose(
        t.lower, jaxcert.bound(fn, s, method, spec=spec).lower, rtol=1e-5, atol=1e-5
    )
    assert float(jnp.sum(t.d)) > 0  # random networks at this eps are not tight


@pytest.mark.parametrize("method", TIGHTNESS_METHODS)
def test_d_and_r_vanish_without_unstable_neurons(method):
    fn = random_mlp(3, bias_scale=5.0)
    x = jax.random.uniform(jax.random.PRNGKey(3), (4, 8))
    s = jaxcert.LinfBall(x, 1e-3)
    b = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    assert all(np.all((iv.lower > 0) | (iv.upper < 0)) for iv in b.intermediate.values())
    t = tightness(fn, s, jaxcert.margin_spec(jnp.arange(4) % 5, 5), method)
    np.testing.assert_allclose(t.d, 0, atol=1e-4)
    np.testing.assert_array_equal(t.r, 0)


def test_r_measures_the_distance_to_fastlin_solutions():
    # relu(x0) + x1 with x0 in [-0.5, 0.4], unstable. Upper row: the chord's optimum is at
    # x0 = u = 0.4, one of Fast-Lin's feasible solutions: r = d = 0 for both methods.
    fn = lambda x: jax.nn.relu(x[:, :1]) + x[:, 1:]  # noqa: E731
    s = jaxcert.Box(jnp.array([[-0.5, 1.0]]), jnp.array([[0.4, 2.0]]))
    lower_row, upper_row = jnp.ones((1, 1, 1)), -jnp.ones((1, 1, 1))
    for method in ("crown", "fastlin"):
        t = tightness(fn, s, upper_row, method)
        np.testing.assert_allclose(t.r, 0, atol=1e-6)
        np.testing.assert_allclose(t.d, 0, atol=1e-6)
    # Lower row, x* has x0 = -0.5. Fast-Lin's line (slope 4/9) is loose there: d > 0, and
    # x0 is 0.5 from the kink, its only feasible solution: r = 0.5.
    t = tightness(fn, s, lower_row, "fastlin")
    np.testing.assert_allclose(t.r, 0.5, rtol=1e-6)
    np.testing.assert_allclose(t.d, 4 / 9 * 0.5, rtol=1e-5)
    # CROWN's line (slope 0) is tight on all of x0 <= 0, so d = 0 wherever x* lies there
    # (x0's coefficient is 0: the minimiser takes the centre, -0.05). The paper's r still
    # measures the distance to Fast-Lin's solution, the kink (a sufficient condition).
    t = tightness(fn, s, lower_row, "crown")
    np.testing.assert_allclose(t.d, 0, atol=1e-6)
    np.testing.assert_allclose(t.r, 0.05, rtol=1e-5)


def test_tightness_is_differentiable_and_jittable():
    fn, x, spec = _case(1)

    def total(scale):
        t = tightness(lambda z: scale * fn(z), jaxcert.LinfBall(x, 0.1), spec)
        return jnp.sum(t.d + t.r)

    np.testing.assert_allclose(jax.jit(total)(1.5), total(1.5), rtol=1e-5)
    assert np.isfinite(float(jax.grad(total)(1.5)))


def test_bad_arguments():
    fn, x, spec = _case(2)
    with pytest.raises(ValueError, match="unknown method"):
        tightness(fn, jaxcert.LinfBall(x, 0.1), spec, "ibp")
    with pytest.raises(ValueError, match="spec must have shape"):
        tightness(fn, jaxcert.LinfBall(x, 0.1), spec[:, :, :3])
    with pytest.raises(NotImplementedError, match="without clip"):
        tightness(fn, jaxcert.L2Ball(x, 0.1, clip=(0.0, 1.0)), spec)


def test_a_traced_network_is_reused():
    fn, x, spec = _case(4)
    s = jaxcert.LinfBall(x, 0.1, clip=(0.0, 1.0))
    alone = tightness(fn, s, spec)
    shared = tightness(fn, s, spec, network=jaxcert.TracedNetwork(fn, s))
    for field in ("lower", "d", "r"):
        np.testing.assert_allclose(getattr(shared, field), getattr(alone, field), rtol=1e-6)

    # IBP margins and the indicators from one network: one IBP pass in the gradient.
    def objective(scale, share):
        f = lambda z: scale * fn(z)  # noqa: E731
        net = jaxcert.TracedNetwork(f, s)
        ibp = net.bound("ibp", spec=spec).lower
        t = tightness(f, s, spec, network=net if share else None)
        return jnp.sum(ibp + t.lower + t.d)

    grads = {
        share: jax.make_jaxpr(jax.grad(objective), static_argnums=1)(1.5, share).jaxpr
        for share in (True, False)
    }
    assert count_primitive(grads[True], "dot_general") < count_primitive(
        grads[False], "dot_general"
    )
    np.testing.assert_allclose(
        jax.grad(objective)(1.5, True), jax.grad(objective)(1.5, False), rtol=1e-5
    )


def test_a_network_of_another_set_is_rejected():
    fn, x, spec = _case(4)
    net = jaxcert.TracedNetwork(fn, jaxcert.LinfBall(x, 0.2))
    with pytest.raises(ValueError, match="same input_set"):
        tightness(fn, jaxcert.LinfBall(x, 0.1), spec, network=net)
