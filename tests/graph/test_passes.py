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


def test_clips_with_two_limits_become_one_node_and_one_sided_ones_relus():
    for fn, name in [
        (lambda x: jnp.clip(x, -1.0, 2.0), "clip"),
        (jax.nn.relu6, "relu6"),
        (jax.nn.hard_tanh, "hard_tanh"),
    ]:
        g = trace(fn, X_SHAPE, jnp.float32)
        assert [(n.op, n.params.get("function")) for n in g.nodes[1:]] == [("monotone", name)]
    assert _ops(lambda x: jnp.clip(x, -1.0)) == ["input", "sub", "relu", "add"]
    assert _ops(lambda x: jnp.clip(x, None, 2.0)).count("relu") == 1
    assert _ops(lambda x: jnp.maximum(jnp.minimum(x, 2.0), -1.0)).count("relu") == 2


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
    err = _unsupported(lambda x: x**0)
    assert err.primitive == "integer_pow" and "constant" in str(err)


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
    err = _unsupported(lambda x: jnp.tan(x))
    assert err.primitive == "tan"
    assert "test_passes.py" in err.source and "tan" in str(err)


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


def test_a_matrix_product_of_two_bounded_values_is_a_bilinear_node():
    g = trace(lambda x: jnp.einsum("bi,bj->bij", x, x), X_SHAPE, jnp.float32)
    assert [n.op for n in g.nodes] == ["input", "bilinear"]
    # Exact where one factor is a point: x * c for the constant c = x's centre.
    lo, hi = jnp.array([[1.0, -2.0, 0.5]]), jnp.array([[1.0, -2.0, 0.5]])
    b = jaxcert.bound(lambda x: jnp.einsum("bi,bj->bij", x, x), jaxcert.Box(lo, hi), "crown")
    np.testing.assert_allclose(np.reshape(b.lower, (3, 3)), np.outer(lo[0], lo[0]), atol=1e-5)


def test_a_product_that_pairs_examples_is_refused():
    err = _unsupported(lambda x: jnp.einsum("bi,ci->bc", x, x))
    assert err.primitive == "bilinear" and "pairs each example" in str(err)


def test_stop_gradient_is_the_identity_for_bounds():
    s = jaxcert.LinfBall(jnp.array([[0.5, -1.0, 2.0]]), 0.25)
    for method in ("ibp", "crown"):
        b = jaxcert.bound(lambda x: x + jax.lax.stop_gradient(x), s, method)
        np.testing.assert_allclose(b.lower, 2 * (s.center - 0.25), atol=1e-6)
        np.testing.assert_allclose(b.upper, 2 * (s.center + 0.25), atol=1e-6)


def test_max_with_minus_inf_is_the_identity_and_a_partly_infinite_limit_is_refused():
    assert _ops(lambda x: jnp.maximum(x, -jnp.inf) * 2.0) == ["input", "mul"]
    err = _unsupported(lambda x: jnp.maximum(x, jnp.array([0.0, -jnp.inf, 1.0])))
    assert "infinite in some entries" in str(err)


def test_division_by_a_bounded_value_is_a_reciprocal():
    assert _ops(lambda x: 2.0 / x) == ["input", "reciprocal", "mul"]
    assert _ops(lambda x: x / x[:, :1]) == [
        "input",
        "slice",
        "reciprocal",
        "broadcast_in_dim",
        "product",
    ]
    assert _ops(lambda x: x**-2) == ["input", "even_convex", "reciprocal"]
    assert _ops(lambda x: jax.lax.rsqrt(x)) == ["input", "rsqrt"]


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


# ------------------------------------------------------------ batch axis in front

_W3 = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 3))  # a stack of 4 matrices
_WL = jax.random.normal(jax.random.PRNGKey(1), (3, 5))  # a constant on the left


def _batched_matmuls(x):
    """``(B, 4, 5, 4) @ (4, 4, 3)`` and ``(3, 5) @ (B, 4, 5, 3)``: jnp.matmul's
    dot_general puts the batch axis second; its own transpose brings it back."""
    y = jax.nn.relu(x) @ _W3  # (B, 4, 5, 3)
    z = _WL @ jax.nn.relu(y)  # (B, 4, 3, 3)
    return z.reshape(z.shape[0], -1)


def test_matmuls_that_move_the_batch_axis_and_back_are_bounded_soundly():
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 5, 4))
    g = jaxcert.graph.trace(_batched_matmuls, x.shape, jnp.float32)
    ops_seen = [n.op for n in g.nodes]
    # Both products keep the batch axis in front; matmul's transposes cancel or compose.
    assert ops_seen.count("batch_first_dot") == 2 and "dot_general" not in ops_seen
    assert all(n.shape[0] == 2 for n in g.nodes)
    np.testing.assert_allclose(
        jaxcert.graph.evaluate(g, x)[g.output], _batched_matmuls(x), rtol=1e-5, atol=1e-5
    )
    s = jaxcert.LinfBall(x, 0.3)
    rng = np.random.default_rng(0)
    pts = np.asarray(x) + 0.3 * rng.choice([-1.0, 1.0], size=(300, *x.shape))
    pts[150:] = np.asarray(x) + 0.3 * rng.uniform(-1, 1, size=(150, *x.shape))
    values = jax.vmap(_batched_matmuls)(jnp.asarray(pts, jnp.float32))
    for method in ("ibp", "crown-ibp", "crown"):
        b = jaxcert.bound(_batched_matmuls, s, method)
        assert np.all(np.asarray(values) >= np.asarray(b.lower) - 1e-4), method
        assert np.all(np.asarray(values) <= np.asarray(b.upper) + 1e-4), method
    # The first product's bounds over the box are exact for IBP: |W| times the radius.
    first = lambda x: x @ _W3  # noqa: E731
    b = jaxcert.bound(first, s, "ibp")
    centre, radius = x @ _W3, 0.3 * jnp.ones_like(x) @ jnp.abs(_W3)
    np.testing.assert_allclose(
        np.reshape(b.upper, centre.shape), centre + radius, rtol=1e-5, atol=1e-5
    )


def test_a_product_that_leaves_the_batch_axis_moved_is_still_refused():
    # dot_general alone (no transpose back): its result's axis 0 is not the examples.
    dims = (((3,), (1,)), ((1,), (0,)))
    err = _unsupported(lambda x: jax.lax.dot_general(x, _W3, dims), shape=(2, 4, 5, 4))
    assert err.primitive == "transpose" and "moves the batch axis" in str(err)


def test_dead_nodes_are_pruned_and_do_not_trigger_refusals():
    def fn(x):
        _ = jnp.sum(x)  # would mix examples, but nothing reads it
        return x * 2.0

    g = jaxcert.graph.trace(fn, (2, 3), jnp.float32)
    assert [n.op for n in g.nodes] == ["input", "mul"]
