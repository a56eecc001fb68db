"""Margin specifications and worst-case logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert
from jaxcert import margin_spec, worst_case_logits


def test_margin_spec_rows_are_e_y_minus_e_j_in_increasing_j():
    y = jnp.array([0, 3, 2])
    C = np.asarray(margin_spec(y, 4))
    assert C.shape == (3, 3, 4)
    for b, label in enumerate(np.asarray(y)):
        others = [j for j in range(4) if j != label]
        for row, j in enumerate(others):
            want = np.zeros(4)
            want[label] += 1
            want[j] -= 1
            np.testing.assert_array_equal(C[b, row], want)


@pytest.mark.parametrize(
    "y, k, match",
    [
        (jnp.array([0, 4]), 4, "labels must lie in"),
        (jnp.array([-1]), 4, "labels must lie in"),
        (jnp.array([0.5]), 4, "integer array"),
        (jnp.array([[0]]), 4, "integer array"),
        (jnp.array([0]), 1, "num_classes must be >= 2"),
    ],
)
def test_bad_labels_raise(y, k, match):
    with pytest.raises(ValueError, match=match):
        margin_spec(y, k)


def test_out_of_range_labels_under_jit_give_nan_rows():
    C = jax.jit(lambda y: margin_spec(y, 3))(jnp.array([1, 5]))
    assert np.isfinite(C[0]).all() and np.isnan(C[1]).all()


def test_worst_case_logits_place_minus_margins_off_the_label():
    y = jnp.array([2, 0])
    m = jnp.array([[1.0, 2.0], [3.0, -4.0]])
    z = worst_case_logits(m, y, 3)
    np.testing.assert_array_equal(z, [[-1.0, -2.0, 0.0], [0.0, -3.0, 4.0]])


def test_worst_case_ce_bounds_the_ce_of_any_reachable_logits():
    # Logits in a box: the margin lower bounds from the box give a CE upper bound.
    key = jax.random.PRNGKey(0)
    lo = jax.random.normal(key, (4, 5))
    hi = lo + 0.5
    y = jnp.array([0, 1, 2, 3])
    C = margin_spec(y, 5)
    margin_lower = jnp.einsum("bsk,bk->bs", jnp.maximum(C, 0), lo) + jnp.einsum(
        "bsk,bk->bs", jnp.minimum(C, 0), hi
    )
    worst = worst_case_logits(margin_lower, y, 5)
    ce_worst = -jax.nn.log_softmax(worst)[jnp.arange(4), y]
    for t in np.linspace(0, 1, 7):
        z = lo + t * (hi - lo) * jax.random.uniform(jax.random.PRNGKey(int(t * 10)), lo.shape)
        ce = -jax.nn.log_softmax(z)[jnp.arange(4), y]
        assert np.all(np.asarray(ce) <= np.asarray(ce_worst) + 1e-5)


def test_margin_spec_rows():
    spec = np.asarray(jaxcert.margin_spec(jnp.array([0, 2]), 3))
    expected = np.array(
        [
            [[1, -1, 0], [1, 0, -1]],  # y = 0: e_0 - e_1, e_0 - e_2
            [[-1, 0, 1], [0, -1, 1]],  # y = 2: e_2 - e_0, e_2 - e_1
        ],
        dtype=np.float32,
    )
    assert spec.shape == (2, 2, 3)
    np.testing.assert_array_equal(spec, expected)


@pytest.mark.parametrize("labels", [[0, 4], [-1, 0]])
def test_margin_spec_labels_out_of_range(labels):
    with pytest.raises(ValueError, match="(?i)label"):
        jaxcert.margin_spec(jnp.array(labels), 4)
