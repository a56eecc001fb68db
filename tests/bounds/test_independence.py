"""Examples must stay independent: functions that mix them are refused, never bounded.

The engine bounds every example as if it were alone, so a function whose output for
example ``b`` reads another example (reversed, permuted, rolled, summed or gathered
along the batch axis) would get bounds that are false. Every method must refuse such a
function with :class:`jaxcert.UnsupportedOperation`; functions that only look mixed
(transposes, gathers and batched products that keep the batch axis) must be bounded,
soundly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ALL_METHODS, assert_contains, box_points, box_vertices, run_bound

import jaxcert

B = 4  # equal to the feature size, so that moving the batch axis keeps the shapes
W = jnp.asarray(np.random.default_rng(0).normal(size=(B, 3)), jnp.float32)
PERM = jnp.array([2, 0, 3, 1])

MIXING = {
    "reversed": lambda z: z[::-1] @ W,
    "take": lambda z: jnp.take(z, PERM, axis=0) @ W,
    "fancy index": lambda z: z[PERM] @ W,
    "roll": lambda z: jnp.roll(z, 1, axis=0) @ W,
    "sum over batch": lambda z: (z - jnp.mean(z, axis=0, keepdims=True)) @ W,
    "cumsum over batch": lambda z: jnp.cumsum(z, axis=0) @ W,
    "transpose": lambda z: jax.nn.relu(z.T) @ W,
    "padded shift": lambda z: jnp.pad(z, ((1, 0), (0, 0)))[:-1] @ W,
    "window over batch": lambda z: (
        jax.lax.reduce_window(z, 0.0, jax.lax.add, (2, 1), (1, 1), ((0, 1), (0, 0))) @ W
    ),
    # (B, 4) @ (4, 4, 3) batches over the constant's 4 = B: the batch axis moves.
    "broadcast matmul": lambda z: jnp.sum(z @ jnp.ones((B, B, 3)), axis=1),
}


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("name", sorted(MIXING))
def test_functions_that_mix_examples_are_refused(name, method):
    # The reproduction from the issue: example 0 has radius 0 and value 0.
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(B, B)), jnp.float32)
    s = jaxcert.LinfBall(x, 0.1)
    with pytest.raises(jaxcert.UnsupportedOperation, match="independen|batch axis") as info:
        run_bound(MIXING[name], s, method)
    assert "test_independence.py" in info.value.source, info.value.source


def test_the_issues_reversal_is_refused():
    s = jaxcert.LinfBall(jnp.array([[0.0], [10.0]]), jnp.array([[0.0], [1.0]]))
    for method in ("crown", "ibp"):
        with pytest.raises(jaxcert.UnsupportedOperation, match="reverses the batch axis"):
            jaxcert.bound(lambda z: z[::-1] * 1.0, s, method, spec=jnp.ones((2, 1, 1)))


PER_EXAMPLE_W = jnp.asarray(np.random.default_rng(2).normal(size=(B, B, 3)), jnp.float32)
INDEPENDENT = {
    "transpose inside examples": lambda z: (
        jnp.transpose(z.reshape(-1, 2, 2), (0, 2, 1)).reshape(-1, B) @ W
    ),
    "column gather": lambda z: jax.nn.relu(z[:, jnp.array([3, 0, 0, 1])]) @ W,
    "take_along_axis": lambda z: (
        jnp.take_along_axis(z, jnp.broadcast_to(jnp.array([1, 2, 0, 3]), z.shape), axis=1) @ W
    ),
    "per-example weights": lambda z: jnp.einsum("bi,bij->bj", jax.nn.relu(z), PER_EXAMPLE_W),
    "flip features": lambda z: jnp.flip(z, axis=1) @ W,
    "cumsum features": lambda z: jax.nn.relu(jnp.cumsum(z, axis=1)) @ W,
    "dynamic slice": lambda z: jax.lax.dynamic_slice(z, (0, 1), (z.shape[0], 2)) @ W[:2],
}


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "bcp"])
@pytest.mark.parametrize("name", sorted(INDEPENDENT))
def test_functions_that_keep_examples_apart_are_bounded_soundly(name, method):
    fn = INDEPENDENT[name]
    x = jnp.asarray(np.random.default_rng(3).uniform(size=(B, B)), jnp.float32)
    s = jaxcert.LinfBall(x, 0.1)
    if method == "bcp" and name == "per-example weights":
        # BCP's Lipschitz constants come from a one-example trace: per-example constants
        # have no batch of 1, a clear refusal.
        with pytest.raises(ValueError, match="fails on a batch of 1"):
            run_bound(fn, s, method)
        return
    b = run_bound(fn, s, method)
    rng = np.random.default_rng(4)
    lo, hi = np.asarray(x) - 0.1, np.asarray(x) + 0.1
    points = np.concatenate([box_points(rng, lo, hi, 100), box_vertices(rng, lo, hi, 100)])
    values = np.asarray(jax.vmap(fn)(jnp.asarray(points)))
    assert_contains(b.lower, b.upper, values, f"{name}/{method}")
