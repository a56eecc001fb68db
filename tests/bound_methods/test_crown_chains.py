"""Crown's chains of intermediate bounds: textbook, intersected with IBP, screened by IBP
(auto_LiRPA's default), and the default that keeps the tighter final bound of the last two."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_contains, box_points, box_vertices

import jaxcert
from jaxcert.bound_methods.crown import box_lower
from jaxcert.domains.intermediate import screenable_nodes

TOL = 1e-5
CHAINS = {
    "textbook": dict(intersect_ibp=False, screen_ibp=False),
    "intersected": dict(intersect_ibp=True, screen_ibp=False),
    "screened": dict(intersect_ibp=False, screen_ibp=True),
}


def _pooled_conv_net(seed: int, pool: str):
    """conv-ReLU-pool twice, then dense-ReLU-dense: the nets where the chains disagree."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    k1 = jax.random.normal(keys[0], (3, 3, 1, 4)) / 2
    k2 = jax.random.normal(keys[1], (3, 3, 4, 4)) / 4
    w1 = jax.random.normal(keys[2], (16, 12)) / 4
    w2 = jax.random.normal(keys[3], (12, 3)) / 3
    b1, b2 = jax.random.normal(keys[4], (4,)) * 0.2, jax.random.normal(keys[5], (12,)) * 0.2

    def conv(x, k):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)

    def pool_(h):
        if pool == "avg":
            return (
                jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
            )
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def fn(x):
        h = pool_(jax.nn.relu(conv(x, k1) + b1))
        h = pool_(jax.nn.relu(conv(h, k2)))
        return jax.nn.relu(h.reshape(h.shape[0], -1) @ w1 + b2) @ w2

    x = jax.random.uniform(jax.random.PRNGKey(100 + seed), (2, 8, 8, 1))
    return fn, x


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_default_is_at_least_as_tight_as_every_chain_and_sound(pool, seed):
    fn, x = _pooled_conv_net(seed, pool)
    s = jaxcert.LinfBall(x, 0.1)
    default = jaxcert.bound(fn, s, "crown")
    for name, flags in CHAINS.items():
        other = jaxcert.bound(fn, s, "crown", **flags)
        assert np.all(np.asarray(default.lower) >= np.asarray(other.lower) - TOL), name
        assert np.all(np.asarray(default.upper) <= np.asarray(other.upper) + TOL), name
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(x) - 0.1, np.asarray(x) + 0.1
    pts = np.concatenate([box_points(rng, lo, hi, 200), box_vertices(rng, lo, hi, 200)])
    values = jax.vmap(fn)(jnp.asarray(pts, jnp.float32))
    assert_contains(default.lower, default.upper, values, f"{pool} seed {seed}")


def test_the_chains_do_disagree_so_the_intersection_has_teeth():
    # On this max-pool net each of the intersected and the screened chain is looser than
    # the default on some output (by 1.06 and 0.12): neither could replace it.
    fn, x = _pooled_conv_net(0, "max")
    s = jaxcert.LinfBall(x, 0.1)
    default = jaxcert.bound(fn, s, "crown")
    for name in ("intersected", "screened"):
        other = jaxcert.bound(fn, s, "crown", **CHAINS[name])
        gap = np.maximum(default.lower - other.lower, other.upper - default.upper)
        assert float(np.max(gap)) > 0.05, name


def test_screened_chain_keeps_ibp_for_stable_neurons_and_crown_for_the_others():
    fn, x = _pooled_conv_net(0, "avg")
    s = jaxcert.LinfBall(x, 0.1)
    screened = jaxcert.bound(fn, s, "crown", return_intermediate=True, **CHAINS["screened"])
    textbook = jaxcert.bound(fn, s, "crown", return_intermediate=True, **CHAINS["textbook"])
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    # The first ReLU's input is one affine layer of the box: IBP and CROWN are both exact
    # there; at the second, stable-by-IBP neurons carry IBP's bounds (IBP from the
    # refined first layer: the screened chain's own interval before the ReLU).
    first = "relu_0"
    np.testing.assert_allclose(
        screened.intermediate[first].lower, ibp.intermediate[first].lower, atol=TOL
    )
    second = screened.intermediate["relu_1"]
    t = textbook.intermediate["relu_1"]
    stable = (np.asarray(second.lower) >= 0) | (np.asarray(second.upper) <= 0)
    unstable = ~stable
    assert stable.any() and unstable.any()
    # Unstable neurons: CROWN's own bounds, which are never looser than textbook's there
    # only by coincidence: the same passes on the same (exact) first layer give equality.
    np.testing.assert_allclose(
        np.asarray(second.lower)[unstable], np.asarray(t.lower)[unstable], atol=TOL
    )
    np.testing.assert_allclose(
        np.asarray(second.upper)[unstable], np.asarray(t.upper)[unstable], atol=TOL
    )


def test_final_bound_uses_the_output_activations_own_interval():
    # auto_LiRPA's s-shaped test: one sigmoid over [-2, 0.1] and [-0.1, 2]. The tangent
    # and chord lines give a lower bound below sigmoid(-2); the output's interval is exact.
    lo, hi = jnp.array([[-2.0, -0.1]]), jnp.array([[0.1, 2.0]])
    b = jaxcert.bound(jax.nn.sigmoid, jaxcert.Box(lo, hi), "crown")
    np.testing.assert_allclose(b.lower, jax.nn.sigmoid(lo), rtol=1e-6)
    np.testing.assert_allclose(b.upper, jax.nn.sigmoid(hi), rtol=1e-6)
    lines = jaxcert.bound(jax.nn.sigmoid, jaxcert.Box(lo, hi), "crown-ibp")
    assert float(lines.lower[0, 0]) < float(jax.nn.sigmoid(-2.0)) - 0.01  # teeth: lines are looser


def test_crown_opt_is_never_looser_than_the_default_crown():
    fn, x = _pooled_conv_net(1, "avg")
    s = jaxcert.LinfBall(x, 0.1)
    crown = jaxcert.bound(fn, s, "crown")
    opt = jaxcert.bound(fn, s, jaxcert.CrownOpt(steps=3))
    assert np.all(np.asarray(opt.lower) >= np.asarray(crown.lower) - TOL)
    assert np.all(np.asarray(opt.upper) <= np.asarray(crown.upper) + TOL)


def test_screenable_nodes_are_those_read_only_by_relus():
    relu_only = jaxcert.graph.trace(
        lambda x: jax.nn.relu(x @ jnp.ones((2, 2))), (1, 2), jnp.float32
    )
    assert screenable_nodes(relu_only) == {1}
    mixed = jaxcert.graph.trace(
        lambda x: jax.nn.relu(x @ jnp.ones((2, 2))) + jax.nn.sigmoid(x @ jnp.ones((2, 2))),
        (1, 2),
        jnp.float32,
    )
    ops = {i: mixed.nodes[i].op for i in screenable_nodes(mixed)}
    assert list(ops.values()) == ["dot_general"] and len(ops) == 1


def test_box_lower_handles_infinite_bounds_with_zero_coefficients():
    rows = jnp.array([[[2.0, 0.0, -1.0]]])
    box = (jnp.array([[1.0, -jnp.inf, 0.0]]), jnp.array([[3.0, jnp.inf, 4.0]]))
    np.testing.assert_allclose(box_lower(rows, box), [[2.0 - 4.0]])


def test_default_crown_is_differentiable_through_both_chains():
    # On this net (eps 0.1) all chains give the same bounds, so their gradients agree:
    # the default's (two chains, a maximum, the output box) equals textbook CROWN's.
    fn, x = _pooled_conv_net(2, "avg")

    def grad(**flags):
        def objective(center):
            b = jaxcert.bound(fn, jaxcert.LinfBall(center, 0.1), "crown", **flags)
            return jnp.sum(b.lower)

        return np.asarray(jax.jit(jax.grad(objective))(x))

    textbook = grad(**CHAINS["textbook"])
    assert np.abs(textbook).max() > 0.01
    for flags in ({}, CHAINS["screened"]):
        np.testing.assert_allclose(grad(**flags), textbook, rtol=1e-4, atol=1e-5)
