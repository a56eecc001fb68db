"""CE + lambda R with margin and IBP ranges (and the tightness regularisers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from method_cases import HP, PARAMS, X, Y, apply_model, method_loss, train_a_few_steps

from jaxcert.domains.margins import MARGIN_METHODS

REGULARIZED = [*MARGIN_METHODS, "ibp-reg"]


TIGHT = ["crown-ibp-tight", "crown-tight", "fastlin-tight"]


@pytest.mark.parametrize("name", REGULARIZED + TIGHT)
def test_regulariser_methods_train(name):
    hp = dict(HP, lam=jnp.float32(0.5))
    losses, metrics = train_a_few_steps(method_loss(name, tight_d=0.1, tight_r=0.1), hp)
    assert losses[-1] < losses[0], (name, losses)
    if name in TIGHT:
        assert float(metrics["tight_d"]) >= -1e-5 and float(metrics["tight_r"]) >= 0


@pytest.mark.parametrize("name", REGULARIZED)
def test_regulariser_loss_is_natural_plus_lambda_times_r(name):
    key = jax.random.PRNGKey(0)
    natural, _ = method_loss("natural")(PARAMS, X, Y, HP, key)
    at_zero, m0 = method_loss(name)(PARAMS, X, Y, dict(HP, lam=jnp.float32(0.0)), key)
    np.testing.assert_allclose(at_zero, natural, rtol=1e-5)
    at_half, m = method_loss(name)(PARAMS, X, Y, dict(HP, lam=jnp.float32(0.5)), key)
    np.testing.assert_allclose(at_half, natural + 0.5 * m["regularizer"], rtol=1e-5)
    assert float(m["regularizer"]) > 0  # eps > 0 widens the range


def test_ibp_regulariser_bounds_the_adversarial_loss():
    # DoubleMargin Table 1: L + R with IBP is an upper bound of the loss at any point of
    # the ball; check at a PGD point.
    from jaxcert.attacks import pgd
    from jaxcert.losses import cross_entropy

    hp = dict(HP, lam=jnp.float32(1.0))
    total, _ = method_loss("ibp-reg")(PARAMS, X, Y, hp, jax.random.PRNGKey(0))
    fn = lambda z: apply_model(PARAMS, z)  # noqa: E731
    x_adv = pgd(fn, X, Y, 0.05, steps=10, key=jax.random.PRNGKey(1), clip=(0.0, 1.0))
    assert float(total) >= float(cross_entropy(fn(x_adv), Y)) - 1e-5
