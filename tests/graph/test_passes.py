"""Recognition passes: activations, max/min/clamp as ReLUs, linearity checks, names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert
from jaxcert.graph import trace

X_SHAPE = (2, 3)


def _ops(fn, shape=X_SHAPE):
    return [n.op for n in trace(fn, shape, jnp.float32).nodes]


def test_relu_is_recognised_through_custom_jvp_and_jit():
    W = jnp.ones((3, 4))
    assert _ops(lambda x: jax.nn.relu(x @ W)) == ["input", "dot_general", "relu"]
    assert _ops(jax.jit(lambda x: nn.relu(x @ W))) == ["input", "dot_general", "relu"]
    assert _ops(lambda x: jnp.maximum(x, 0.0)) == ["input", "relu"]


def test_leaky_relu_slope_is_read_from_the_function():
    g = trace(lambda x: jax.nn.leaky_relu(x, 0.25), X_SHAPE, jnp.float32)
    (node,) = [n for n in g.nodes if n.op == "leaky_relu"]
    np.testing.assert_allclose(node.params["slope"], 0.25)
    assert node.name == "leaky_relu_0"


def test_max_min_clamp_become_shifted_relus():
    ops = _ops(lambda x: jnp.clip(x, -1.0, 2.0))
    assert ops.count("relu") == 2 and "clamp" not in ops and "max" not in ops
    ops = _ops(jax.nn.relu6)
    assert ops.count("relu") == 2


@pytest.mark.parametrize(
    "fn, lo, hi, want",
    [
        # min(x, 1) over [1.66, 1.86]: exactly 1 (x - relu(x - 1) gave [0.8, 1.2]).
        (lambda x: jnp.minimum(x, 1.0), 1.66, 1.86, (1.0, 1.0)),
        (lambda x: jnp.minimum(x, 1.0), 0.5, 1.5, (0.5, 1.0)),
        (lambda x: jnp.minimum(x, 0.0), -0.3, 0.4, (-0.3, 0.0)),
        (lambda x: jnp.clip(x, 0.0, 1.0), -0.5, 1.5, (0.0, 1.0)),
        (lambda x: jnp.clip(x, 0.0, 1.0), 0.2, 0.7, (0.2, 0.7)),
        (jax.nn.relu6, 5.5, 7.0, (5.5, 6.0)),
    ],
)
def test_ibp_of_min_max_clip_is_exact(fn, lo, hi, want):
    # Monotone in x, and x occurs once after the rewrite: IBP is the exact range.
    b = jaxcert.bound(fn, jaxcert.Box(jnp.full((1, 2), lo), jnp.full((1, 2), hi)), "ibp")
    np.testing.assert_allclose(b.lower, want[0], atol=1e-6)
    np.testing.assert_allclose(b.upper, want[1], atol=1e-6)


def test_monotone_functions_are_named_nodes():
    g = trace(lambda x: jnp.tanh(jax.nn.softplus(x)), X_SHAPE, jnp.float32)
    assert [n.name for n in g.activations] == ["softplus_0", "tanh_0"]
    x = jnp.linspace(-2, 2, 6).reshape(X_SHAPE)
    np.testing.assert_allclose(g.activations[0].apply(x), jax.nn.softplus(x), rtol=1e-6)


def test_abs_and_powers_become_activation_nodes():
    g = trace(lambda x: jnp.abs(x) + x**2 + x**3 + x**1, X_SHAPE, jnp.float32)
    kinds = [(n.op, n.params["function"]) for n in g.activations]
    assert kinds == [
        ("even_convex", "abs"),
        ("even_convex", "integer_pow"),
        ("monotone", "odd_pow"),
    ]
    x = jnp.linspace(-2, 2, 6).reshape(X_SHAPE)
    for node, want in zip(g.activations, (jnp.abs(x), x**2, x**3), strict=True):
        np.testing.assert_allclose(node.apply(x), want, rtol=1e-6)
    err = _unsupported(lambda x: x**-1)
    assert err.primitive == "integer_pow" and "pole" in str(err)


@pytest.mark.parametrize(
    "fn, lo, hi, want",
    [
        (jnp.abs, -1.0, 2.0, (0.0, 2.0)),  # the minimum at 0 inside
        (jnp.abs, -3.0, -1.0, (1.0, 3.0)),
        (lambda z: z**2, -1.0, 2.0, (0.0, 4.0)),
        (lambda z: z**4, 0.5, 1.0, (0.0625, 1.0)),
        (lambda z: z**3, -2.0, 1.0, (-8.0, 1.0)),
    ],
)
def test_ibp_of_abs_and_powers_is_the_exact_range(fn, lo, hi, want):
    s = jaxcert.Box(jnp.full(X_SHAPE, lo), jnp.full(X_SHAPE, hi))
    b = jaxcert.bound(fn, s, "ibp")
    np.testing.assert_allclose(b.lower, want[0], rtol=1e-6)
    np.testing.assert_allclose(b.upper, want[1], rtol=1e-6)


def test_matmuls_are_bound_in_highest_precision():
    g = trace(lambda x: x @ jnp.ones((3, 2)), X_SHAPE, jnp.float32)
    assert g.nodes[1].params["precision"] == (jax.lax.Precision.HIGHEST,) * 2


def _unsupported(fn, shape=X_SHAPE):
    with pytest.raises(jaxcert.UnsupportedOperation) as info:
        trace(fn, shape, jnp.float32)
    return info.value


def test_unsupported_primitive_names_itself_and_the_user_line():
    err = _unsupported(lambda x: jnp.sin(x))
    assert err.primitive == "sin"
    assert "test_passes.py" in err.source and "sin" in str(err)


def test_elementwise_products_of_bounded_values_become_product_nodes():
    g = trace(lambda x: x * jnp.tanh(x) + 2.0 * x, X_SHAPE, jnp.float32)
    ops_of = [n.op for n in g.nodes[1:]]
    assert ops_of.count("product") == 1 and ops_of.count("mul") == 1  # 2 x stays linear
    (product,) = [n for n in g.nodes if n.op == "product"]
    assert len(product.inputs) == 2
    x = jnp.linspace(-2, 2, 6).reshape(X_SHAPE)
    np.testing.assert_allclose(product.apply(x, jnp.tanh(x)), x * jnp.tanh(x), rtol=1e-6)


def test_erfc_is_one_minus_a_monotone_erf():
    g = trace(lambda x: jax.scipy.special.erfc(x), X_SHAPE, jnp.float32)
    assert [n.op for n in g.nodes[1:]] == ["monotone", "sub"]
    assert g.nodes[1].params["function"] == "erf"
    x = jnp.linspace(-2, 2, 6).reshape(X_SHAPE)
    np.testing.assert_allclose(
        jaxcert.graph.evaluate(g, x)[-1], jax.scipy.special.erfc(x), atol=1e-6
    )
    # Decreasing: its IBP range runs from the upper end to the lower end.
    s = jaxcert.Box(jnp.full(X_SHAPE, -1.0), jnp.full(X_SHAPE, 0.5))
    b = jaxcert.bound(jax.scipy.special.erfc, s, "ibp")
    np.testing.assert_allclose(b.lower, jax.scipy.special.erfc(0.5), rtol=1e-6)
    np.testing.assert_allclose(b.upper, jax.scipy.special.erfc(-1.0), rtol=1e-6)


def test_max_and_min_of_two_bounded_values_are_maximum_nodes():
    g = trace(lambda x: jnp.maximum(x, 2 * x) + jnp.minimum(x, -x), X_SHAPE, jnp.float32)
    assert [n.op for n in g.activations] == ["maximum", "maximum"]
    lo = jnp.array([[-1.0, 0.5, -3.0], [0.0, 1.0, 2.0]])
    s = jaxcert.Box(lo, lo + 1.0)
    b = jaxcert.bound(lambda x: jnp.maximum(x[:, :2], x[:, 1:]), s, "ibp")
    np.testing.assert_allclose(b.lower, jnp.maximum(lo[:, :2], lo[:, 1:]))  # exact
    np.testing.assert_allclose(b.upper, jnp.maximum(lo[:, :2], lo[:, 1:]) + 1.0)
    # Where one interval lies above the other, CROWN's lines are that operand exactly.
    far = jaxcert.Box(jnp.array([[5.0, 0.0]]), jnp.array([[6.0, 1.0]]))
    c = jaxcert.bound(lambda x: jnp.maximum(x[:, :1], x[:, 1:]), far, "crown")
    np.testing.assert_allclose([c.lower[0, 0], c.upper[0, 0]], [5.0, 6.0], atol=1e-6)


def test_a_matrix_product_of_two_bounded_values_is_refused():
    err = _unsupported(lambda x: jnp.einsum("bi,bj->bij", x, x))
    assert err.primitive == "dot_general" and "two bounded" in str(err)


def test_ibp_of_a_product_is_the_exact_range_over_the_box():
    lo = jnp.array([[-1.0, 2.0, -3.0, 0.5]])
    hi = jnp.array([[2.0, 3.0, -1.0, 4.0]])
    s = jaxcert.Box(lo, hi)
    b = jaxcert.bound(lambda x: x[:, :2] * x[:, 2:], s, "ibp")
    # [-1, 2] * [-3, -1] = [-6, 3]; [2, 3] * [0.5, 4] = [1, 12]
    np.testing.assert_allclose(b.lower, [[-6.0, 1.0]])
    np.testing.assert_allclose(b.upper, [[3.0, 12.0]])


def test_products_have_no_lipschitz_constant_for_bcp():
    s = jaxcert.L2Ball(jnp.zeros((1, 4)), 0.1)
    with pytest.raises(jaxcert.UnsupportedOperation, match="Lipschitz"):
        jaxcert.bound(lambda x: (x * jnp.tanh(x)) @ jnp.ones((4, 2)), s, "bcp")


def test_input_dependent_selection_is_refused():
    err = _unsupported(lambda x: jnp.where(x > 0, x, 0.0))
    assert err.primitive == "gt"


def test_mixing_examples_is_refused():
    err = _unsupported(lambda x: jnp.sum(x))
    assert "batch axis" in str(err)


def test_bad_leaky_slope_is_refused():
    err = _unsupported(lambda x: jax.nn.leaky_relu(x, 2.0))
    assert "negative_slope" in str(err)
