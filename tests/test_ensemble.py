"""Ensembles: averaged logits, bounded soundly like any function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_case

import jaxcert
from jaxcert.ensemble import ensemble


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_ensemble_bounds_are_sound_and_within_the_members(method):
    a, b = make_case("mlp", seed=0), make_case("mlp", seed=1)
    f = ensemble([a.fn, b.fn], weights=[0.25, 0.75])
    s = jaxcert.LinfBall(a.x, 0.05)
    bounds = jaxcert.bound(f, s, method)
    pts = s.sample(jax.random.PRNGKey(0), 200)
    vals = jax.vmap(f)(pts)
    assert np.all(np.asarray(vals) >= np.asarray(bounds.lower) - 1e-5)
    assert np.all(np.asarray(vals) <= np.asarray(bounds.upper) + 1e-5)
    if method == "ibp":  # IBP of a weighted sum is the weighted sum of the IBP bounds
        ba, bb = jaxcert.bound(a.fn, s, "ibp"), jaxcert.bound(b.fn, s, "ibp")
        np.testing.assert_allclose(bounds.lower, 0.25 * ba.lower + 0.75 * bb.lower, rtol=1e-5)
    np.testing.assert_allclose(f(a.x), 0.25 * a.fn(a.x) + 0.75 * b.fn(a.x), rtol=1e-6)


def test_bad_weights():
    f = lambda x: x  # noqa: E731
    with pytest.raises(ValueError, match="at least one"):
        ensemble([])
    with pytest.raises(ValueError, match="summing to 1"):
        ensemble([f, f], weights=[0.5, 0.6])
    assert jnp.allclose(ensemble([f])(jnp.ones(2)), 1.0)
