"""BCP and LMT training with power-iteration constants kept in the training state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from method_cases import HP, PARAMS, X, Y, method_loss


@pytest.mark.parametrize("name", ["bcp", "lmt"])
def test_lipschitz_methods_train_and_update_their_power_iteration_state(name):
    loss_fn = method_loss(name, norm="l2", bcp_solver_iters=3)
    state = loss_fn.init_method_state(PARAMS, X, jax.random.PRNGKey(0))
    assert state and all(np.isfinite(np.asarray(v)).all() for v in state.values())
    hp = dict(HP, eps=jnp.float32(0.3), method_state=state)
    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    opt = optax.adam(1e-2)
    params, opt_state = PARAMS, opt.init(PARAMS)
    losses = []
    for i in range(8):
        (loss, metrics), grads = step(params, X, Y, hp, jax.random.PRNGKey(i))
        new_state = metrics.pop("method_state")
        assert set(new_state) == set(state)
        hp = dict(hp, method_state=new_state)
        losses.append(float(loss))
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
    assert losses[-1] < losses[0], losses
    assert any(
        not np.allclose(state[k], new_state[k]) for k in state
    )  # the vectors follow the weights
