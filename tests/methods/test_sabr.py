"""SABR: IBP over a small box around a PGD point, kept inside the region."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from method_cases import HP, PARAMS, X, Y, apply_model, method_loss, train_a_few_steps

import jaxcert
from jaxcert.losses import robust_cross_entropy
from jaxcert.methods.sabr import small_box
from jaxcert.specs import margin_spec

KEY = jax.random.PRNGKey(2)
HP_ROBUST = {**HP, "kappa": jnp.float32(0.0)}


def test_lambda_one_is_ibp_training():
    sabr, m = method_loss("sabr", sabr_lambda=1.0)(PARAMS, X, Y, HP_ROBUST, KEY)
    ibp, _ = method_loss("ibp")(PARAMS, X, Y, HP_ROBUST, KEY)
    np.testing.assert_allclose(sabr, ibp, rtol=1e-6)
    np.testing.assert_allclose(m["tau"], HP["eps"])


@pytest.mark.parametrize("lam", [0.1, 0.4, 0.8])
def test_robust_loss_lies_between_the_attack_point_and_full_ibp(lam):
    sabr, _ = method_loss("sabr", sabr_lambda=lam, pgd_steps=3)(PARAMS, X, Y, HP_ROBUST, KEY)
    ibp, _ = method_loss("ibp")(PARAMS, X, Y, HP_ROBUST, KEY)
    assert float(sabr) <= float(ibp) + 1e-6
    # Below it: the cross-entropy at the small box's centre, a point of the box.
    eps = float(HP["eps"])
    fn = lambda z: apply_model(PARAMS, z)  # noqa: E731
    x_adv = jaxcert.attacks.pgd(
        fn, X, Y, eps * (1 - lam), steps=3, step_size=2.5 * eps * (1 - lam) / 3, key=KEY
    )
    box = small_box(X, x_adv, eps, lam * eps, (0.0, 1.0))
    centre = (box.lower + box.upper) / 2
    spec = margin_spec(Y, 3)
    point = robust_cross_entropy(jnp.einsum("bko,bo->bk", spec, fn(centre)), Y, 3)
    assert float(point) <= float(sabr) + 1e-6


def test_the_small_box_stays_inside_the_region_and_the_range():
    x = jax.random.uniform(jax.random.PRNGKey(0), (8, 5))
    far = x + jax.random.normal(jax.random.PRNGKey(1), x.shape)  # attack points anywhere
    eps, tau = 0.2, 0.05
    box = small_box(x, far, eps, tau, (0.0, 1.0))
    assert np.all(np.asarray(box.lower) >= np.asarray(jnp.clip(x - eps, 0, 1)) - 1e-6)
    assert np.all(np.asarray(box.upper) <= np.asarray(jnp.clip(x + eps, 0, 1)) + 1e-6)
    assert np.all(np.asarray(box.upper - box.lower) <= 2 * tau + 1e-6)
    assert np.all(np.asarray(box.upper) >= np.asarray(box.lower))


def test_sabr_trains_and_refuses_bad_lambda():
    losses, metrics = train_a_few_steps(method_loss("sabr", pgd_steps=2), HP)
    assert losses[-1] < losses[0] and "small_box_verified_acc" in metrics
    with pytest.raises(ValueError, match="sabr_lambda"):
        method_loss("sabr", sabr_lambda=0.0)
