"""Patch backward passes: the same neuron bounds as dense passes, on receptive fields."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcert
from jaxcert import Box, L1Ball, L2Ball, LinfBall
from jaxcert.domains import backward, intermediate, interval, linear, patches
from jaxcert.graph import evaluate, trace


class _Chain(nn.Module):
    """Normalisation, padding of every kind, strides, dilation, groups, leaky ReLU and a
    batch-norm-like affine map, then a dense head."""

    @nn.compact
    def __call__(self, x):
        x = (x - 0.5) / 0.25
        x = nn.relu(nn.Conv(4, (3, 3), strides=2, padding="SAME")(x))
        x = nn.Conv(4, (3, 2), strides=(1, 2), padding=((1, 0), (0, 2)), feature_group_count=2)(x)
        x = nn.leaky_relu(x * jnp.array([0.5, 2.0, -1.0, 1.5]) + 0.1, 0.1)
        x = nn.relu(nn.Conv(3, (2, 2), kernel_dilation=2, padding="VALID")(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _chain_fn():
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 11, 9, 2))
    model = _Chain()
    variables = model.init(jax.random.PRNGKey(2), x)
    return model, variables, x


def _dense(ctx, input_set, index):
    """Every neuron of node ``index`` by one dense backward pass (the reference)."""
    node = ctx.graph.nodes[index]
    n = math.prod(node.shape[1:])
    eye = jnp.eye(n, dtype=node.dtype).reshape(1, n, *node.shape[1:])
    eye = jnp.broadcast_to(eye, (node.shape[0], *eye.shape[1:]))
    both = linear.lower_bound(ctx, input_set, index, jnp.concatenate([eye, -eye], axis=1))
    return both[:, :n].reshape(node.shape), -both[:, n:].reshape(node.shape)


def _sets(x):
    return {
        "linf-clip": LinfBall(x, 0.1, clip=(0.0, 1.0)),
        "box": Box(x - 0.05, x + 0.02),
        "l2": L2Ball(x, 0.5),
        "l1": L1Ball(x, 1.0),
    }


@pytest.mark.parametrize("set_name", ["linf-clip", "box", "l2", "l1"])
@pytest.mark.parametrize("chunk", [None, 5])  # one pass; many chunks in a lax.map loop
def test_patch_bounds_equal_dense_bounds(set_name, chunk):
    model, variables, x = _chain_fn()
    s = _sets(x)[set_name]
    graph = trace(lambda z: model.apply(variables, z), x.shape, x.dtype)
    ctx = backward.Context(
        graph, interval.propagate(graph, *s.bounding_box()), backward.slope_chooser("adaptive")
    )
    checked = 0
    for index in backward.preactivation_nodes(graph):
        chain = patches.conv_chain(graph, index)
        if chain is None:
            continue
        lo, hi = patches.identity_bounds(ctx, s, chain, chunk)
        ref_lo, ref_hi = _dense(ctx, s, index)
        np.testing.assert_allclose(lo, ref_lo, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(hi, ref_hi, rtol=1e-5, atol=1e-5)
        checked += 1
    assert checked == 3  # the three convolutional pre-activations; not the dense head


@pytest.mark.parametrize("set_name", ["linf-clip", "l2"])
def test_patch_bounds_contain_sampled_preactivations(set_name):
    model, variables, x = _chain_fn()
    s = _sets(x)[set_name]
    graph = trace(lambda z: model.apply(variables, z), x.shape, x.dtype)
    intervals = intermediate.crown_intervals(graph, s, backward.slope_chooser("adaptive"))
    key_v, key_s = jax.random.split(jax.random.PRNGKey(3))
    points = jnp.concatenate(
        [s.sample(key_s, 200)] + ([s.vertices(key_v, 200)] if set_name == "linf-clip" else [])
    )
    checked = 0
    for index in backward.preactivation_nodes(graph):
        if patches.conv_chain(graph, index) is None:
            continue
        lo, hi = intervals[index]
        values = jax.vmap(lambda p, i=index: evaluate(graph, p)[i])(points)
        assert np.all(np.asarray(values) >= np.asarray(lo)[None] - 1e-5)
        assert np.all(np.asarray(values) <= np.asarray(hi)[None] + 1e-5)
        checked += 1
    assert checked == 3


def _no_patches(monkeypatch):
    monkeypatch.setattr(patches, "conv_chain", lambda graph, index: None)


@pytest.mark.parametrize("method", ["crown", "fastlin"])
def test_full_crown_is_the_same_with_and_without_patches(monkeypatch, method):
    model, variables, x = _chain_fn()
    s = LinfBall(x, 0.05)
    fn = lambda z: model.apply(variables, z)  # noqa: E731
    with_patches = jaxcert.bound(fn, s, method, return_intermediate=True)
    _no_patches(monkeypatch)
    dense = jaxcert.bound(fn, s, method, return_intermediate=True)
    np.testing.assert_allclose(with_patches.lower, dense.lower, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_patches.upper, dense.upper, rtol=1e-5, atol=1e-5)
    for name, iv in dense.intermediate.items():
        np.testing.assert_allclose(with_patches.intermediate[name].lower, iv.lower, atol=1e-5)


def test_gradients_through_patches_match_dense(monkeypatch):
    model, variables, x = _chain_fn()
    s = LinfBall(x, 0.05)

    def loss(v):
        return jnp.sum(jaxcert.bound(lambda z: model.apply(v, z), s, "crown").lower)

    g_patches = jax.grad(loss)(variables)
    _no_patches(monkeypatch)
    g_dense = jax.grad(loss)(variables)
    for a, b in zip(jax.tree.leaves(g_patches), jax.tree.leaves(g_dense), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_windows_grow_with_kernels_strides_and_padding():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(2, (4, 4), strides=2, padding="VALID")(x))
            x = nn.relu(nn.Conv(2, (3, 3), strides=1, padding=1)(x))
            return nn.Conv(2, (3, 3), strides=2, padding=((2, 0), (1, 1)))(x)

    x = jnp.zeros((1, 20, 20, 1))
    model = Net()
    v = model.init(jax.random.PRNGKey(0), x)
    graph = trace(lambda z: model.apply(v, z), x.shape, x.dtype)
    chain = patches.conv_chain(graph, graph.output)
    windows = [
        w
        for n, w in zip(chain, patches.windows_along(chain), strict=True)
        if n.op == "conv_general_dilated"
    ]
    # Back through the last conv: 3x3, stride 2, offset 2 (low padding) on each row axis.
    assert windows[0] == patches.Window((3, 3), (2, 2), (2, 1))
    # Then 3x3 stride 1 padding 1: size (3-1)*1+3 = 5, offset 2*1+1.
    assert windows[1] == patches.Window((5, 5), (2, 2), (3, 2))
    # Then 4x4 stride 2 no padding: size (5-1)*2+4 = 12, stride 4, offset 6.
    assert windows[2] == patches.Window((12, 12), (4, 4), (6, 4))


def test_chains_without_a_patch_rule_stay_dense():
    class Pooled(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.max_pool(nn.relu(nn.Conv(2, (3, 3))(x)), (2, 2), strides=(2, 2))
            y = nn.Conv(2, (3, 3))(x)
            return nn.relu(y + nn.Conv(2, (1, 1))(x))  # residual: two bounded operands

    x = jnp.zeros((1, 8, 8, 1))
    model = Pooled()
    v = model.init(jax.random.PRNGKey(0), x)
    graph = trace(lambda z: model.apply(v, z), x.shape, x.dtype)
    pre = backward.preactivation_nodes(graph)
    assert patches.conv_chain(graph, pre[0]) is not None  # conv + bias from the input
    assert patches.conv_chain(graph, pre[-1]) is None  # max-pool and a residual sum
    dense_target = trace(lambda z: z.reshape(1, -1) @ jnp.ones((64, 2)), x.shape, x.dtype)
    assert patches.conv_chain(dense_target, dense_target.output) is None


def test_patches_give_way_to_dense_passes_on_small_maps():
    class Deep(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(3):
                x = nn.relu(nn.Conv(2, (3, 3), padding="SAME")(x))
            return x

    x = jnp.zeros((1, 4, 4, 1))
    model = Deep()
    v = model.init(jax.random.PRNGKey(0), x)
    graph = trace(lambda z: model.apply(v, z), x.shape, x.dtype)
    last = backward.preactivation_nodes(graph)[-1]
    # Windows 3, 5, 7 pixels wide on 4x4 maps: more numbers than the maps themselves.
    assert not patches.prefers_patches(graph, patches.conv_chain(graph, last))
    first = backward.preactivation_nodes(graph)[0]
    assert patches.prefers_patches(graph, patches.conv_chain(graph, first))


class _SmoothChain(nn.Module):
    """Convolutions through the monotone activations that patch passes relax with lines:
    tanh (S-shaped), jnp.clip (piecewise linear) and softplus (convex)."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(3, (3, 3), padding="SAME")(x))
        x = jnp.clip(nn.Conv(3, (3, 3), strides=2, padding="SAME")(x), -0.5, 0.8)
        x = nn.softplus(nn.Conv(2, (2, 2), padding="VALID")(x))
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


def test_monotone_activations_go_through_patches_with_the_dense_bounds(monkeypatch):
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 1))
    model = _SmoothChain()
    variables = model.init(jax.random.PRNGKey(6), x)
    fn = lambda z: model.apply(variables, z)  # noqa: E731
    s = LinfBall(x, 0.1)
    graph = trace(fn, x.shape, x.dtype)
    chained = [i for i in backward.preactivation_nodes(graph) if patches.conv_chain(graph, i)]
    assert len(chained) == 3  # every convolution's output is bounded on patches
    with_patches = jaxcert.bound(fn, s, "crown", return_intermediate=True)
    _no_patches(monkeypatch)
    dense = jaxcert.bound(fn, s, "crown", return_intermediate=True)
    np.testing.assert_allclose(with_patches.lower, dense.lower, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_patches.upper, dense.upper, rtol=1e-5, atol=1e-5)
    for name, iv in dense.intermediate.items():
        np.testing.assert_allclose(with_patches.intermediate[name].lower, iv.lower, atol=1e-5)
        np.testing.assert_allclose(with_patches.intermediate[name].upper, iv.upper, atol=1e-5)
