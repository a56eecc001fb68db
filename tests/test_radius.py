"""Certified radius by vectorised bisection: certified at r, not at r + tol, ordered."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_case, random_mlp

import jaxcert

TOL = 1e-3


def _certified(fn, x, y, method, eps, norm="linf", num_classes=4, **options):
    s = jaxcert.sets.norm_ball(norm, x, eps)
    spec = jaxcert.margin_spec(y, num_classes)
    return np.asarray(jnp.all(jaxcert.bound(fn, s, method, spec=spec, **options).lower > 0, -1))


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_certified_at_r_and_not_at_r_plus_tol(norm):
    case = make_case("mlp", batch=4)
    y = jnp.argmax(case.fn(case.x), -1)  # correctly classified by construction
    r = np.asarray(
        jaxcert.certified_radius(case.fn, case.x, y, "crown", norm=norm, hi=2.0, tol=TOL)
    )
    assert r.shape == (4,) and np.all(r > 0)
    for b in range(4):
        xb, yb = case.x[b : b + 1], y[b : b + 1]
        assert _certified(case.fn, xb, yb, "crown", float(r[b]), norm)[0], (b, r[b])
        if r[b] < 2.0 - TOL:
            assert not _certified(case.fn, xb, yb, "crown", float(r[b]) + TOL, norm)[0], b


def test_tighter_verifiers_certify_larger_radii():
    case = make_case("cnn", batch=4)
    y = jnp.argmax(case.fn(case.x), -1)
    radii = {
        m: np.asarray(jaxcert.certified_radius(case.fn, case.x, y, m, hi=0.5, tol=TOL))
        for m in ("ibp", "crown-ibp", "crown")
    }
    assert np.all(radii["crown"] >= radii["ibp"] - TOL)
    assert np.all(radii["crown"] >= radii["crown-ibp"] - TOL)


def test_bisection_agrees_with_a_brute_force_scan():
    fn = random_mlp(21, sizes=(3, 12, 3))
    x = jax.random.uniform(jax.random.PRNGKey(21), (5, 3))
    y = jnp.argmax(fn(x), -1)
    grid = np.arange(0.0, 0.6, TOL / 2)
    ok = np.stack([_certified(fn, x, y, "ibp", float(e), num_classes=3) for e in grid])
    # IBP certifies a smaller ball whenever a larger one: the largest certified grid point.
    scanned = np.array([grid[ok[:, b]].max() if ok[:, b].any() else 0.0 for b in range(5)])
    found = np.asarray(jaxcert.certified_radius(fn, x, y, "ibp", hi=0.6, tol=TOL / 4))
    np.testing.assert_allclose(found, scanned, atol=TOL / 2 + 1e-6)


def test_misclassified_examples_get_zero_and_methods_take_their_options():
    case = make_case("mlp", batch=4)
    wrong = (jnp.argmax(case.fn(case.x), -1) + 1) % 4
    r = jaxcert.certified_radius(case.fn, case.x, wrong, "crown-ibp-opt", key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(r, 0.0)
    with pytest.raises(TypeError, match="no option 'key'"):
        jaxcert.certified_radius(case.fn, case.x, wrong, "ibp", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="lo < hi"):
        jaxcert.certified_radius(case.fn, case.x, wrong, "ibp", lo=1.0, hi=0.5)


def test_one_program_for_the_whole_search():
    # The search is jittable end to end: one XLA program, no Python loop over examples.
    case = make_case("mlp", batch=4)
    y = jnp.argmax(case.fn(case.x), -1)
    jitted = jax.jit(lambda x, y: jaxcert.certified_radius(case.fn, x, y, "ibp", tol=TOL))
    eager = jaxcert.certified_radius(case.fn, case.x, y, "ibp", tol=TOL)
    np.testing.assert_allclose(jitted(case.x, y), eager, atol=1e-6)
    text = (
        jax.jit(lambda x, y: jaxcert.certified_radius(case.fn, x, y, "ibp"))
        .lower(case.x, y)
        .as_text()
    )
    assert text.count("stablehlo.while") == 1
