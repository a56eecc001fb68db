"""SingleProp's approximation-error metrics against sound verifiers."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import random_mlp

import jaxcert
from jaxcert.diagnostics import approximation_error
from jaxcert.domains.margins import margins


@pytest.mark.parametrize("seed", [0, 1])
def test_singleprop_zero_equals_ibp_half_gap_and_metric2_is_small(seed):
    # SingleProp-Zero's ReLU rule is IBP's half-gap recursion centred at z; with a
    # small eps IBP's midpoints stay near z (SingleProp's metric 2, Sec. 4.1).
    fn = random_mlp(seed)
    x = jax.random.normal(jax.random.PRNGKey(20 + seed), (6, 8))
    s = jaxcert.LinfBall(x, 0.01)
    err = approximation_error(fn, s, reference="ibp", margin_method="singleprop-zero")
    assert float(err["metric2"]) < 0.02
    assert float(err["half_gap_error"]) < 1e-3


def test_all_stable_network_matches_ibp_and_fastlin_exactly():
    fn = random_mlp(5, bias_scale=5.0)  # big biases: every neuron stable at small eps
    x = jax.random.normal(jax.random.PRNGKey(6), (4, 8))
    s = jaxcert.LinfBall(x, 0.001)
    b = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    assert all(np.all((iv.lower > 0) | (iv.upper < 0)) for iv in b.intermediate.values()), (
        "test premise: every neuron stable"
    )
    for method in ("singleprop-zero", "singleprop-fastlin", "double-margin-s"):
        m = margins(fn, s, method)
        np.testing.assert_allclose(m.lower, b.lower, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m.upper, b.upper, rtol=1e-5, atol=1e-5)
    # Fast-Lin is exact here, so its midpoints are the nominal values (metric 1 = 0);
    # its half-gaps are smaller than IBP's (sign cancellation), which SingleProp, like
    # IBP, does not see.
    err = approximation_error(fn, s, reference="fastlin")
    assert float(err["metric1"]) < 1e-5 and float(err["half_gap_error"]) > 0.1
    err = approximation_error(fn, s, reference="ibp", margin_method="singleprop-zero")
    assert float(err["half_gap_error"]) < 1e-4
