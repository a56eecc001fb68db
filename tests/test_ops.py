"""The op registry: one declaration per op, and every domain's table covers every op."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_contains, box_points, box_vertices

import jaxcert
from jaxcert import ops
from jaxcert.domains import interval, linear, lipschitz, margins, patches
from jaxcert.graph import trace

# Every abstract domain, by name: each is a rule table derived from the registry.
DOMAINS = {
    "interval": interval.RULES,
    "linear": linear.RULES,
    "patches": patches.RULES,
    "margins": margins.RULES,
    "lipschitz": lipschitz.RULES,
}


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_every_graph_op_has_a_rule_or_a_stated_reason_in_every_domain(domain):
    table = DOMAINS[domain]
    graph_ops = {op.name for op in ops.graph_ops()}
    assert set(table) == graph_ops, set(table) ^ graph_ops
    for name, rule in table.items():
        if isinstance(rule, ops.Unsupported):
            assert rule.reason and rule.domain == domain, (domain, name)
        else:
            assert callable(rule) or isinstance(rule, patches.PatchRule), (domain, name)


def test_the_sound_domains_have_a_rule_for_every_op():
    # IBP and CROWN bound everything the tracer accepts; patches refuse ops (the dense
    # pass takes over); the margin approximations need non-decreasing single-input
    # activations and BCP a Lipschitz constant.
    refusals = {
        "interval": set(),
        "linear": set(),
        "margins": {
            "even_convex",
            "product",
            "maximum",
            "reciprocal",
            "rsqrt",
            "bilinear",
            "periodic",
        },
        "lipschitz": {"product", "maximum", "reciprocal", "rsqrt", "bilinear"},
    }
    for domain, expected in refusals.items():
        refused = {n for n, r in DOMAINS[domain].items() if isinstance(r, ops.Unsupported)}
        assert refused == expected, (domain, refused)
    refused = {n for n, r in patches.RULES.items() if isinstance(r, ops.Unsupported)}
    assert "dot_general" in refused and "conv_general_dilated" not in refused


def test_an_unsupported_entry_raises_with_the_op_and_its_source():
    g = trace(lambda x: jnp.concatenate([x, x], axis=-1), (1, 2, 2, 1), jnp.float32)
    node = g.nodes[-1]
    with pytest.raises(jaxcert.UnsupportedOperation, match="concatenate.*patches") as info:
        patches.RULES[node.op](node)
    assert "test_ops.py" in info.value.source


def test_properties_are_consistent():
    for op in ops.OPS.values():
        if op.kind == "structural":
            assert op.monotone, op.name  # non-negative coefficients
        if op.kind == "monotone":
            assert op.monotone and op.impl is None, op.name
        non_monotone = ("even_convex", "product", "reciprocal", "rsqrt", "bilinear", "periodic")
        if op.kind == "activation" and op.name not in non_monotone:
            assert op.monotone, op.name
    assert not ops.OPS["even_convex"].monotone and not ops.OPS["product"].monotone
    assert ops.OPS["concatenate"].disjoint and not ops.OPS["add"].disjoint
    assert {n for n, op in ops.OPS.items() if op.lipschitz == "spectral"} == {
        "dot_general",
        "batch_first_dot",
        "conv_general_dilated",
    }


def test_rule_table_picks_overrides_then_kinds_then_reasons(monkeypatch):
    # Registering an op is all a domain needs to cover it with its kind's rule.
    monkeypatch.setitem(ops.OPS, "my_shift", ops.Op("my_shift", "sum", "any", offset=True))
    table = ops.rule_table(
        "demo",
        {"sum": "sum-rule", "monotone": "endpoint-rule"},
        overrides={"relu": "relu-rule"},
        unsupported={"max_pool": "windows"},
    )
    assert table["my_shift"] == table["add"] == "sum-rule"
    assert table["relu"] == "relu-rule" and table["monotone"] == "endpoint-rule"
    assert table["max_pool"].reason == "windows"
    assert isinstance(table["dot_general"], ops.Unsupported)
    with pytest.raises(ValueError, match="unregistered"):
        ops.rule_table("demo", {}, overrides={"no_such_op": "rule"})


def test_registering_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        ops.deflinear("reshape", "structural")
    with pytest.raises(ValueError, match="kind"):
        ops.deflinear("new_op", "activation")


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "bcp"])
def test_tile_needs_only_its_registry_entry(method):
    # jnp.tile (torch's .repeat) was added as one `deflinear` line: every domain bounds it.
    w = jnp.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0]])

    def fn(x):
        h = jax.nn.relu(x @ w)  # (batch, 3)
        return jnp.tile(h[:, None], (1, 2, 1)).reshape(x.shape[0], -1) @ jnp.ones((6, 2))

    x = jnp.array([[0.1, -0.2], [0.5, 0.4]])
    s = jaxcert.LinfBall(x, 0.3)
    b = jaxcert.bound(fn, s, method)
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(x) - 0.3, np.asarray(x) + 0.3
    points = np.concatenate([box_points(rng, lo, hi, 200), box_vertices(rng, lo, hi, 200)])
    values = np.asarray(jax.vmap(fn)(jnp.asarray(points)))
    assert_contains(b.lower, b.upper, values, method)
    assert "tile" in [n.op for n in trace(fn, x.shape, x.dtype).nodes]
