"""BCP and LMT (thesis §3.2): Lipschitz constants, the ball ∩ box solver, soundness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from conftest import make_case, norm_ball_points

import jaxcert
from jaxcert.attacks import pgd
from jaxcert.domains import lipschitz
from jaxcert.losses import cross_entropy

L2_MODELS = ("mlp", "cnn", "resnet")  # usernet has tanh/sigmoid: no Lipschitz rule


# ----------------------------------------------------------------- Lipschitz constants


def _dense_matrix(node, graph):
    f = lipschitz._linear_part(node)
    in_shape = lipschitz._in_shape(graph, node)
    n = int(np.prod(in_shape))
    basis = jnp.eye(n).reshape((n, *in_shape))
    return np.asarray(jax.vmap(f)(basis).reshape(n, -1))


@pytest.mark.parametrize("model", L2_MODELS)
def test_certified_constants_bound_the_true_spectral_norms(model):
    case = make_case(model)
    s = jaxcert.L2Ball(case.x, 0.1)
    graph = lipschitz.unit_graph(case.fn, s)
    bounds = lipschitz.certified_lipschitz(graph)
    estimates, _ = lipschitz.power_iteration(graph, None, jax.random.PRNGKey(0), iters=200)
    assert bounds
    for index, bound in bounds.items():
        node = graph.nodes[index]
        true = np.linalg.norm(_dense_matrix(node, graph), 2)
        assert float(bound) >= true * (1 - 1e-6), (node.op, float(bound), true)
        if node.op in lipschitz.WEIGHTED_OPS:
            assert float(bound) <= true * (1 + 1e-4)  # small layers: exact
            np.testing.assert_allclose(estimates[index], true, rtol=1e-3)
            assert float(estimates[index]) <= true * (1 + 1e-5)  # from below


def test_holder_bound_is_exact_for_structural_maps():
    x = jnp.ones((1, 4, 3))
    for fn, want in [
        (lambda z: jnp.sum(z, axis=1), 2.0),  # sums of 4 entries: sqrt(4)
        (lambda z: jnp.broadcast_to(z[:, None], (1, 9, 4, 3)).reshape(1, -1), 3.0),
        (lambda z: z * jnp.array([0.5, -2.0, 1.0]), 2.0),
    ]:
        graph = lipschitz.unit_graph(fn, jaxcert.L2Ball(x, 0.1))
        (value,) = [v for k, v in lipschitz.certified_lipschitz(graph).items() if v != 1.0]
        np.testing.assert_allclose(value, want, rtol=1e-6)


def test_power_iteration_vectors_carry_over():
    case = make_case("mlp")
    graph = lipschitz.unit_graph(case.fn, jaxcert.L2Ball(case.x, 0.1))
    key = jax.random.PRNGKey(1)
    est1, vecs = lipschitz.power_iteration(graph, None, key, iters=1)
    errors = []
    for _ in range(30):
        est, vecs = lipschitz.power_iteration(graph, vecs, key, iters=1)
        errors.append(est)
    certified = lipschitz.certified_lipschitz(graph)
    for index in est:
        if graph.nodes[index].op in lipschitz.WEIGHTED_OPS:
            assert float(est[index]) >= float(est1[index]) - 1e-6  # improves from below
            np.testing.assert_allclose(est[index], certified[index], rtol=1e-3)


# --------------------------------------------------------------------- ball ∩ box solver


def _scipy_minimum(c, z, rho, lo, hi):
    cons = {"type": "ineq", "fun": lambda p: rho**2 - np.sum((p - z) ** 2)}
    res = scipy.optimize.minimize(
        lambda p: c @ p,
        np.clip(z, lo, hi),
        jac=lambda p: c,
        bounds=list(zip(lo, hi, strict=True)),
        constraints=[cons],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return res.fun


@pytest.mark.parametrize("seed", range(6))
def test_solver_matches_a_generic_convex_solver(seed):
    rng = np.random.default_rng(seed)
    n = 12
    c = rng.normal(size=n)
    z = rng.normal(size=n)
    lo = z - rng.uniform(0.05, 1.0, n)
    hi = z + rng.uniform(0.05, 1.0, n)
    rho = rng.uniform(0.5, 2.0)
    got = lipschitz.ball_box_minimum(
        jnp.asarray(c, jnp.float64 if jax.config.x64_enabled else jnp.float32),
        jnp.asarray(z),
        jnp.asarray(rho),
        jnp.asarray(lo),
        jnp.asarray(hi),
    )
    np.testing.assert_allclose(float(got), _scipy_minimum(c, z, rho, lo, hi), rtol=1e-4, atol=1e-4)
    # The training form (a fixed number of rounds) reaches the same optimum in <= n.
    args = [jnp.asarray(a, jnp.float32) for a in (c, z, rho, lo, hi)]
    rounds = lipschitz.ball_box_minimum(*args, iters=n)
    np.testing.assert_allclose(float(rounds), float(got), rtol=1e-5, atol=1e-5)


def _instances(num, n, seed):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(num, n))
    z = rng.normal(size=(num, n))
    lo = z - rng.uniform(0.05, 1.0, (num, n))
    hi = z + rng.uniform(0.05, 1.0, (num, n))
    rho = rng.uniform(0.3, 2.0, num)
    return c, z, rho, lo, hi


def test_a_capped_solver_never_exceeds_the_minimum():
    # Training caps the rounds (1 on CIFAR in the thesis). Its value must stay a lower
    # bound: the clipped (feasible) iterate gave values above the minimum in 282 of 300
    # random instances after one round.
    n = 8
    c, z, rho, lo, hi = (jnp.asarray(a, jnp.float32) for a in _instances(300, n, seed=7))
    exact = np.asarray(lipschitz.ball_box_minimum(c, z, rho, lo, hi))
    for rounds in range(1, n + 1):
        capped = np.asarray(lipschitz.ball_box_minimum(c, z, rho, lo, hi, iters=rounds))
        assert np.all(capped <= exact + 1e-5 * (1 + np.abs(exact))), rounds
    np.testing.assert_allclose(capped, exact, rtol=1e-5, atol=1e-5)  # n rounds: exact
    # And against a general-purpose solver, on a subset.
    c64, z64, rho64, lo64, hi64 = _instances(300, n, seed=7)
    one_round = np.asarray(lipschitz.ball_box_minimum(c, z, rho, lo, hi, iters=1))
    for i in range(0, 300, 15):
        reference = _scipy_minimum(c64[i], z64[i], rho64[i], lo64[i], hi64[i])
        assert one_round[i] <= reference + 1e-4, i


def test_the_capped_value_is_differentiable_and_tightens_with_rounds():
    n = 8
    c, z, rho, lo, hi = (jnp.asarray(a, jnp.float32) for a in _instances(50, n, seed=8))
    values = [
        float(jnp.mean(lipschitz.ball_box_minimum(c, z, rho, lo, hi, iters=k))) for k in (1, 3, n)
    ]
    assert values[0] <= values[1] + 1e-6 <= values[2] + 2e-6
    grad = jax.grad(lambda c: jnp.sum(lipschitz.ball_box_minimum(c, z, rho, lo, hi, iters=1)))(c)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_solver_limits_ball_only_and_box_only():
    c, z = jnp.array([1.0, -2.0, 0.5]), jnp.zeros(3)
    big = jnp.full(3, 100.0)
    np.testing.assert_allclose(  # box far away: the ball's minimum -rho ||c||
        lipschitz.ball_box_minimum(c, z, jnp.array(1.0), -big, big), -jnp.linalg.norm(c), rtol=1e-6
    )
    tiny = jnp.full(3, 0.01)
    np.testing.assert_allclose(  # box inside the ball: its corner
        lipschitz.ball_box_minimum(c, z, jnp.array(1.0), -tiny, tiny), -0.01 * 3.5, rtol=1e-6
    )


# --------------------------------------------------------------------------- soundness


@pytest.mark.parametrize("model", L2_MODELS)
@pytest.mark.parametrize("method", ["bcp", "lmt"])
def test_bcp_and_lmt_are_sound_under_l2_sampling_and_attacks(model, method):
    case = make_case(model, batch=3)
    eps = 0.3
    s = jaxcert.L2Ball(case.x, eps, clip=(0.0, 1.0))
    spec = jaxcert.margin_spec(case.y, case.num_out)
    b = jaxcert.bound(case.fn, s, method, spec=spec)
    rng = np.random.default_rng(0)
    pts = np.clip(norm_ball_points(rng, np.asarray(case.x), eps, 256, "l2"), 0.0, 1.0)
    margins = jnp.einsum("bso,nbo->nbs", spec, jax.vmap(case.fn)(jnp.asarray(pts)))
    adv = pgd(
        case.fn, case.x, case.y, eps, steps=20, norm="l2", loss="margin", key=jax.random.PRNGKey(0)
    )
    margins_adv = jnp.einsum("bso,bo->bs", spec, case.fn(adv))
    assert np.all(np.asarray(margins) >= np.asarray(b.lower)[None] - 1e-5)
    assert np.all(np.asarray(margins) <= np.asarray(b.upper)[None] + 1e-5)
    assert np.all(np.asarray(margins_adv) >= np.asarray(b.lower) - 1e-5)
    # The worst-translated logit upper-bounds the cross-entropy over the outer bound.
    worst = cross_entropy(jaxcert.worst_case_logits(b.lower, case.y, case.num_out), case.y)
    assert float(worst) >= float(cross_entropy(case.fn(adv), case.y)) - 1e-5


@pytest.mark.parametrize("model", L2_MODELS)
def test_bcp_is_tighter_than_lmt_and_ibp(model):
    case = make_case(model, batch=3)
    s = jaxcert.L2Ball(case.x, 0.5)
    spec = jaxcert.margin_spec(case.y, case.num_out)
    bcp = jaxcert.bound(case.fn, s, "bcp", spec=spec, bound_upper=False).lower
    lmt = jaxcert.bound(case.fn, s, "lmt", spec=spec, bound_upper=False).lower
    ibp = jaxcert.bound(case.fn, s, "ibp", spec=spec, bound_upper=False).lower
    assert np.all(np.asarray(bcp) >= np.asarray(lmt) - 1e-5)
    assert np.all(np.asarray(bcp) >= np.asarray(ibp) - 1e-5)
    assert np.any(np.asarray(bcp) > np.asarray(ibp) + 1e-4)


def test_bcp_composes_with_jit_and_grad():
    case = make_case("mlp")
    spec = jaxcert.margin_spec(case.y, case.num_out)
    s = jaxcert.L2Ball(case.x, 0.2)
    # Training passes its own constants (power iteration); fixed ones here.
    unit = lipschitz.unit_graph(lambda z: 1.3 * case.fn(z), s)
    constants = lipschitz.certified_lipschitz(unit)

    def total(scale):
        fn = lambda z: scale * case.fn(z)  # noqa: E731
        return jnp.sum(jaxcert.bound(fn, s, "bcp", spec=spec, lipschitz=constants).lower)

    np.testing.assert_allclose(jax.jit(total)(1.3), total(1.3), rtol=1e-5)
    g = jax.grad(total)(1.3)
    fd = (total(1.3 + 1e-2) - total(1.3 - 1e-2)) / 2e-2
    np.testing.assert_allclose(g, fd, rtol=2e-2)


def test_bcp_refuses_activations_without_a_lipschitz_rule():
    # exp has no global Lipschitz constant (tanh and sigmoid have: 1 and 1/4).
    case = make_case("mlp")
    with pytest.raises(jaxcert.UnsupportedOperation, match="Lipschitz"):
        jaxcert.bound(lambda x: jnp.exp(case.fn(x)), jaxcert.L2Ball(case.x, 0.1), "bcp")


def test_a_capped_solver_handles_a_zero_radius_and_a_zero_objective():
    # eps = 0 at the start of a ramp: the ball is one point, its value c . z, no NaN.
    c, z = jnp.array([[1.0, -2.0]]), jnp.array([[0.3, 0.1]])
    lo, hi = z - 0.5, z + 0.5
    for rho in (0.0, 1.0):
        value = lipschitz.ball_box_minimum(c, z, jnp.array([rho]), lo, hi, iters=1)
        grad = jax.grad(
            lambda c, rho=rho: jnp.sum(
                lipschitz.ball_box_minimum(c, z, jnp.array([rho]), lo, hi, iters=1)
            )
        )(c)
        assert np.all(np.isfinite(np.asarray(value))) and np.all(np.isfinite(np.asarray(grad)))
    zero_radius = lipschitz.ball_box_minimum(c, z, jnp.array([0.0]), lo, hi, iters=1)
    np.testing.assert_allclose(zero_radius, c[:, 0] * z[:, 0] + c[:, 1] * z[:, 1], rtol=1e-6)
    flat = lipschitz.ball_box_minimum(jnp.zeros((1, 2)), z, jnp.array([1.0]), lo, hi, iters=1)
    np.testing.assert_allclose(flat, 0.0, atol=1e-7)
