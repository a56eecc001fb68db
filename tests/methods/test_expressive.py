"""Expressive losses (CC-IBP, MTL-IBP, Exp-IBP): the ends and the span between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from method_cases import HP, PARAMS, X, Y, method_loss, train_a_few_steps

from jaxcert.methods.expressive import EXPRESSIVE_LOSSES, expressive_loss

KEY = jax.random.PRNGKey(5)
NAMES = sorted(EXPRESSIVE_LOSSES)


def _margins(seed, shape=(6, 4)):
    """Attack margins and IBP lower bounds below them, as a sound bound would be."""
    adv = jax.random.normal(jax.random.PRNGKey(seed), shape)
    gap = jax.random.uniform(jax.random.PRNGKey(seed + 1), shape, maxval=3.0)
    return adv, adv - gap, jnp.arange(shape[0]) % (shape[1] + 1)


def _ce_of_margins(margins, y):
    """CE of logits with ``z_y - z_j = margins_j``: ``log(1 + sum_j exp(-margins_j))``."""
    del y  # the label's logit is the reference: only the margins matter
    return jnp.log1p(jnp.sum(jnp.exp(-margins), axis=-1))


@pytest.mark.parametrize("name", NAMES)
def test_alpha_zero_is_the_attack_loss_and_one_is_ibp(name):
    adv, ibp, y = _margins(0)
    adv_loss = expressive_loss("mtl-ibp", adv, ibp, y, 0.0)
    ibp_loss = expressive_loss("mtl-ibp", adv, ibp, y, 1.0)
    # The attack margins' loss is the cross-entropy -z_y + logsumexp: check it by hand.
    np.testing.assert_allclose(adv_loss, jnp.mean(_ce_of_margins(adv, y)), rtol=1e-5)
    np.testing.assert_allclose(expressive_loss(name, adv, ibp, y, 0.0), adv_loss, rtol=1e-6)
    np.testing.assert_allclose(expressive_loss(name, adv, ibp, y, 1.0), ibp_loss, rtol=1e-6)
    assert float(ibp_loss) > float(adv_loss)


@pytest.mark.parametrize("name", NAMES)
def test_every_alpha_lies_between_the_attack_and_ibp_and_grows(name):
    adv, ibp, y = _margins(3)
    values = [float(expressive_loss(name, adv, ibp, y, a)) for a in np.linspace(0, 1, 6)]
    assert all(a <= b + 1e-6 for a, b in zip(values, values[1:], strict=False))
    assert values[0] < values[2] < values[-1]


def test_the_three_combinations_differ_as_their_definitions_say():
    adv, ibp, y = _margins(7)
    alpha = 0.3
    la = _ce_of_margins(adv, y)
    li = _ce_of_margins(ibp, y)
    np.testing.assert_allclose(
        expressive_loss("mtl-ibp", adv, ibp, y, alpha), jnp.mean(0.7 * la + 0.3 * li), rtol=1e-5
    )
    np.testing.assert_allclose(
        expressive_loss("exp-ibp", adv, ibp, y, alpha), jnp.mean(la**0.7 * li**0.3), rtol=1e-5
    )
    cc = _ce_of_margins(0.7 * adv + 0.3 * ibp, y)
    np.testing.assert_allclose(
        expressive_loss("cc-ibp", adv, ibp, y, alpha), jnp.mean(cc), rtol=1e-5
    )
    # CE is convex in the margins: the loss of the combined margins is at most the combined loss.
    assert float(jnp.mean(cc)) <= float(jnp.mean(0.7 * la + 0.3 * li)) + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_training_methods_run_and_bound(name):
    loss, m = method_loss(name, alpha=0.5, pgd_steps=1)(PARAMS, X, Y, HP, KEY)
    lo, _ = method_loss(name, alpha=0.0, pgd_steps=1)(PARAMS, X, Y, HP, KEY)
    hi, _ = method_loss(name, alpha=1.0, pgd_steps=1)(PARAMS, X, Y, HP, KEY)
    assert float(lo) <= float(loss) <= float(hi)
    assert float(m["verified_acc"]) <= float(m["pgd_acc"]) <= 1.0
    losses, _ = train_a_few_steps(method_loss(name, pgd_steps=1), HP)
    assert losses[-1] < losses[0]


def test_bad_alpha_and_name():
    with pytest.raises(ValueError, match="alpha"):
        method_loss("mtl-ibp", alpha=1.5)
    adv, ibp, y = _margins(1)
    with pytest.raises(ValueError, match="unknown expressive loss"):
        expressive_loss("sabr", adv, ibp, y, 0.5)
