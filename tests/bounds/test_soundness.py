"""Soundness of every bound method by sampling, and tightness orderings.

A bound is sound when no point of the input set maps outside ``[lower, upper]``.
We check that with uniform points, with corners of the (clipped) box (where piecewise
linear networks take their extremes), with points a PGD attack pushed towards each
output's min and max (so that tight bounds are actually tested), and with the set's
own ``sample``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    ALL_METHODS,
    ATOL,
    CLIP,
    EPS,
    MODEL_NAMES,
    RTOL,
    assert_close,
    assert_contains,
    assert_valid_bounds,
    attack_points,
    box_points,
    box_vertices,
    clipped_box,
    eval_points,
    linf_bound,
    make_case,
    naive_spec_bounds,
    norm_ball_points,
    run_bound,
    spec_for,
)

import jaxcert

NUM_POINTS = 48
# "crown-opt" compiles an optimisation loop on every call (seconds each), so it runs
# on fewer cases than the other methods.
FAST_METHODS = tuple(m for m in ALL_METHODS if m != "crown-opt")


def box_samples(lo, hi, seed):
    """Uniform points and random corners of the box: ``(2 * NUM_POINTS, batch, ...)``."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [box_points(rng, lo, hi, NUM_POINTS), box_vertices(rng, lo, hi, NUM_POINTS)]
    )


def out_dim(case, use_spec):
    return case.num_out - 1 if use_spec else case.num_out


@functools.cache
def linf_test_points(model):
    """Points of a model case's clipped Linf ball, drawn once: uniform points, random
    corners, and attack points pushed to the min and max of every output and margin."""
    case = make_case(model)
    lo, hi = clipped_box(case.x, EPS)
    identity = np.broadcast_to(np.eye(case.num_out), (case.x.shape[0], case.num_out, case.num_out))
    rows = np.concatenate([identity, spec_for(case, True)], axis=1)
    attacked = attack_points(case.fn, lo, hi, rows, seed=1)
    return np.concatenate([box_samples(lo, hi, seed=1), attacked])


# Every model x method x (with / without spec), except the two optimising methods
# without a spec off the MLP: their compile time dominates the suite, and they are
# used with a spec (margins) in practice.
LINF_CASES = [
    (model, method, use_spec)
    for model in MODEL_NAMES
    for method in ALL_METHODS
    for use_spec in (False, True)
    if use_spec or model == "mlp" or not method.endswith("-opt")
]


@pytest.mark.parametrize(
    ("model", "method", "use_spec"),
    LINF_CASES,
    ids=[f"{m}-{meth}-{'spec' if sp else 'nospec'}" for m, meth, sp in LINF_CASES],
)
def test_linf_bounds_are_sound(model, method, use_spec):
    case = make_case(model)
    b = linf_bound(model, method, use_spec)
    what = f"{model}/{method}/{'spec' if use_spec else 'nospec'}"
    assert_valid_bounds(b, (case.x.shape[0], out_dim(case, use_spec)), what)
    values = eval_points(case.fn, linf_test_points(model), spec_for(case, use_spec))
    assert_contains(b.lower, b.upper, values, what)


def make_set(kind, x):
    if kind == "linf":
        return jaxcert.LinfBall(x, EPS, clip=CLIP)
    if kind == "box":
        return jaxcert.Box(x - 0.1, x + 0.05)
    if kind == "l2":
        return jaxcert.L2Ball(x, 0.3)
    return jaxcert.L1Ball(x, 0.5)


@pytest.mark.parametrize("kind", ["linf", "box", "l2", "l1"])
def test_set_samples_lie_in_the_set_and_in_the_bounds(kind):
    case = make_case("mlp")
    s = make_set(kind, case.x)
    points = np.asarray(s.sample(jax.random.PRNGKey(0), NUM_POINTS))
    assert points.shape == (NUM_POINTS, *case.x.shape), f"sample shape {points.shape}"
    step = (points - np.asarray(case.x)[None]).reshape(NUM_POINTS, case.x.shape[0], -1)
    if kind == "linf":
        lo, hi = clipped_box(case.x, EPS)
        inside = (points >= lo - 1e-6) & (points <= hi + 1e-6)
    elif kind == "box":
        inside = (step >= -0.1 - 1e-6) & (step <= 0.05 + 1e-6)
    elif kind == "l2":
        inside = np.linalg.norm(step, axis=-1) <= 0.3 + 1e-6
    else:
        inside = np.sum(np.abs(step), axis=-1) <= 0.5 + 1e-6
    assert np.all(inside), f"{kind}: sample() returned points outside the set"
    spec = spec_for(case, True)
    b = run_bound(case.fn, s, "crown", spec=spec)
    assert_contains(b.lower, b.upper, eval_points(case.fn, points, spec), f"{kind} samples")


@pytest.mark.parametrize("method", FAST_METHODS)
def test_per_feature_eps_is_sound(method):
    case = make_case("cnn")
    eps = np.linspace(0.0, 0.1, case.x.shape[-1], dtype=np.float32)  # one per channel
    s = jaxcert.LinfBall(case.x, jnp.asarray(eps), clip=CLIP)
    spec = spec_for(case, True)
    b = run_bound(case.fn, s, method, spec=spec)
    points = box_samples(*clipped_box(case.x, eps), seed=2)
    values = eval_points(case.fn, points, spec)
    assert_contains(b.lower, b.upper, values, f"per-feature eps/{method}")


@pytest.mark.parametrize(
    "make_set",
    [
        lambda x: jaxcert.LinfBall(x, jnp.array([[0.0], [0.1]]), clip=CLIP),
        lambda x: jaxcert.L2Ball(x, jnp.array([0.0, 0.3])),
    ],
    ids=["linf", "l2"],
)
@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_per_example_eps_keeps_examples_independent(make_set, method):
    # Example 0 has radius 0: its bounds are its output, whatever example 1 does.
    case = make_case("mlp")
    spec = spec_for(case, True)
    b = run_bound(case.fn, make_set(case.x), method, spec=spec)
    value = eval_points(case.fn, np.asarray(case.x)[None], spec)[0, 0]
    assert_close(b.lower[0], value, f"{method}: radius-0 example, lower", atol=1e-5)
    assert_close(b.upper[0], value, f"{method}: radius-0 example, upper", atol=1e-5)
    assert np.all(np.asarray(b.upper[1] - b.lower[1]) > 1e-3), "radius > 0 but no width"


@pytest.mark.parametrize("method", FAST_METHODS)
def test_box_set_is_sound(method):
    case = make_case("mlp")
    x = np.asarray(case.x)
    lower = np.clip(x - 0.1, 0.0, 1.0)
    upper = np.clip(x + np.linspace(0.0, 0.2, x.shape[-1], dtype=np.float32), 0.0, 1.0)
    s = jaxcert.Box(jnp.asarray(lower), jnp.asarray(upper))
    spec = spec_for(case, True)
    b = run_bound(case.fn, s, method, spec=spec)
    values = eval_points(case.fn, box_samples(lower, upper, seed=3), spec)
    assert_contains(b.lower, b.upper, values, f"Box/{method}")


NORM_CASES = [
    (model, method, norm)
    for norm in ("l2", "l1")
    for model in ("mlp", "resnet")
    for method in ALL_METHODS
    if method != "crown-opt" or (model, norm) == ("mlp", "l2")
]


@pytest.mark.parametrize(("model", "method", "norm"), NORM_CASES)
def test_norm_ball_bounds_are_sound(model, method, norm):
    case = make_case(model)
    eps = 0.3 if norm == "l2" else 0.5
    ball = jaxcert.L2Ball if norm == "l2" else jaxcert.L1Ball
    s = ball(case.x, eps)
    use_spec = (model, norm) != ("mlp", "l1")  # one case without a spec
    spec = spec_for(case, use_spec)
    b = run_bound(case.fn, s, method, spec=spec)
    what = f"{model}/{method}/{norm}"
    assert_valid_bounds(b, (case.x.shape[0], out_dim(case, use_spec)), what)

    points = norm_ball_points(np.random.default_rng(4), case.x, eps, NUM_POINTS, norm)
    assert_contains(b.lower, b.upper, eval_points(case.fn, points, spec), what)


def captured_preactivations(case, x):
    """Outputs of each Conv/Dense layer feeding a ReLU, in order (MLP and CNN only)."""
    _, state = case.module.apply(case.variables, x, capture_intermediates=True, mutable=True)
    inter = state["intermediates"]
    layers = [n for n in inter if n.startswith(("Conv", "Dense"))]
    layers.sort(key=lambda n: (n.startswith("Dense"), int(n.split("_")[1])))
    return [inter[n]["__call__"][0] for n in layers[:-1]]  # the last layer is the output


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "fastlin"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_intermediate_bounds_contain_preactivations(model, method):
    case = make_case(model)
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    b = run_bound(case.fn, s, method, spec=spec_for(case, True), return_intermediate=True)
    assert b.intermediate is not None, "return_intermediate=True gave no intermediate bounds"
    assert list(b.intermediate) == ["relu_0", "relu_1"], f"names {list(b.intermediate)}"

    points = linf_test_points(model)
    num, batch = points.shape[:2]
    pre = captured_preactivations(case, points.reshape((num * batch, *points.shape[2:])))
    for name, values in zip(b.intermediate, pre, strict=True):
        bounds = b.intermediate[name]
        shape = (batch, *values.shape[1:])
        assert bounds.lower.shape == shape, f"{name}: shape {bounds.lower.shape} != {shape}"
        assert_contains(
            bounds.lower.reshape((batch, -1)),
            bounds.upper.reshape((batch, -1)),
            values.reshape((num, batch, -1)),
            f"{model}/{method}/{name}",
        )


@pytest.mark.parametrize("method", ["crown-ibp", "cap-ibp", "crown"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_caller_supplied_slopes_are_sound(model, method):
    case = make_case(model)
    s = jaxcert.LinfBall(case.x, 2 * EPS, clip=CLIP)
    spec = spec_for(case, True)
    names = run_bound(case.fn, s, "crown", spec=spec, return_intermediate=True).intermediate
    rng = np.random.default_rng(7)
    slopes = {name: jnp.asarray(rng.uniform(size=names[name].lower.shape)) for name in names}
    b = run_bound(case.fn, s, method, spec=spec, slopes=slopes)
    what = f"{model}/{method}/random slopes"
    assert_valid_bounds(b, (case.x.shape[0], case.num_out - 1), what)
    points = box_samples(*clipped_box(case.x, 2 * EPS), seed=8)
    assert_contains(b.lower, b.upper, eval_points(case.fn, points, spec), what)


@pytest.mark.parametrize("steps", [1, 3])
def test_crown_ibp_opt_multistep_is_sound(steps):
    case = make_case("cnn")
    s = jaxcert.LinfBall(case.x, EPS, clip=CLIP)
    spec = spec_for(case, True)
    b = run_bound(case.fn, s, "crown-ibp-opt", spec=spec, steps=steps, step_size=0.1)
    points = linf_test_points("cnn")
    assert_contains(b.lower, b.upper, eval_points(case.fn, points, spec), f"steps={steps}")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_crown_opt_no_looser_than_crown(model):
    crown = np.asarray(linf_bound(model, "crown", True).lower)
    opt = np.asarray(linf_bound(model, "crown-opt", True).lower)
    assert np.all(opt >= crown - ATOL - RTOL * np.abs(crown)), (
        f"{model}: crown-opt lower {opt} is below crown lower {crown}"
    )


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_ibp_elision_no_looser_than_interval_arithmetic(model):
    case = make_case(model)
    plain = linf_bound(model, "ibp", False)
    elided = linf_bound(model, "ibp", True)
    naive_lo, naive_hi = naive_spec_bounds(spec_for(case, True), plain.lower, plain.upper)
    naive_lo, naive_hi = np.asarray(naive_lo), np.asarray(naive_hi)
    lo, hi = np.asarray(elided.lower), np.asarray(elided.upper)
    assert np.all(lo >= naive_lo - ATOL - RTOL * np.abs(naive_lo)), (
        f"{model}: IBP with spec lower {lo} looser than C @ [l, u] lower {naive_lo}"
    )
    assert np.all(hi <= naive_hi + ATOL + RTOL * np.abs(naive_hi)), (
        f"{model}: IBP with spec upper {hi} looser than C @ [l, u] upper {naive_hi}"
    )


def test_zero_eps_gives_the_point_value():
    case = make_case("resnet")
    s = jaxcert.LinfBall(case.x, 0.0, clip=CLIP)
    out = case.fn(case.x)
    for method in ("ibp", "crown-ibp", "crown"):
        b = run_bound(case.fn, s, method)
        assert_close(b.lower, out, f"{method}: eps=0 lower", atol=1e-4)
        assert_close(b.upper, out, f"{method}: eps=0 upper", atol=1e-4)
