"""Cases where the bound is provably exact: it must be attained, not just sound.

(a) Every ReLU stable over the set: the network is affine there, so the
    linear-relaxation methods are exact and the bound is reached at a vertex of the
    set chosen by the signs of the affine map's coefficients.
(b) A single Dense layer: IBP is exact (attained at a box corner).
(c) ``concretize`` of the input sets equals brute force / the dual-norm formula.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    MLP,
    assert_close,
    attaining_input,
    init_variables,
    make_input_set,
    run_bound,
)

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
