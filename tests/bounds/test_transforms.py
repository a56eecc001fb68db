"""``jaxcert.bound`` composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

Certified training calls ``bound`` inside a jitted, differentiated loss, with the
model parameters closed over inside the differentiated function; the transformed
results must match eager evaluation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ALL_METHODS, CLIP, EPS, assert_close, linf_bound, make_case, run_bound

import jaxcert

GRAD_METHODS = ("ibp", "crown-ibp", "crown-ibp-opt", "crown")
# Every method on the MLP; the residual network (batch-norm, pooling) with the main ones.
JIT_CASES = [("mlp", m) for m in ALL_METHODS] + [
    ("resnet", m) for m in ("ibp", "crown-ibp", "crown")
]


def margin_bounds(case, method, x, eps=EPS, variables=None):
    """Lower and upper margin bounds of ``case``'s model around ``x``."""
    fn = case.fn if variables is None else case.fn_with(variables)
    spec = jaxcert.margin_spec(case.y[: x.shape[0]], case.num_out)
    b = run_bound(fn, jaxcert.LinfBall(x, eps, clip=CLIP), method, spec=spec)
    return b.lower, b.upper


@pytest.mark.parametrize(("model", "method"), JIT_CASES)
def test_jit_matches_eager(model, method):
    case = make_case(model)
    eager = linf_bound(model, method, True)  # the same bounds, computed eagerly
    jitted = jax.jit(lambda x: margin_bounds(case, method, x))(case.x)
    assert_close(jitted[0], eager.lower, f"{model}/{method}: jit lower")
    assert_close(jitted[1], eager.upper, f"{model}/{method}: jit upper")


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_jit_with_traced_eps_matches_eager(method):
    # Training schedules eps, so it arrives as a traced value.
    case = make_case("cnn")
    eager = margin_bounds(case, method, case.x, eps=0.03)
    jitted = jax.jit(lambda x, eps: margin_bounds(case, method, x, eps=eps))(case.x, 0.03)
    assert_close(jitted[0], eager[0], f"{method}: jit(eps) lower")
    assert_close(jitted[1], eager[1], f"{method}: jit(eps) upper")


def test_jit_returns_bounds_pytree():
    case = make_case("mlp")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    eager = jaxcert.bound(case.fn, s, method="crown-ibp")
    jitted = jax.jit(lambda s: jaxcert.bound(case.fn, s, method="crown-ibp"))(s)
    assert isinstance(jitted, jaxcert.Bounds)
    assert_close(jitted.lower, eager.lower, "Bounds through jit: lower")
    assert_close(jitted.upper, eager.upper, "Bounds through jit: upper")


@pytest.mark.parametrize("method", GRAD_METHODS)
def test_vmap_over_stacked_batches_matches_loop(method):
    case = make_case("mlp")
    x = np.asarray(case.x)
    stacked = jnp.asarray(np.stack([x, np.clip(x + 0.1, 0.0, 1.0), x[::-1]]))
    # jit(vmap(...)) compiles once; plain vmap would run (and compile) op by op.
    vmapped = jax.jit(jax.vmap(lambda x: margin_bounds(case, method, x)))(stacked)
    for i in range(stacked.shape[0]):
        lower, upper = margin_bounds(case, method, stacked[i])
        assert_close(vmapped[0][i], lower, f"{method}: vmap lower, slice {i}")
        assert_close(vmapped[1][i], upper, f"{method}: vmap upper, slice {i}")


def loss_of_params(case, method):
    """Sum of lower margin bounds as a function of the model's parameters.

    The model function is built inside, closing over the parameters being
    differentiated, as a certified-training loss does.
    """

    def loss(params):
        variables = {**case.variables, "params": params}
        lower, _ = margin_bounds(case, method, case.x, variables=variables)
        return jnp.sum(lower)

    return loss


@functools.cache
def jit_value_and_grad(model, method):
    case = make_case(model)
    return jax.jit(jax.value_and_grad(loss_of_params(case, method)))(case.variables["params"])


@pytest.mark.parametrize("method", GRAD_METHODS)
@pytest.mark.parametrize("model", ["mlp", "resnet"])
def test_jit_grad_wrt_params_is_finite_and_nonzero(model, method):
    value, grads = jit_value_and_grad(model, method)
    eager_lower = linf_bound(model, method, True).lower
    assert_close(value, jnp.sum(eager_lower), f"{model}/{method}: jit loss != eager bounds")
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves), f"{model}/{method}: non-finite grads"
    assert any(np.any(g != 0) for g in leaves), f"{model}/{method}: all gradients are zero"


def test_eager_grad_matches_jit():
    method = "crown-ibp"  # the certified-training workhorse (eager grads compile slowly)
    case = make_case("mlp")
    value, grads = jax.value_and_grad(loss_of_params(case, method))(case.variables["params"])
    jit_value, jit_grads = jit_value_and_grad("mlp", method)
    assert_close(value, jit_value, f"{method}: eager loss vs jit")
    flat_grads, _ = jax.tree_util.tree_flatten_with_path(grads)
    for (path, g), g_jit in zip(flat_grads, jax.tree.leaves(jit_grads), strict=True):
        assert_close(g, g_jit, f"{method}: eager vs jit grad at {jax.tree_util.keystr(path)}")


def tree_vdot(a, b):
    return sum(np.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_grad_matches_finite_differences(method):
    # Along a random direction in parameter space. The bound is piecewise smooth in
    # the parameters, so a small central difference matches the directional derivative.
    case = make_case("mlp")
    loss = loss_of_params(case, method)
    params = case.variables["params"]
    rng = np.random.default_rng(11)
    direction = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)

    def along(t):
        return loss(jax.tree.map(lambda p, d: p + t * d, params, direction))

    analytic = tree_vdot(jit_value_and_grad("mlp", method)[1], direction)
    h = 1e-3
    numeric = (along(h) - along(-h)) / (2 * h)
    np.testing.assert_allclose(
        numeric, analytic, rtol=0.02, atol=1e-2, err_msg=f"{method}: directional derivative"
    )


def test_grad_wrt_input_is_finite():
    case = make_case("cnn")
    loss = lambda x: jnp.sum(margin_bounds(case, "crown-ibp", x)[0])  # noqa: E731
    grad = jax.jit(jax.grad(loss))(case.x)
    assert grad.shape == case.x.shape
    assert np.all(np.isfinite(grad)), "non-finite input gradient"
