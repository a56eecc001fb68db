"""Small functions, each exercising one linear primitive the engine supports.

Inputs are ``(2, 8)``; functions reshape as they need. Every case is affine in ``x``,
so an exact method (CROWN over a box) must match brute force over the corners.
"""

import jax
import jax.numpy as jnp
from jax import lax

_K = jax.random.normal(jax.random.PRNGKey(42), (3, 3, 2, 4))
_W = jax.random.normal(jax.random.PRNGKey(7), (8, 5))


def _img(x):
    return x.reshape(2, 2, 2, 2)


AFFINE_CASES = {
    "dense": lambda x: x @ _W + 1.0,
    "conv_stride_pad": lambda x: lax.conv_general_dilated(
        _img(x), _K, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    ),
    "conv_dilated_grouped": lambda x: lax.conv_general_dilated(
        _img(x),
        _K[:, :, :1, :],
        (1, 1),
        ((2, 1), (1, 2)),
        rhs_dilation=(2, 1),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=2,
    ),
    "mul_div_sub_neg": lambda x: -(3.0 - x * jnp.arange(8.0) / 2.5),
    "pad_value": lambda x: lax.pad(x, 0.7, ((0, 0, 0), (2, 1, 1))),
    "concat_const": lambda x: jnp.concatenate([x, jnp.ones((2, 3)), 2 * x], axis=1),
    "select_const_pred": lambda x: jnp.where(jnp.arange(8) % 2 == 0, x, -x),
    "select_const_case": lambda x: jnp.where(jnp.arange(8) < 3, x, 5.0),
    "slice_transpose": lambda x: jnp.transpose(x.reshape(2, 2, 4)[:, :, 1:3], (0, 2, 1)),
    "reduce_sum_mean": lambda x: jnp.stack([x.sum(1), x.mean(1)], axis=1),
    "avg_pool": lambda x: (
        lax.reduce_window(_img(x), 0.0, lax.add, (1, 2, 2, 1), (1, 1, 1, 1), "VALID") / 4.0
    ),
    "cumsum_rev": lambda x: jnp.flip(jnp.cumsum(x, axis=1), axis=1),
    "broadcast_expand": lambda x: jnp.broadcast_to(x[:, None, :], (2, 3, 8)) + x[:, None, :],
    "gather_const_index": lambda x: x[:, jnp.array([0, 3, 3, 7])],
    "dynamic_slice": lambda x: lax.dynamic_slice_in_dim(x, 2, 3, axis=1),
    "residual_add": lambda x: x @ _W @ _W.T + x,
}

# Non-linear cases (monotone, piecewise-linear, even convex) with sound but inexact bounds.
NONLINEAR_CASES = {
    "max_pool": lambda x: lax.reduce_window(
        _img(x), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "VALID"
    ),
    "reduce_max": lambda x: jnp.max(x.reshape(2, 2, 4), axis=2),
    "relu_shifted": lambda x: jnp.maximum(x @ _W, 0.3),
    "min_const": lambda x: jnp.minimum(x @ _W, -0.2),
    "leaky": lambda x: jax.nn.leaky_relu(x @ _W, 0.1),
    "sigmoid_tanh": lambda x: jnp.tanh(x @ _W) + jax.nn.sigmoid(x @ _W),
    "softplus_exp": lambda x: jax.nn.softplus(x @ _W) - jnp.exp(0.1 * x @ _W),
    "elu": lambda x: jax.nn.elu(x @ _W),
    "abs": lambda x: jnp.abs(x @ _W - 0.5),
    "square_cube": lambda x: (x @ _W - 0.5) ** 2 - (x @ _W) ** 3,
    "product": lambda x: (x @ _W) * jax.nn.sigmoid(x @ _W - 0.2) + (x @ _W) * (x @ _W),
    "maxout_min": lambda x: (
        jnp.maximum(x @ _W, 0.5 - x @ _W) + jnp.minimum(x @ _W, jnp.tanh(x @ _W))
    ),
    "gelu_exact_and_tanh": lambda x: (
        jax.nn.gelu(x @ _W, approximate=False) + jax.nn.gelu(x @ _W - 0.3, approximate=True)
    ),
    "atan_sinh_erf": lambda x: jnp.arctan(x @ _W) + jnp.sinh(x @ _W) - jax.lax.erf(x @ _W),
    "clip_relu6_hard_tanh": lambda x: (
        jnp.clip(x @ _W, -0.4, 0.9) + jax.nn.relu6(4 * x @ _W) - jax.nn.hard_tanh(x @ _W - 0.5)
    ),
    # Matrix products of two bounded values (attention), 1 / z and 1 / sqrt(z) (softmax
    # and layer norm: positive denominators), a pole-crossing 1 / z (unbounded, sound),
    # stop_gradient, square and max with -inf.
    "bilinear": lambda x: jnp.einsum(
        "bij,bjk->bik",
        x.reshape(2, 2, 4),
        jnp.tanh(x @ _W[:, :4]).reshape(2, 4, 1) + x[:, :4, None],
    ).reshape(2, -1),
    "softmax": lambda x: jax.nn.softmax(x @ _W, axis=-1),
    "layer_norm_rsqrt": lambda x: (
        (x - x.mean(1, keepdims=True))
        * lax.rsqrt(jnp.square(x - x.mean(1, keepdims=True)).mean(1, keepdims=True) + 0.1)
    ),
    "reciprocal_div": lambda x: 1.0 / (x @ jnp.abs(_W) + 1.0) + x[:, :5] / (x[:, 3:] ** 2 + 0.5),
    "reciprocal_pole": lambda x: (x @ _W) ** -1,
    "sin_cos_sign": lambda x: jnp.sin(3 * x @ _W) + jnp.cos(x @ _W - 1) + jnp.sign(x @ _W),
    "stop_gradient_max_inf": lambda x: jnp.maximum(lax.stop_gradient(x @ _W), -jnp.inf) + x[:, :5],
}

AFFINE_CASES["split"] = lambda x: (
    jnp.split(x, [3], axis=1)[1][:, :3] * 2.0 + jnp.split(x, [5], axis=1)[0][:, :3]
)
