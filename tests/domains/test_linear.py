"""Backward (CROWN-family) rules: exact on affine functions, sound on the rest."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_cnn_case
from primitive_cases import AFFINE_CASES, NONLINEAR_CASES

import jaxcert
from jaxcert import LinfBall

X = jax.random.uniform(jax.random.PRNGKey(0), (2, 8))
SET = LinfBall(X, 0.1)
CORNERS = jnp.array(list(itertools.product([-0.1, 0.1], repeat=8)))  # (256, 8)


def _flat(y):
    return y.reshape(y.shape[0], -1)


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
@pytest.mark.parametrize("method", ["crown-ibp", "crown"])
def test_linear_bounds_are_exact_on_affine_functions(name, method):
    fn = AFFINE_CASES[name]
    b = jaxcert.bound(fn, SET, method)
    vals = jax.vmap(lambda d: _flat(fn(X + d)))(CORNERS)  # (256, batch, n_out)
    np.testing.assert_allclose(b.lower, vals.min(0), rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(b.upper, vals.max(0), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", sorted(NONLINEAR_CASES))
@pytest.mark.parametrize("method", ["crown-ibp", "crown", "fastlin", "cap-ibp"])
def test_linear_bounds_contain_samples_on_nonlinear_functions(name, method):
    fn = NONLINEAR_CASES[name]
    b = jaxcert.bound(fn, SET, method)
    pts = jnp.concatenate([SET.sample(jax.random.PRNGKey(1), 300), X + CORNERS[:, None]])
    ys = jax.vmap(lambda x: _flat(fn(x)))(pts)
    assert np.all(np.asarray(ys) >= np.asarray(b.lower) - 1e-5), (name, method)
    assert np.all(np.asarray(ys) <= np.asarray(b.upper) + 1e-5), (name, method)


def test_user_slopes_change_the_final_pass_only_where_unstable():
    fn, s = small_cnn_case()
    y = jnp.array([0, 1, 2])
    C = jaxcert.margin_spec(y, 3)
    base = jaxcert.bound(fn, s, "crown-ibp", spec=C, return_intermediate=True)
    names = list(base.intermediate)
    ones = {n: jnp.ones(base.intermediate[n].lower.shape) for n in names}
    zeros = {n: jnp.zeros(base.intermediate[n].lower.shape) for n in names}
    b1 = jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes=ones)
    b0 = jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes=zeros)
    assert not np.allclose(b1.lower, b0.lower)
    with pytest.raises(ValueError, match="unknown ReLU node"):
        jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes={"relu_9": ones[names[0]]})
    with pytest.raises(ValueError, match="must have shape"):
        jaxcert.bound(fn, s, "crown-ibp", spec=C, slopes={names[0]: jnp.ones((1,))})


_KEYS = jax.random.split(jax.random.PRNGKey(5), 4)
_W1 = jax.random.normal(_KEYS[0], (8, 12)) * 0.6
_W2 = jax.random.normal(_KEYS[1], (12, 12)) * 0.4
_W3 = jax.random.normal(_KEYS[2], (12, 3))
_SMOOTH = {  # one activation of each curvature the relaxations know, then tanh
    "softplus": jax.nn.softplus,  # convex
    "log_sigmoid": jax.nn.log_sigmoid,  # concave
    "sigmoid": jax.nn.sigmoid,  # S-shaped
    "sinh": jnp.sinh,  # inverse-S
    "hard_tanh": jax.nn.hard_tanh,  # piecewise linear, S-shaped
}


@pytest.mark.parametrize("name", sorted(_SMOOTH))
@pytest.mark.parametrize("method", ["crown", "crown-ibp", "fastlin"])
def test_smooth_activations_get_sound_lines_tighter_than_ibp(name, method):
    act = _SMOOTH[name]

    def fn(x):
        return jnp.tanh(act(x @ _W1) @ _W2) @ _W3

    s = LinfBall(X, 0.3)
    b = jaxcert.bound(fn, s, method)
    rng = np.random.default_rng(0)
    steps = np.concatenate([rng.uniform(-0.3, 0.3, (2000, 8)), 0.3 * np.asarray(CORNERS) / 0.1])
    vals = jax.vmap(fn)(X[None] + jnp.asarray(steps, jnp.float32)[:, None])
    assert np.all(np.asarray(vals.min(0)) >= np.asarray(b.lower) - 1e-5)
    assert np.all(np.asarray(vals.max(0)) <= np.asarray(b.upper) + 1e-5)
    ibp = jaxcert.bound(fn, s, "ibp")
    width, ibp_width = (float(jnp.mean(v.upper - v.lower)) for v in (b, ibp))
    # The lines keep linear information through the activations (with constant lines a
    # linear method's final pass stops at the last activation: IBP's width or worse).
    assert width < ibp_width
    if method == "crown" and name not in ("sinh", "hard_tanh"):
        assert width < 0.8 * ibp_width
