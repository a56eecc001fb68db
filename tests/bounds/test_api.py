"""``jaxcert.bound`` and ``TracedNetwork``: options, shared passes, and bad input.

Soundness by sampling lives in ``test_soundness.py``; exact cases, brute-force
enumeration and transformations beside it.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    ALL_METHODS,
    CLIP,
    EPS,
    assert_close,
    count_primitive,
    make_case,
    run_bound,
    spec_for,
)

import jaxcert


def test_every_contract_method_is_listed():
    missing = set(ALL_METHODS) - set(jaxcert.METHODS)
    assert not missing, f"jaxcert.METHODS lacks {sorted(missing)}"


# ------------------------------------------------------------------ margin_spec


# ------------------------------------------------------------ soundness: Linf


# ------------------------------------------------------------ soundness: L2, L1


# ------------------------------------------------------------ intermediate bounds


@pytest.mark.parametrize("method", ["crown-ibp", "cap-ibp", "crown"])
def test_caller_supplied_slopes_are_used(method):
    case = make_case("mlp")
    s = jaxcert.LinfBall(case.x, 2 * EPS, clip=CLIP)
    spec = spec_for(case, True)
    names = run_bound(case.fn, s, "crown", spec=spec, return_intermediate=True).intermediate
    zeros = {name: jnp.zeros(names[name].lower.shape) for name in names}
    ones = {name: jnp.ones(names[name].lower.shape) for name in names}
    with_zeros = run_bound(case.fn, s, method, spec=spec, slopes=zeros)
    with_ones = run_bound(case.fn, s, method, spec=spec, slopes=ones)
    assert not np.allclose(with_zeros.lower, with_ones.lower), (
        f"{method}: lower bounds ignore the slopes (all-0 and all-1 slopes agree)"
    )


# ------------------------------------------------------------------ options


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "fastlin"])
def test_bound_upper_false_keeps_the_lower_bound(method):
    case = make_case("resnet")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    spec = spec_for(case, True)
    both = run_bound(case.fn, s, method, spec=spec)
    lower_only = run_bound(case.fn, s, method, spec=spec, bound_upper=False)
    assert_close(lower_only.lower, both.lower, f"{method}: lower with bound_upper=False")
    assert np.all(np.isposinf(np.asarray(lower_only.upper))), (
        f"{method}: bound_upper=False should give upper = +inf, got {lower_only.upper}"
    )


@pytest.mark.parametrize("method", ["crown", "crown-ibp"])
def test_chunk_size_does_not_change_bounds(method):
    case = make_case("cnn")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    spec = spec_for(case, True)
    whole = run_bound(case.fn, s, method, spec=spec)
    chunked = run_bound(case.fn, s, method, spec=spec, chunk_size=2)
    assert_close(chunked.lower, whole.lower, f"{method}: chunked lower")
    assert_close(chunked.upper, whole.upper, f"{method}: chunked upper")


@pytest.mark.parametrize("method", ["crown-ibp", "cap-ibp", "crown-ibp-opt", "crown"])
def test_traced_network_gives_the_bounds_of_separate_calls(method):
    case = make_case("cnn")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    spec = spec_for(case, True)
    net = jaxcert.TracedNetwork(case.fn, s)
    kwargs = {"key": jax.random.PRNGKey(0)} if jaxcert.get_method(method).needs_key else {}
    for m in ("ibp", method):  # IBP first: the linear method then reuses its intervals
        shared = net.bound(m, spec=spec, **(kwargs if m == method else {}))
        alone = run_bound(case.fn, s, m, spec=spec)
        assert_close(shared.lower, alone.lower, f"{m}: TracedNetwork lower")
        assert_close(shared.upper, alone.upper, f"{m}: TracedNetwork upper")


def test_traced_network_differentiates_one_ibp_pass():
    # The mixed CROWN-IBP objective's gradient: with one TracedNetwork it holds as many
    # convolutions as CROWN-IBP's alone (the IBP margins add only the elided last
    # layer); with two bound calls, a second IBP pass and its gradient.
    case = make_case("cnn")
    spec = spec_for(case, True)

    def objective(variables, how):
        fn = lambda z: case.module.apply(variables, z)  # noqa: E731
        s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
        if how == "crown-ibp alone":
            return jnp.sum(jaxcert.bound(fn, s, "crown-ibp", spec=spec).lower)
        if how == "shared":
            net = jaxcert.TracedNetwork(fn, s)
            ibp, lin = net.bound("ibp", spec=spec), net.bound("crown-ibp", spec=spec)
        else:
            ibp, lin = (
                jaxcert.bound(fn, s, "ibp", spec=spec),
                jaxcert.bound(fn, s, "crown-ibp", spec=spec),
            )
        return jnp.sum(ibp.lower + lin.lower)

    counts = {
        how: count_primitive(
            jax.make_jaxpr(jax.grad(objective), static_argnums=1)(case.variables, how).jaxpr,
            "conv_general_dilated",
        )
        for how in ("crown-ibp alone", "shared", "separate")
    }
    assert counts["shared"] == counts["crown-ibp alone"] < counts["separate"], counts
    shared = jax.grad(objective)(case.variables, "shared")
    separate = jax.grad(objective)(case.variables, "separate")
    for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(separate), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_traced_network_rejects_a_non_set():
    with pytest.raises(TypeError, match="jaxcert input set"):
        jaxcert.TracedNetwork(jnp.tanh, jnp.zeros((1, 2)))


# ---------------------------------------------------------------- tightness


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 3), (3, 3, 4)])
def test_spec_not_matching_the_output_is_rejected(shape):
    case = make_case("mlp")  # 4 outputs, batch 2
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    with pytest.raises(ValueError, match="spec"):
        jaxcert.bound(case.fn, s, method="crown", spec=jnp.ones(shape))


def test_unknown_method_is_rejected():
    case = make_case("mlp")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    with pytest.raises(ValueError, match="no-such-method"):
        jaxcert.bound(case.fn, s, method="no-such-method")


# In both functions the offending operation is two lines below the ``def``.
def product_of_bounded_values(x):  # pairs every example with every other one
    h = x + 1.0
    return jnp.einsum("bi,ci->bc", h, x)


def tangent_network(x):
    h = 2.0 * x
    return jnp.tan(h)


@pytest.mark.parametrize(
    ("fn", "primitive"), [(product_of_bounded_values, "bilinear"), (tangent_network, "tan")]
)
@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_unsupported_operation_names_primitive_and_line(fn, primitive, method):
    line = fn.__code__.co_firstlineno + 2
    s = jaxcert.LinfBall(jnp.full((2, 3), 0.5), EPS)
    with pytest.raises(jaxcert.UnsupportedOperation, match=primitive) as info:
        jaxcert.bound(fn, s, method=method)
    message = str(info.value)
    assert f"test_api.py:{line}" in message, f"message lacks the source line: {message}"


def test_a_product_across_examples_in_a_lambda_is_unsupported():
    s = jaxcert.LinfBall(jnp.full((2, 3), 0.5), EPS)
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(jaxcert.UnsupportedOperation, match="bilinear") as info:
        jaxcert.bound(lambda x: jnp.einsum("bi,ci->bci", x, x), s, method="ibp")
    assert f"test_api.py:{line}" in str(info.value), str(info.value)
    assert issubclass(jaxcert.UnsupportedOperation, Exception)


def test_squaring_lambda_is_bounded_soundly():
    s = jaxcert.LinfBall(jnp.array([[-0.2, 0.5, 1.0]]), 0.3)
    b = jaxcert.bound(lambda x: x * x, s, method="crown")
    # x * x over [l, u] ranges over [0 or min(l^2, u^2), max(l^2, u^2)].
    lo, hi = jnp.array([-0.5, 0.2, 0.7]), jnp.array([0.1, 0.8, 1.3])
    exact_lo = jnp.where((lo < 0) & (hi > 0), 0.0, jnp.minimum(lo**2, hi**2))
    assert bool(jnp.all(b.lower <= exact_lo + 1e-6))
    assert bool(jnp.all(b.upper >= jnp.maximum(lo**2, hi**2) - 1e-6))
