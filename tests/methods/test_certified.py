"""The mixed certified objective: kappa = 1, beta = 0, loss fusion and the static IBP phase."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from method_cases import HP, PARAMS, X, Y, apply_model, method_loss, train_a_few_steps


def test_ibp_robust_loss_is_at_least_the_natural_loss():
    hp = dict(HP, kappa=jnp.float32(0.0))
    robust, _ = method_loss("ibp")(PARAMS, X, Y, hp, jax.random.PRNGKey(0))
    natural, _ = method_loss("natural")(PARAMS, X, Y, hp, jax.random.PRNGKey(0))
    assert float(robust) >= float(natural) - 1e-6
    at_zero = dict(hp, eps=jnp.float32(0.0))
    zero_eps, _ = method_loss("ibp")(PARAMS, X, Y, at_zero, jax.random.PRNGKey(0))
    np.testing.assert_allclose(zero_eps, natural, rtol=1e-5)  # eps=0: bounds are the logits


def test_kappa_one_is_the_natural_loss_and_beta_zero_is_ibp():
    key = jax.random.PRNGKey(0)
    natural, _ = method_loss("natural")(PARAMS, X, Y, HP, key)
    k1, _ = method_loss("crown-ibp")(PARAMS, X, Y, dict(HP, kappa=jnp.float32(1.0)), key)
    np.testing.assert_allclose(k1, natural, rtol=1e-6)
    b0, _ = method_loss("crown-ibp")(PARAMS, X, Y, dict(HP, beta=jnp.float32(0.0)), key)
    ibp, _ = method_loss("ibp")(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(b0, ibp, rtol=1e-6)


def test_static_use_linear_false_skips_the_linear_bound():
    key = jax.random.PRNGKey(0)
    loss_fn = method_loss("crown-ibp")
    skipped, _ = loss_fn(PARAMS, X, Y, dict(HP, use_linear=False), key)
    ibp, _ = method_loss("ibp")(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(skipped, ibp, rtol=1e-6)

    def program_size(use_linear):
        hp = dict(HP, use_linear=use_linear)
        return len(str(jax.make_jaxpr(lambda p: loss_fn(p, X, Y, hp, key))(PARAMS)))

    assert program_size(False) < 0.75 * program_size(True)


def test_loss_fusion_trains_on_the_fused_bound_and_is_ibp_at_beta_zero():
    from jaxcert.loss_fusion import fused_cross_entropy_bound
    from jaxcert.sets import LinfBall

    key = jax.random.PRNGKey(0)
    fused_loss = method_loss("crown-ibp", loss_fusion=True)
    losses, metrics = train_a_few_steps(fused_loss, HP)
    assert losses[-1] < losses[0]
    assert 0 <= float(metrics["verified_acc"]) <= 1
    _, metrics = fused_loss(PARAMS, X, Y, HP, key)
    s = LinfBall(X, HP["eps"], clip=(0.0, 1.0))
    want = fused_cross_entropy_bound(lambda z: apply_model(PARAMS, z), s, Y, 3, "crown-ibp", 0.5)
    np.testing.assert_allclose(metrics["robust_loss"], jnp.mean(want.upper), rtol=1e-5)
    b0, _ = fused_loss(PARAMS, X, Y, dict(HP, beta=jnp.float32(0.0)), key)
    ibp, _ = method_loss("ibp")(PARAMS, X, Y, HP, key)
    np.testing.assert_allclose(b0, ibp, rtol=1e-5)
    with pytest.raises(ValueError, match="loss_fusion"):
        method_loss("crown-ibp-opt", loss_fusion=True)
