"""Cases where the bound is provably exact: it must be attained, not just sound.

(a) Every ReLU stable over the set: the network is affine there, so the
    linear-relaxation methods are exact and the bound is reached at a vertex of the
    set chosen by the signs of the affine map's coefficients.
(b) A single Dense layer: IBP is exact (attained at a box corner).
(c) ``concretize`` of the input sets equals brute force / the dual-norm formula.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MLP, assert_close, init_variables, run_bound

import jaxcert

# The same shapes as the shared "mlp" case, so eagerly compiled ops are reused.
BATCH = 2
DIM = 6
NUM_OUT = 4
EXACT_TOL = 1e-5


# ----------------------------------------------------------- (a) stable ReLUs


def stable_mlp(seed):
    """An MLP whose hidden units are all stably active or stably dead near [0, 1]^DIM.

    Small weights and biases of +/-2 make every pre-activation keep its sign on (a
    neighbourhood of) the unit box; about a third of the units are dead, the rest
    active, so the network is one affine map there.
    """
    module = MLP(features=(16, 12), num_out=NUM_OUT)
    params = dict(init_variables(module, (DIM,), seed)["params"])
    rng = np.random.default_rng(seed)
    for name in ("Dense_0", "Dense_1"):
        width = params[name]["bias"].shape[0]
        sign = np.where(rng.uniform(size=width) < 0.3, -1.0, 1.0).astype(np.float32)
        params[name] = {"kernel": 0.1 * params[name]["kernel"], "bias": jnp.asarray(2.0 * sign)}
    variables = {"params": params}
    return lambda x: module.apply(variables, x)


def minimiser_linf(coef, lo, hi):
    """The box vertex minimising ``coef . x`` over ``[lo, hi]``."""
    return np.where(coef > 0, lo, hi)


def minimiser_l2(coef, center, eps):
    """``center - eps * coef / ||coef||_2`` per example."""
    norm = np.linalg.norm(coef.reshape(coef.shape[0], -1), axis=-1)
    return center - eps * coef / norm.reshape((-1,) + (1,) * (coef.ndim - 1))


def minimiser_l1(coef, center, eps):
    """``center - eps * sign(coef_i) e_i`` at the largest ``|coef_i|``, per example."""
    flat = coef.reshape(coef.shape[0], -1)
    i = np.argmax(np.abs(flat), axis=-1)
    step = np.eye(flat.shape[-1])[i] * np.sign(flat[np.arange(flat.shape[0]), i])[:, None]
    return center - eps * step.reshape(coef.shape)


def make_input_set(kind, x):
    if kind == "linf-clip":
        return jaxcert.LinfBall(jnp.asarray(x), 0.2, clip=(0.0, 1.0))
    if kind == "l2":
        return jaxcert.L2Ball(jnp.asarray(x), 0.3)
    return jaxcert.L1Ball(jnp.asarray(x), 0.3)


def attaining_input(kind, x, coef):
    """The point of the set minimising ``coef . x`` (``coef``: ``(batch, *x_shape)``)."""
    x, coef = np.asarray(x, np.float64), np.asarray(coef, np.float64)
    if kind == "linf-clip":
        point = minimiser_linf(coef, np.clip(x - 0.2, 0.0, 1.0), np.clip(x + 0.2, 0.0, 1.0))
    elif kind == "l2":
        point = minimiser_l2(coef, x, 0.3)
    else:
        point = minimiser_l1(coef, x, 0.3)
    return point.astype(np.float32)


# The linear-relaxation methods with a fixed slope rule. (The optimising ones are
# sound and no looser than these, so they are exact here too; not re-checked.)
STABLE_CASES = [
    (method, kind)
    for method in ("crown", "crown-ibp", "fastlin")
    for kind in ("linf-clip", "l2", "l1")
]


@pytest.mark.parametrize(("method", "kind"), STABLE_CASES)
def test_stable_network_bound_is_attained(method, kind):
    fn = stable_mlp(seed=0)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, size=(BATCH, DIM)).astype(np.float32)
    spec = jaxcert.margin_spec(jnp.asarray(rng.integers(0, NUM_OUT, size=BATCH)), NUM_OUT)
    s = make_input_set(kind, x)

    b = run_bound(fn, s, method, spec=spec, return_intermediate=True)
    for name, inter in b.intermediate.items():  # precondition: no unstable ReLU
        lo, hi = np.asarray(inter.lower), np.asarray(inter.upper)
        assert np.all((lo > 0) | (hi < 0)), f"{method}: {name} has unstable units"

    def spec_row(x_batch, k):  # the k-th spec'd output, summed over the batch
        return jnp.sum(spec[:, k] * fn(x_batch))

    for k in range(NUM_OUT - 1):
        # The network is affine on the set, and examples are independent, so the
        # gradient of the batch sum is each example's coefficient vector.
        coef = jax.grad(spec_row)(jnp.asarray(x), k)
        x_min = attaining_input(kind, x, coef)
        x_max = attaining_input(kind, x, -coef)
        value_min = jnp.sum(spec[:, k] * fn(x_min), axis=-1)
        value_max = jnp.sum(spec[:, k] * fn(x_max), axis=-1)
        where = f"{method}/{kind}: spec row {k}"
        assert_close(b.lower[:, k], value_min, f"{where}: lower not attained", EXACT_TOL, EXACT_TOL)
        assert_close(b.upper[:, k], value_max, f"{where}: upper not attained", EXACT_TOL, EXACT_TOL)


# ------------------------------------------------------- (b) one Dense layer


@pytest.mark.parametrize("use_spec", [False, True], ids=["nospec", "spec"])
def test_single_dense_ibp_is_exact(use_spec):
    module = nn.Dense(NUM_OUT)
    variables = init_variables(module, (DIM,), seed=2)
    fn = lambda z: module.apply(variables, z)  # noqa: E731
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(BATCH, DIM)).astype(np.float32)
    margins = jaxcert.margin_spec(jnp.asarray(rng.integers(0, NUM_OUT, size=BATCH)), NUM_OUT)
    s = jaxcert.LinfBall(jnp.asarray(x), 0.1, clip=(0.0, 1.0))
    b = run_bound(fn, s, "ibp", spec=margins if use_spec else None)

    # Row r of example i is the affine map x -> rows[i, r] . fn(x), whose weights are
    # rows[i, r] @ kernel.T: its min over the box is at the corner picked by their signs.
    rows = (
        np.asarray(margins)
        if use_spec
        else np.broadcast_to(np.eye(NUM_OUT), (BATCH, NUM_OUT, NUM_OUT))
    )
    weights = np.einsum("bsk,dk->bsd", rows, np.asarray(variables["params"]["kernel"]))
    lo, hi = np.clip(x - 0.1, 0.0, 1.0), np.clip(x + 0.1, 0.0, 1.0)
    for r in range(rows.shape[1]):
        out_min = np.einsum("bk,bk->b", rows[:, r], fn(np.where(weights[:, r] > 0, lo, hi)))
        out_max = np.einsum("bk,bk->b", rows[:, r], fn(np.where(weights[:, r] > 0, hi, lo)))
        assert_close(b.lower[:, r], out_min, f"row {r}: lower", EXACT_TOL, EXACT_TOL)
        assert_close(b.upper[:, r], out_max, f"row {r}: upper", EXACT_TOL, EXACT_TOL)


# ---------------------------------------------------------- (c) concretize


def all_corners(lo, hi):
    """Every corner of each example's box: ``(2**n, batch, *x_shape)``."""
    n = int(np.prod(lo.shape[1:]))
    bits = np.array(list(itertools.product([0, 1], repeat=n)), dtype=bool)
    bits = bits.reshape((2**n, 1, *lo.shape[1:]))
    return np.where(bits, hi[None], lo[None])


def brute_force_linear(A, bias, points):
    """min/max over ``points`` of ``A x + bias``: ``(batch, n_spec)`` each."""
    A2 = A.reshape(A.shape[0], A.shape[1], -1)
    flat = points.reshape(points.shape[0], points.shape[1], -1)
    values = np.einsum("bsi,nbi->nbs", A2, flat) + bias[None]
    return values.min(0), values.max(0)


@pytest.mark.parametrize("x_shape", [(4,), (6,), (2, 3)])
def test_linf_clip_concretize_matches_brute_force(x_shape):
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(BATCH, *x_shape)).astype(np.float32)
    x[0] = np.clip(x[0], 0.0, 0.1)  # near the lower clip edge
    x[1].flat[0] = 0.95  # near the upper one
    A = rng.normal(size=(BATCH, 3, *x_shape)).astype(np.float32)
    bias = rng.normal(size=(BATCH, 3)).astype(np.float32)
    s = jaxcert.LinfBall(jnp.asarray(x), 0.15, clip=(0.0, 1.0))
    lower, upper = s.concretize(jnp.asarray(A), jnp.asarray(bias))
    corners = all_corners(np.clip(x - 0.15, 0.0, 1.0), np.clip(x + 0.15, 0.0, 1.0))
    exp_lower, exp_upper = brute_force_linear(A, bias, corners)
    assert lower.shape == upper.shape == (BATCH, 3)
    assert_close(lower, exp_lower, "concretize lower vs brute force")
    assert_close(upper, exp_upper, "concretize upper vs brute force")
    no_bias = s.concretize(jnp.asarray(A))
    assert_close(no_bias[0], exp_lower - bias, "concretize without bias (lower)")
    assert_close(no_bias[1], exp_upper - bias, "concretize without bias (upper)")


def test_box_concretize_matches_brute_force():
    rng = np.random.default_rng(4)
    lo = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    hi = (lo + rng.uniform(size=(BATCH, DIM))).astype(np.float32)
    A = rng.normal(size=(BATCH, 3, DIM)).astype(np.float32)
    bias = rng.normal(size=(BATCH, 3)).astype(np.float32)
    lower, upper = jaxcert.Box(jnp.asarray(lo), jnp.asarray(hi)).concretize(
        jnp.asarray(A), jnp.asarray(bias)
    )
    exp_lower, exp_upper = brute_force_linear(A, bias, all_corners(lo, hi))
    assert_close(lower, exp_lower, "Box concretize lower")
    assert_close(upper, exp_upper, "Box concretize upper")


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_norm_ball_concretize_is_attained(kind):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    A = rng.normal(size=(BATCH, 3, DIM)).astype(np.float32)
    bias = rng.normal(size=(BATCH, 3)).astype(np.float32)
    lower, upper = make_input_set(kind, x).concretize(jnp.asarray(A), jnp.asarray(bias))
    for row in range(3):
        coef = A[:, row]
        value_min = np.sum(coef * attaining_input(kind, x, coef), -1) + bias[:, row]
        value_max = np.sum(coef * attaining_input(kind, x, -coef), -1) + bias[:, row]
        assert_close(lower[:, row], value_min, f"{kind} concretize lower, row {row}")
        assert_close(upper[:, row], value_max, f"{kind} concretize upper, row {row}")
