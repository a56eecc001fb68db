"""The IR: every node evaluates itself, ReLU and pooling included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_case

from jaxcert.graph import evaluate, trace
from jaxcert.graph.ir import GraphBuilder, Node, Ref


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet", "usernet"])
def test_evaluate_reproduces_the_function_at_every_node(model):
    # relu, leaky_relu, monotone (tanh, sigmoid) and max_pool nodes all evaluate
    # themselves; the last value is the function's output.
    case = make_case(model)
    graph = trace(case.fn, case.x.shape, case.x.dtype)
    values = evaluate(graph, case.x)
    assert len(values) == len(graph.nodes)
    np.testing.assert_allclose(values[graph.output], case.fn(case.x), rtol=1e-5, atol=1e-6)
    for node, value in zip(graph.nodes, values, strict=True):
        assert value.shape == node.shape, (node.op, value.shape, node.shape)


def test_synthetic_activations_evaluate_through_the_op_registry():
    x = jnp.array([[-2.0, 0.5, 3.0]])
    slope = jnp.full((3,), 0.1)
    relu = Node(1, "relu", (Ref(0),), (1, 3), jnp.float32)
    leaky = Node(1, "leaky_relu", (Ref(0),), (1, 3), jnp.float32, params={"slope": slope})
    tanh = Node(1, "monotone", (Ref(0),), (1, 3), jnp.float32, fn=jnp.tanh)
    np.testing.assert_allclose(relu.apply(x), [[0.0, 0.5, 3.0]])
    np.testing.assert_allclose(leaky.apply(x), [[-0.2, 0.5, 3.0]], rtol=1e-6)
    np.testing.assert_allclose(tanh.apply(x), jnp.tanh(x))


def test_builder_works_out_shapes_and_copies_nodes():
    builder = GraphBuilder(Node(0, "input", (), (2, 3), jnp.float32))
    ref = builder.emit_prim(jax.lax.mul_p, [Ref(0), jnp.ones((2, 3))], None)
    assert builder.node(ref).shape == (2, 3) and builder.node(ref).op == "mul"
    copy = builder.copy(builder.node(ref), (ref, jnp.full((2, 3), 2.0)))
    graph = builder.graph(copy)
    assert [n.index for n in graph.nodes] == [0, 1, 2] and graph.output == 2
    np.testing.assert_allclose(evaluate(graph, jnp.ones((2, 3)))[-1], 2.0)
