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


@pytest.mark.parametrize(
    ("name", "form"),
    [
        ("singleprop-zero", "range"),
        ("singleprop-fastlin", "range"),
        ("double-margin", "split"),
        ("double-margin-s", "split"),
        ("ibp+v", "split"),
        ("ibp-reg", "split"),
    ],
)
def test_each_paper_regularises_with_its_own_form(name, form):
    # SingleProp Eq. 4-5 for SingleProp; DoubleMargin's L+(u) + L-(l) - L for its methods
    # and for IBP as their baseline (000, the regulariser after Eq. 3).
    import jaxcert
    from jaxcert.domains.margins import margins
    from jaxcert.losses import range_regularizer, split_regularizer
    from jaxcert.sets import LinfBall

    fn = lambda z: apply_model(PARAMS, z)  # noqa: E731
    s = LinfBall(X, HP["eps"], clip=(0.0, 1.0))
    if name == "ibp-reg":
        b = jaxcert.bound(fn, s, "ibp")
        logits, lower, upper = fn(X), b.lower, b.upper
    else:
        m = margins(fn, s, name)
        logits, lower, upper = m.nominal, m.lower, m.upper
    expected = (split_regularizer if form == "split" else range_regularizer)(
        lower, upper, logits, Y
    )
    _, metrics = method_loss(name)(
        PARAMS, X, Y, dict(HP, lam=jnp.float32(0.5)), jax.random.PRNGKey(0)
    )
    np.testing.assert_allclose(metrics["regularizer"], expected, rtol=1e-5)


def test_the_split_form_is_looser_than_the_worst_logit_form():
    from jaxcert.losses import range_regularizer, split_regularizer

    z = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
    y = jnp.arange(8) % 5
    for w in (0.1, 0.5, 2.0):
        assert float(split_regularizer(z - w, z + w, z, y)) >= float(
            range_regularizer(z - w, z + w, z, y)
        )
