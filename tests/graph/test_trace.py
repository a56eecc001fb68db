"""The tracer: inlining of calls, folding of constants, clear errors on bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxcert.graph import trace
from jaxcert.graph.trace import trace_raw

X_SHAPE = (2, 3)


def _ops(fn, shape=X_SHAPE):
    return [n.op for n in trace(fn, shape, jnp.float32).nodes]


def test_batchnorm_statistics_are_folded_into_constants():
    model = nn.BatchNorm(use_running_average=True)
    variables = model.init(jax.random.PRNGKey(0), jnp.ones((2, 5)))
    ops = _ops(lambda x: model.apply(variables, x), (2, 5))
    assert "rsqrt" not in ops
    assert set(ops) <= {"input", "sub", "mul", "add"}


def test_custom_vjp_functions_are_inlined():
    @jax.custom_vjp
    def double(x):
        return 2 * x

    double.defvjp(lambda x: (2 * x, None), lambda _, g: (2 * g,))
    assert _ops(lambda x: jax.nn.relu(double(x))) == ["input", "mul", "relu"]


def test_constant_output_and_integer_input_are_rejected():
    with pytest.raises(ValueError, match="does not depend"):
        trace(lambda x: jnp.ones((2, 3)), X_SHAPE, jnp.float32)
    with pytest.raises(ValueError, match="floating"):
        trace(lambda x: x, X_SHAPE, jnp.int32)


def test_constants_that_are_tracers_flow_through():
    # Under jax.grad the closed-over parameters are tracers: the graph keeps them.
    def width(w):
        g = trace(lambda x: x * w, X_SHAPE, jnp.float32)
        return jnp.sum(g.nodes[1].args[1])

    assert jax.grad(width)(jnp.float32(3.0)) == 1.0


def test_raw_trace_emits_every_bounded_primitive_and_keeps_named_calls():
    # Before the passes: any primitive becomes a node (the passes decide what is
    # supported), and a kept call is one node whatever its body.
    raw = trace_raw(lambda x: jnp.sin(jax.nn.relu(x)), X_SHAPE, jnp.float32, {"relu"})
    assert [n.op for n in raw.nodes] == ["input", "call", "sin"]
    assert raw.nodes[1].params["name"] == "relu"
    inlined = trace_raw(lambda x: jax.nn.relu(x), X_SHAPE, jnp.float32, keep_calls=())
    assert [n.op for n in inlined.nodes] == ["input", "max"]
