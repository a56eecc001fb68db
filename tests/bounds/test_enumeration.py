"""Bounds against brute force on tiny networks (2 or 3 inputs).

A fine grid over the input set gives values of the true range of every output (and
of every margin); a sound bound must contain the grid's min and max. The grid
includes the box corners, where piecewise-linear networks often take their extremes.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ALL_METHODS, MLP, assert_contains, init_variables, run_bound

import jaxcert

BATCH = 3
NUM_OUT = 3
GRID = {2: 200, 3: 41}  # points per axis for 2-D and 3-D inputs
OPT_TOL = 1e-6


@functools.cache
def tiny_network(dim: int, seed: int):
    """A random MLP with two hidden ReLU layers (widths 7 and 6) and ``dim`` inputs."""
    module = MLP(features=(7, 6), num_out=NUM_OUT)
    variables = init_variables(module, (dim,), seed=100 + seed)
    rng = np.random.default_rng(100 + seed)
    x = rng.uniform(size=(BATCH, dim)).astype(np.float32)
    x[0, 0], x[1, -1] = 0.02, 0.97  # centres near the edge of [0, 1]: clipping matters
    y = rng.integers(0, NUM_OUT, size=BATCH)
    return (lambda z: module.apply(variables, z)), x, jnp.asarray(y)


def grid_over(lo, hi, dim):
    """Grid points of each example's box: ``(num, batch, dim)``, corners included."""
    t = np.linspace(0.0, 1.0, GRID[dim])
    unit = np.stack([a.ravel() for a in np.meshgrid(*([t] * dim), indexing="ij")], axis=-1)
    return (lo[None] + unit[:, None, :] * (hi - lo)[None]).astype(np.float32)


def make_set(kind, x):
    """The input set, a box ``(lo, hi)`` around it, and the norm radius (None for boxes)."""
    if kind == "linf-clip":
        lo, hi = np.clip(x - 0.15, 0.0, 1.0), np.clip(x + 0.15, 0.0, 1.0)
        return jaxcert.LinfBall(jnp.asarray(x), 0.15, clip=(0.0, 1.0)), lo, hi, None
    if kind == "box":
        lo, hi = x - 0.1, x + np.array([0.05, 0.2, 0.1], np.float32)[: x.shape[-1]]
        return jaxcert.Box(jnp.asarray(lo), jnp.asarray(hi)), lo, hi, None
    eps = {"l2": 0.2, "l1": 0.25}[kind]
    ball = jaxcert.L2Ball if kind == "l2" else jaxcert.L1Ball
    return ball(jnp.asarray(x), eps), x - eps, x + eps, eps


def inside_mask(kind, points, x, eps):
    """Which grid points ``(num, batch, dim)`` lie in the set: ``(num, batch)``."""
    if kind == "l2":
        return np.linalg.norm(points - x[None], axis=-1) <= eps
    if kind == "l1":
        return np.sum(np.abs(points - x[None]), axis=-1) <= eps
    return np.ones(points.shape[:2], bool)


def true_extremes(fn, points, inside, spec):
    """Grid min and max of each spec row over the points inside the set: ``(batch, n)``."""
    num, batch, dim = points.shape
    out = np.asarray(fn(jnp.asarray(points.reshape((-1, dim))))).reshape((num, batch, -1))
    out = np.einsum("bsk,nbk->nbs", np.asarray(spec), out)
    mask = inside[..., None]
    return np.min(np.where(mask, out, np.inf), 0), np.max(np.where(mask, out, -np.inf), 0)


# (input dim, seed, set kind). Every case costs one "crown-opt" compile; the 2-D
# network is shared by three set kinds, so its eagerly compiled ops are reused.
CASES = [(2, 0, "linf-clip"), (2, 0, "l2"), (2, 0, "l1"), (3, 1, "box")]
CASE_IDS = [f"{d}d-seed{s}-{k}" for d, s, k in CASES]


class Enumerated:
    """A tiny network, an input set, and grid extremes of every spec row.

    The spec stacks the identity (each output) on the margins (each ``e_y - e_j``),
    so one bound call covers both. Bounds are computed once per method.
    """

    def __init__(self, dim, seed, kind):
        self.fn, x, y = tiny_network(dim, seed)
        self.set, lo, hi, eps = make_set(kind, x)
        points = grid_over(lo, hi, dim)
        mask = inside_mask(kind, points, x, eps)
        assert np.all(np.any(mask, axis=0)), "grid has no point inside the set"
        identity = jnp.broadcast_to(jnp.eye(NUM_OUT), (BATCH, NUM_OUT, NUM_OUT))
        self.spec = jnp.concatenate([identity, jaxcert.margin_spec(y, NUM_OUT)], axis=1)
        self.grid_min, self.grid_max = true_extremes(self.fn, points, mask, self.spec)
        self._bounds = {}

    def bounds(self, method):
        if method not in self._bounds:
            self._bounds[method] = run_bound(self.fn, self.set, method, spec=self.spec)
        return self._bounds[method]


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def enumerated(request):
    return Enumerated(*request.param)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bounds_contain_grid_extremes(enumerated, method):
    b = enumerated.bounds(method)
    assert np.all(np.isfinite(b.lower)) and np.all(np.isfinite(b.upper)), f"{method}: not finite"
    extremes = np.stack([enumerated.grid_min, enumerated.grid_max])
    assert_contains(b.lower, b.upper, extremes, method)


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if not m.endswith("-opt")])
def test_bounds_without_spec_contain_grid_extremes(enumerated, method):
    b = run_bound(enumerated.fn, enumerated.set, method)  # bounds of each output
    extremes = np.stack([enumerated.grid_min, enumerated.grid_max])[:, :, :NUM_OUT]
    assert_contains(b.lower, b.upper, extremes, f"{method} without spec")


def test_crown_opt_no_looser_than_crown(enumerated):
    crown, opt = enumerated.bounds("crown"), enumerated.bounds("crown-opt")
    lo, opt_lo = np.asarray(crown.lower), np.asarray(opt.lower)
    hi, opt_hi = np.asarray(crown.upper), np.asarray(opt.upper)
    assert np.all(opt_lo >= lo - OPT_TOL), f"crown-opt lower {opt_lo} < crown lower {lo}"
    assert np.all(opt_hi <= hi + OPT_TOL), f"crown-opt upper {opt_hi} > crown upper {hi}"
