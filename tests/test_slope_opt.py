"""Lower-slope optimisation: the thesis' signed step and optimised CROWN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert
from jaxcert.domains import interval
from jaxcert.graph import trace
from jaxcert.slope_opt import signed_step_slopes


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(4)(x)


X = jax.random.uniform(jax.random.PRNGKey(0), (5, 6))
Y = jnp.array([0, 1, 2, 3, 0])
MODEL = _MLP()
PARAMS = MODEL.init(jax.random.PRNGKey(1), X)
SET = jaxcert.LinfBall(X, 0.15)
C = jaxcert.margin_spec(Y, 4)
KEY = jax.random.PRNGKey(7)


def _fn(params):
    return lambda x: MODEL.apply(params, x)


def _opt_slopes(params, key, **kw):
    g = trace(_fn(params), X.shape, X.dtype)
    ivs = interval.propagate(g, *SET.bounding_box())
    return g, ivs, signed_step_slopes(g, SET, ivs, C, key, **kw)


def test_one_big_signed_step_lands_on_zero_or_one_where_it_matters():
    g, ivs, slopes = _opt_slopes(PARAMS, KEY, step_size=2.0)
    init = {
        n.name: jax.random.uniform(k, n.shape)
        for n, k in zip(
            [n for n in g.nodes if n.op == "relu"], jax.random.split(KEY, 2), strict=True
        )
    }
    for node in (n for n in g.nodes if n.op == "relu"):
        a = np.asarray(slopes[node.name])
        lo, hi = (np.asarray(t) for t in ivs[node.inputs[0]])
        unstable = (lo < 0) & (hi > 0)
        moved = a != np.asarray(init[node.name])
        assert np.all(np.isin(a[moved], [0.0, 1.0]))
        assert moved[unstable].mean() > 0.5  # most unstable neurons get a gradient
        assert not moved[~unstable].any()  # stable neurons have no gradient


def test_crown_ibp_opt_equals_crown_ibp_with_the_optimised_slopes_and_its_gradient():
    def via_method(params):
        b = jaxcert.bound(_fn(params), SET, "crown-ibp-opt", spec=C, key=KEY, bound_upper=False)
        return b.lower

    def via_slopes(params):
        lower_key, _ = jax.random.split(KEY)
        _, _, slopes = _opt_slopes(params, lower_key, step_size=2.0)
        b = jaxcert.bound(_fn(params), SET, "crown-ibp", spec=C, slopes=slopes, bound_upper=False)
        return b.lower

    np.testing.assert_allclose(via_method(PARAMS), via_slopes(PARAMS), rtol=1e-6, atol=1e-6)
    g1 = jax.grad(lambda p: via_method(p).sum())(PARAMS)
    g2 = jax.grad(lambda p: via_slopes(p).sum())(PARAMS)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_multi_step_keeps_slopes_in_the_unit_interval():
    _, _, slopes = _opt_slopes(PARAMS, KEY, steps=3, step_size=0.1)
    values = np.concatenate([np.ravel(a) for a in slopes.values()])
    assert values.min() >= 0 and values.max() <= 1
    assert np.mean((values > 0) & (values < 1)) > 0.5  # small steps keep interior values


def test_crown_ibp_opt_is_deterministic_given_the_key_and_sound():
    a = jaxcert.bound(_fn(PARAMS), SET, "crown-ibp-opt", spec=C, key=KEY)
    b = jaxcert.bound(_fn(PARAMS), SET, "crown-ibp-opt", spec=C, key=KEY)
    np.testing.assert_array_equal(a.lower, b.lower)
    pts = SET.sample(jax.random.PRNGKey(3), 500)
    margins = jnp.einsum("bsk,nbk->nbs", C, jax.vmap(_fn(PARAMS))(pts))
    assert np.all(np.asarray(margins) >= np.asarray(a.lower) - 1e-5)
    assert np.all(np.asarray(margins) <= np.asarray(a.upper) + 1e-5)


def test_crown_ibp_opt_needs_a_key():
    with pytest.raises(ValueError, match="needs key"):
        jaxcert.bound(_fn(PARAMS), SET, "crown-ibp-opt", spec=C)


def test_crown_opt_is_no_looser_than_crown_and_objectives_are_validated():
    crown = jaxcert.bound(_fn(PARAMS), SET, "crown", spec=C)
    opt = jaxcert.bound(_fn(PARAMS), SET, "crown-opt", spec=C, steps=5)
    assert np.all(np.asarray(opt.lower) >= np.asarray(crown.lower) - 1e-6)
    assert np.all(np.asarray(opt.upper) <= np.asarray(crown.upper) + 1e-6)
    assert np.any(np.asarray(opt.lower) > np.asarray(crown.lower) + 1e-4)  # it does optimise
    custom = jaxcert.bound(
        _fn(PARAMS), SET, "crown-opt", spec=C, steps=2, objective=lambda lower: -jnp.min(lower)
    )
    assert np.all(np.asarray(custom.lower) >= np.asarray(crown.lower) - 1e-6)
    with pytest.raises(ValueError, match="unknown objective"):
        jaxcert.bound(_fn(PARAMS), SET, "crown-opt", spec=C, objective="max")
