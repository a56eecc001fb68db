"""Penalties any method can add: ReLU stability and L1 of the weights."""

import jax
import jax.numpy as jnp
import numpy as np
from method_cases import HP, PARAMS, X, Y, method_loss


def test_penalties_add_to_any_method():
    from jaxcert.methods.penalties import l1_norm

    key = jax.random.PRNGKey(0)
    base, _ = method_loss("pgd", pgd_steps=2)(PARAMS, X, Y, HP, key)
    both, m = method_loss("pgd", pgd_steps=2, rs_weight=0.01, l1_weight=1e-3)(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(
        both, base + 0.01 * m["relu_stability"] + 1e-3 * l1_norm(PARAMS), rtol=1e-5
    )
    assert float(m["relu_stability"]) < 0 and float(m["l1"]) > 0


def test_relu_stability_rewards_stable_neurons():
    import jaxcert
    from jaxcert.methods.penalties import relu_stability

    def fn(x):
        return jax.nn.relu(x)

    x = jnp.array([[0.0, 2.0]])
    # [-1, 1] gives -tanh(1 - 1) = 0; [1, 3] gives -tanh(4).
    np.testing.assert_allclose(
        relu_stability(fn, jaxcert.LinfBall(x, 1.0)), -np.tanh(4.0), rtol=1e-6
    )
