"""Shared tiny models and helpers for the jaxcert test-suite.

Everything here is deliberately small (at most ~1,500 parameters per model): the
suite's runtime is XLA compilation, not arithmetic. Models are Flax linen modules wrapped as
``fn(x) = module.apply(variables, x)``, which is how users hand them to
``jaxcert.bound``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

# These tests run hundreds of tiny computations, so XLA compile time dominates their
# runtime; without LLVM optimisation it is ~20-25% lower. Numerics are unaffected
# (fast-math stays off). An explicit JAX_DISABLE_MOST_OPTIMIZATIONS=0 keeps them.
if "JAX_DISABLE_MOST_OPTIMIZATIONS" not in os.environ:
    jax.config.update("jax_disable_most_optimizations", True)

# Lets `pytest` run from a plain checkout (the package need not be pip-installed).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import jaxcert  # noqa: E402

# Every method of the contract. Kept as a literal (not jaxcert.METHODS) so that a
# method silently dropped from the engine shows up as a failing test.
ALL_METHODS = (
    "ibp",
    "crown-ibp",
    "crown",
    "fastlin",
    "cap-ibp",
    "crown-ibp-opt",
    "crown-opt",
    "bcp",
    "lmt",
)

# Soundness slack: a sampled value may exceed a bound by ATOL + RTOL * |value|
# (float32 round-off), never by more.
ATOL = 1e-5
RTOL = 1e-5

CLIP = (0.0, 1.0)
EPS = 0.05  # Linf radius of the shared model cases


def run_bound(fn, input_set, method, spec=None, **kwargs):
    """``jaxcert.bound`` with the PRNG key filled in for a method that needs one."""
    if jaxcert.get_method(method).needs_key:
        kwargs.setdefault("key", jax.random.PRNGKey(0))
    return jaxcert.bound(fn, input_set, method=method, spec=spec, **kwargs)


# --------------------------------------------------------------------------- models


class MLP(nn.Module):
    """Dense + ReLU layers, then a Dense output layer."""

    features: Sequence[int] = (16, 12)
    num_out: int = 4

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_out)(x)


class SmallCNN(nn.Module):
    """A stride-2 convolution, ReLU, then a ReLU MLP head."""

    num_out: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), padding="SAME")(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(self.num_out)(x)


class ResidualNet(nn.Module):
    """A residual block (conv-BN-relu-conv-BN + 1x1 shortcut), avg-pool, Dense head.

    Batch-norm runs in eval mode (running statistics), so examples stay independent.
    """

    num_out: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(4, (3, 3))(x)
        h = nn.BatchNorm(use_running_average=True)(h)
        h = nn.relu(h)
        h = nn.Conv(4, (3, 3))(h)
        h = nn.BatchNorm(use_running_average=True)(h)
        shortcut = nn.Conv(4, (1, 1))(x)
        h = nn.relu(h + shortcut)
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        return nn.Dense(self.num_out)(h)


class UserNet(nn.Module):
    """A module written by a user, not by the engine's authors.

    Leaky-ReLU, a skip connection by concatenation, max-pooling, means over one and
    over two axes, and smooth tanh / sigmoid activations at the end.
    """

    num_out: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.leaky_relu(nn.Conv(3, (3, 3))(x), negative_slope=0.1)
        h = jnp.concatenate([h, x], axis=-1)
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        rows = jnp.mean(h, axis=1).reshape((h.shape[0], -1))
        pooled = jnp.mean(h, axis=(1, 2))
        h = jnp.concatenate([rows, pooled], axis=-1)
        h = jnp.tanh(nn.Dense(8)(h))
        return nn.sigmoid(nn.Dense(self.num_out)(h))


def init_variables(module: nn.Module, x_shape: Sequence[int], seed: int) -> dict:
    """Random variables for ``module`` drawn with NumPy (no XLA compilation).

    Kernels are LeCun-normal, biases small but non-zero, and every BatchNorm gets
    non-trivial running statistics and affine parameters, including some negative
    scales, so both signs are exercised.
    """
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, *x_shape)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif name == "bias":
            value = 0.1 * rng.normal(size=shape)
        elif name == "scale":
            value = 1.0 + 0.7 * rng.normal(size=shape)
        elif name == "mean":
            value = 0.5 * rng.normal(size=shape)
        elif name == "var":
            value = rng.uniform(0.3, 2.0, size=shape)
        else:
            raise ValueError(f"no initialiser for {jax.tree_util.keystr(path)}")
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@dataclasses.dataclass(frozen=True)
class Case:
    """A model wrapped for the tests: ``fn(x)`` plus a batch of inputs and labels."""

    name: str
    module: nn.Module
    variables: Any
    x: jax.Array  # (batch, *x_shape), values in [0, 1]
    y: jax.Array  # (batch,) integer labels
    num_out: int

    @property
    def fn(self) -> Callable[[jax.Array], jax.Array]:
        module, variables = self.module, self.variables
        return lambda x: module.apply(variables, x)

    def fn_with(self, variables) -> Callable[[jax.Array], jax.Array]:
        module = self.module
        return lambda x: module.apply(variables, x)


_MODULES = {
    "mlp": (lambda: MLP(), (6,)),
    "cnn": (lambda: SmallCNN(), (8, 8, 2)),
    "resnet": (lambda: ResidualNet(), (6, 6, 2)),
    "usernet": (lambda: UserNet(), (6, 6, 2)),
}
MODEL_NAMES = tuple(_MODULES)


@functools.cache
def make_case(name: str, batch: int = 2, seed: int = 0) -> Case:
    """Builds (once) the named model with random weights and a random input batch."""
    make_module, x_shape = _MODULES[name]
    module = make_module()
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(size=(batch, *x_shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, module.num_out, size=batch), jnp.int32)
    variables = init_variables(module, x_shape, seed)
    return Case(name, module, variables, x, y, module.num_out)


@functools.cache
def linf_bound(model: str, method: str, use_spec: bool):
    """Bounds of a model case over its Linf ball (EPS, clipped to [0, 1]), computed once.

    Several tests look at the same bounds (soundness, tightness orderings, eager
    references for jit/vmap); the optimising methods take seconds each, so they are
    shared. Bounds are immutable arrays, so sharing cannot leak state between tests.
    """
    case = make_case(model)
    spec = jaxcert.margin_spec(case.y, case.num_out) if use_spec else None
    return run_bound(case.fn, jaxcert.LinfBall(case.x, EPS, clip=CLIP), method, spec=spec)


# ------------------------------------------------------------------------- sampling


# Test points are drawn with NumPy: jax.random would compile for every new shape.


def clipped_box(x, eps, clip=CLIP):
    """The box ``[x - eps, x + eps] ∩ clip`` as NumPy arrays, independently of the engine."""
    x, eps = np.asarray(x), np.asarray(eps)
    lo, hi = x - eps, x + eps
    if clip is not None:
        lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
    return lo.astype(np.float32), hi.astype(np.float32)


def box_points(rng, lo, hi, num):
    """``num`` uniform points of the box ``[lo, hi]``: ``(num, *lo.shape)``."""
    u = rng.uniform(size=(num, *lo.shape))
    return (lo + u * (hi - lo)).astype(np.float32)


def box_vertices(rng, lo, hi, num):
    """``num`` random corners of the box ``[lo, hi]``: ``(num, *lo.shape)``."""
    return np.where(rng.uniform(size=(num, *lo.shape)) < 0.5, hi, lo).astype(np.float32)


def norm_ball_points(rng, center, eps, num, kind):
    """Points of the L2 (``kind="l2"``) or L1 (``kind="l1"``) ball around ``center``.

    Half lie on the boundary sphere, half inside; for L1 the ball's corners
    ``center +/- eps e_i`` are added as well (they maximise linear functions).
    """
    center = np.asarray(center)
    batch, dim = center.shape[0], int(np.prod(center.shape[1:]))
    if kind == "l2":
        unit = rng.normal(size=(num, batch, dim))
        unit /= np.linalg.norm(unit, axis=-1, keepdims=True)
    else:
        unit = rng.laplace(size=(num, batch, dim))
        unit /= np.sum(np.abs(unit), axis=-1, keepdims=True)
    radius = rng.uniform(size=(num, batch, 1)) ** (1.0 / dim)
    radius[: num // 2] = 1.0
    steps = eps * radius * unit
    if kind == "l1":
        coord = rng.integers(0, dim, size=(num, batch))
        sign = rng.choice([-1.0, 1.0], size=(num, batch, 1))
        corners = np.eye(dim)[coord] * sign
        steps = np.concatenate([steps, eps * corners])
    points = center[None] + steps.reshape((steps.shape[0], *center.shape))
    return points.astype(np.float32)


def attack_points(fn, lo, hi, rows, seed, steps=30):
    """Points of the box ``[lo, hi]`` pushed towards the min and max of each row.

    Projected signed-gradient descent (PGD) on ``+/- rows[b, r] . fn(x)``, started at
    random corners: random points rarely come close to a tight bound, so this is
    what makes the soundness checks sensitive. Returns ``(2 * n_rows, batch, ...)``.
    """
    rows = np.asarray(rows, np.float32)  # (batch, n_rows, n_out)
    targets = np.concatenate([rows, -rows], axis=1).transpose(1, 0, 2)  # (2R, batch, n_out)
    start = box_vertices(np.random.default_rng(seed), lo, hi, targets.shape[0])
    lo, hi = jnp.asarray(lo), jnp.asarray(hi)

    def objective(points):
        flat = points.reshape((-1, *points.shape[2:]))
        out = fn(flat).reshape((*targets.shape[:2], -1))
        return jnp.sum(out * targets)

    def pgd_step(i, points):
        size = (hi - lo) * 0.25 * (1.0 - i / steps)  # shrinking step
        grad = jax.grad(objective)(points)
        return jnp.clip(points - size * jnp.sign(grad), lo, hi)

    run = jax.jit(lambda points: jax.lax.fori_loop(0, steps, pgd_step, points))
    return np.asarray(run(jnp.asarray(start)))


def eval_points(fn, points, spec=None):
    """``fn`` (and then ``spec``) at stacked points ``(num, batch, *x_shape)``.

    Returns ``(num, batch, n)``. Points are pushed through ``fn`` as one big batch,
    which is valid because examples are processed independently.
    """
    num, batch = points.shape[:2]
    out = np.asarray(fn(jnp.asarray(points).reshape((num * batch, *points.shape[2:]))))
    out = out.reshape((num, batch, -1))
    if spec is not None:
        out = np.einsum("bsk,nbk->nbs", np.asarray(spec), out)
    return out


def naive_spec_bounds(spec, lower, upper):
    """Interval arithmetic on ``spec @ [lower, upper]``: ``(batch, n_spec)`` each."""
    spec, lower, upper = np.asarray(spec), np.asarray(lower), np.asarray(upper)
    pos, neg = np.maximum(spec, 0.0), np.minimum(spec, 0.0)
    lo = np.einsum("bsk,bk->bs", pos, lower) + np.einsum("bsk,bk->bs", neg, upper)
    hi = np.einsum("bsk,bk->bs", pos, upper) + np.einsum("bsk,bk->bs", neg, lower)
    return lo, hi


# ----------------------------------------------------------------------- assertions


def assert_contains(lower, upper, values, what=""):
    """Every value (``(num, batch, n)``) lies in ``[lower, upper]`` (``(batch, n)``)."""
    lower, upper, values = np.asarray(lower), np.asarray(upper), np.asarray(values)
    tol = ATOL + RTOL * np.abs(values)
    below = lower[None] - values - tol
    above = values - upper[None] - tol
    if below.max() > 0:
        i = np.unravel_index(np.argmax(below), below.shape)
        raise AssertionError(
            f"{what}: sampled value {values[i]:.7g} below the lower bound "
            f"{lower[i[1:]]:.7g} (point {i[0]}, example {i[1]}, output {i[2]})"
        )
    if above.max() > 0:
        i = np.unravel_index(np.argmax(above), above.shape)
        raise AssertionError(
            f"{what}: sampled value {values[i]:.7g} above the upper bound "
            f"{upper[i[1:]]:.7g} (point {i[0]}, example {i[1]}, output {i[2]})"
        )


def assert_valid_bounds(b, shape, what="", upper=True):
    """Bounds have the expected shape, are finite and ordered."""
    lower, up = np.asarray(b.lower), np.asarray(b.upper)
    assert lower.shape == shape, f"{what}: lower has shape {lower.shape}, expected {shape}"
    assert up.shape == shape, f"{what}: upper has shape {up.shape}, expected {shape}"
    assert np.all(np.isfinite(lower)), f"{what}: non-finite lower bound {lower}"
    if upper:
        assert np.all(np.isfinite(up)), f"{what}: non-finite upper bound {up}"
        assert np.all(lower <= up + ATOL), f"{what}: lower > upper: {lower} vs {up}"


def count_primitive(jaxpr, name: str) -> int:
    """How many equations of ``jaxpr`` (sub-jaxprs included) apply primitive ``name``."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += count_primitive(sub, name)
    return count


def assert_close(actual, expected, what="", atol=ATOL, rtol=RTOL):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), atol=atol, rtol=rtol, err_msg=what
    )


def random_mlp(seed, sizes=(8, 30, 30, 5), nonnegative=False, bias_scale=0.3):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(sizes))
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = jax.random.normal(keys[2 * i], (a, b)) / np.sqrt(a)
        bias = jax.random.normal(keys[2 * i + 1], (b,)) * bias_scale
        layers.append((jnp.abs(w) if nonnegative else w, bias))

    def fn(x):
        for i, (w, bias) in enumerate(layers):
            x = x @ w + bias
            if i < len(layers) - 1:
                x = jax.nn.relu(x)
        return x

    return fn


class SmallConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(5, (3, 3))(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def small_cnn_case():
    x = jax.random.uniform(jax.random.PRNGKey(5), (3, 8, 8, 1))
    model = SmallConvNet()
    variables = model.init(jax.random.PRNGKey(6), x)
    return (lambda z: model.apply(variables, z)), jaxcert.LinfBall(x, 0.05, clip=(0.0, 1.0))


def spec_for(case, use_spec):
    """The margin specification of a model case, or None."""
    return jaxcert.margin_spec(case.y, case.num_out) if use_spec else None


def minimiser_linf(coef, lo, hi):
    """The box vertex minimising ``coef . x`` over ``[lo, hi]``."""
    return np.where(coef > 0, lo, hi)


def minimiser_l2(coef, center, eps):
    """``center - eps * coef / ||coef||_2`` per example."""
    norm = np.linalg.norm(coef.reshape(coef.shape[0], -1), axis=-1)
    return center - eps * coef / norm.reshape((-1,) + (1,) * (coef.ndim - 1))


def minimiser_l1(coef, center, eps):
    """``center - eps * sign(coef_i) e_i`` at the largest ``|coef_i|``, per example."""
    flat = coef.reshape(coef.shape[0], -1)
    i = np.argmax(np.abs(flat), axis=-1)
    step = np.eye(flat.shape[-1])[i] * np.sign(flat[np.arange(flat.shape[0]), i])[:, None]
    return center - eps * step.reshape(coef.shape)


def make_input_set(kind, x):
    if kind == "linf-clip":
        return jaxcert.LinfBall(jnp.asarray(x), 0.2, clip=(0.0, 1.0))
    if kind == "l2":
        return jaxcert.L2Ball(jnp.asarray(x), 0.3)
    return jaxcert.L1Ball(jnp.asarray(x), 0.3)


def attaining_input(kind, x, coef):
    """The point of the set minimising ``coef . x`` (``coef``: ``(batch, *x_shape)``)."""
    x, coef = np.asarray(x, np.float64), np.asarray(coef, np.float64)
    if kind == "linf-clip":
        point = minimiser_linf(coef, np.clip(x - 0.2, 0.0, 1.0), np.clip(x + 0.2, 0.0, 1.0))
    elif kind == "l2":
        point = minimiser_l2(coef, x, 0.3)
    else:
        point = minimiser_l1(coef, x, 0.3)
    return point.astype(np.float32)
