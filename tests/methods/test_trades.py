"""TRADES: natural loss + beta * KL at the KL-maximising point of the Linf ball."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from method_cases import HP, PARAMS, X, Y, apply_model, method_loss, train_a_few_steps

from jaxcert.methods.trades import kl_divergence, trades_perturbation

KEY = jax.random.PRNGKey(3)


def test_beta_zero_is_natural_training():
    trades = jax.value_and_grad(method_loss("trades", trades_beta=0.0), has_aux=True)
    natural = jax.value_and_grad(method_loss("natural"), has_aux=True)
    (loss_t, _), grad_t = trades(PARAMS, X, Y, HP, KEY)
    (loss_n, _), grad_n = natural(PARAMS, X, Y, HP, KEY)
    np.testing.assert_allclose(loss_t, loss_n, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad_t), jax.tree.leaves(grad_n), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_loss_is_natural_plus_beta_times_the_kl_at_the_attack_point():
    loss, m = method_loss("trades", trades_beta=2.0, pgd_steps=3)(PARAMS, X, Y, HP, KEY)
    assert float(m["kl"]) > 0
    np.testing.assert_allclose(loss, m["natural_loss"] + 2.0 * m["kl"], rtol=1e-6)


def test_the_attack_stays_in_the_ball_and_raises_the_kl():
    fn = lambda z: apply_model(PARAMS, z)  # noqa: E731
    eps = 0.1
    x_adv = trades_perturbation(fn, X, eps, steps=10, step_size=0.025, key=KEY)
    assert float(jnp.max(jnp.abs(x_adv - X))) <= eps + 1e-6
    assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
    clean = fn(X)
    attacked = jnp.mean(kl_divergence(clean, fn(x_adv)))
    start = trades_perturbation(fn, X, eps, steps=0, step_size=0.025, key=KEY)
    random_corner = jnp.clip(
        X + eps * jnp.sign(jax.random.normal(jax.random.PRNGKey(9), X.shape)), 0, 1
    )
    assert float(attacked) > 10 * float(jnp.mean(kl_divergence(clean, fn(start))))
    assert float(attacked) > float(jnp.mean(kl_divergence(clean, fn(random_corner))))
    # A constant for the outer gradient: only the network at x_adv is differentiated.
    grad = jax.grad(
        lambda x: jnp.sum(trades_perturbation(fn, x, eps, steps=2, step_size=0.05, key=KEY))
    )(X)
    np.testing.assert_array_equal(grad, 0)


def test_trades_trains():
    losses, metrics = train_a_few_steps(method_loss("trades", pgd_steps=2), HP)
    assert losses[-1] < losses[0]
    assert "adv_acc" in metrics


def test_negative_beta_is_refused():
    with pytest.raises(ValueError, match="trades_beta"):
        method_loss("trades", trades_beta=-1.0)
