"""Losses from logits and from bounds: what each one promises."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcert
from jaxcert.losses import (
    accuracy,
    cross_entropy,
    mixed_objective,
    range_regularizer,
    robust_cross_entropy,
    verified,
)

KEY = jax.random.PRNGKey(0)
LOGITS = jax.random.normal(KEY, (6, 4))
Y = jnp.array([0, 1, 2, 3, 0, 1])


def test_cross_entropy_is_optax_s_mean():
    want = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(LOGITS, Y))
    np.testing.assert_allclose(cross_entropy(LOGITS, Y), want, rtol=1e-6)


def test_robust_cross_entropy_bounds_the_loss_of_every_logit_in_the_range():
    # Margin lower bounds from exact ranges of the logits: the robust CE is at least
    # the CE of any logits inside the ranges.
    width = 0.5
    lower, upper = LOGITS - width, LOGITS + width
    spec = jaxcert.margin_spec(Y, 4)
    margin_lower = jnp.einsum("bsk,bk->bs", jnp.maximum(spec, 0), lower) + jnp.einsum(
        "bsk,bk->bs", jnp.minimum(spec, 0), upper
    )
    robust = robust_cross_entropy(margin_lower, Y, 4)
    for k in range(20):
        z = lower + jax.random.uniform(jax.random.PRNGKey(k), LOGITS.shape) * (upper - lower)
        assert float(cross_entropy(z, Y)) <= float(robust) + 1e-6
    # Exact margins (a zero-width range) give the natural cross-entropy.
    exact = jnp.einsum("bsk,bk->bs", spec, LOGITS)
    np.testing.assert_allclose(robust_cross_entropy(exact, Y, 4), cross_entropy(LOGITS, Y))


def test_range_regularizer_is_zero_at_zero_width_and_grows_with_it():
    assert float(range_regularizer(LOGITS, LOGITS, LOGITS, Y)) == pytest.approx(0.0, abs=1e-6)
    values = [float(range_regularizer(LOGITS - w, LOGITS + w, LOGITS, Y)) for w in (0.1, 0.5, 1.0)]
    assert 0 < values[0] < values[1] < values[2]


def test_mixed_objective_interpolates_and_reports_its_parts():
    robust = jnp.float32(3.0)
    mask = jnp.array([True, False, True, False, False, False])
    natural = cross_entropy(LOGITS, Y)
    for kappa in (0.0, 0.3, 1.0):
        loss, metrics = mixed_objective(LOGITS, Y, robust, kappa, mask, penalty=0.25)
        np.testing.assert_allclose(loss, kappa * natural + (1 - kappa) * robust + 0.25, rtol=1e-6)
    assert float(metrics["verified_acc"]) == pytest.approx(2 / 6)
    assert float(metrics["clean_acc"]) == pytest.approx(float(accuracy(LOGITS, Y)))
    np.testing.assert_allclose(metrics["robust_loss"], robust)


def test_verified_needs_every_margin_positive():
    margins = jnp.array([[0.1, 0.2], [0.1, 0.0], [-1.0, 2.0]])
    np.testing.assert_array_equal(verified(margins), [True, False, False])
