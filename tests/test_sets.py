"""Input sets: bounding boxes, exact concretisation, sampling, validation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    CLIP,
    EPS,
    assert_close,
    attaining_input,
    clipped_box,
    make_case,
    make_input_set,
)

import jaxcert
from jaxcert import Box, L0Ball, L1Ball, L2Ball, LinfBall

KEY = jax.random.PRNGKey(0)
# Shapes of the brute-force concretisation cases.
BATCH = 2
DIM = 6


def _random_problem(batch=3, dims=5, n_spec=4, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    center = jax.random.uniform(k1, (batch, dims))
    A = jax.random.normal(k2, (batch, n_spec, dims))
    bias = jax.random.normal(k3, (batch, n_spec))
    return center, A, bias


def _corner_extremes(lo, hi, A, bias):
    """Brute-force min/max of A x + b over all corners of [lo, hi] (exact for a box)."""
    dims = lo.shape[-1]
    corners = np.array(list(itertools.product([0, 1], repeat=dims)), dtype=np.float32)
    pts = lo[:, None, :] + corners[None] * (hi - lo)[:, None, :]  # (batch, 2^d, d)
    vals = np.einsum("bsd,bcd->bsc", np.asarray(A), pts) + np.asarray(bias)[..., None]
    return vals.min(-1), vals.max(-1)


@pytest.mark.parametrize("clip", [None, (0.0, 1.0), (0.2, 0.7)])
def test_linf_concretize_equals_brute_force_over_clipped_box(clip):
    center, A, bias = _random_problem()
    s = LinfBall(center, 0.3, clip=clip)
    lo, hi = s.bounding_box()
    if clip is not None:
        assert np.all(np.asarray(lo) >= clip[0]) and np.all(np.asarray(hi) <= clip[1])
    got_lo, got_hi = s.concretize(A, bias)
    want_lo, want_hi = _corner_extremes(np.asarray(lo), np.asarray(hi), A, bias)
    np.testing.assert_allclose(got_lo, want_lo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_hi, want_hi, rtol=1e-5, atol=1e-5)


def test_box_concretize_and_per_feature_eps():
    center, A, bias = _random_problem()
    eps = jnp.linspace(0.0, 0.5, center.shape[1])[None, :]
    s = LinfBall(center, eps)
    box = Box(center - eps, center + eps)
    np.testing.assert_allclose(s.concretize(A, bias)[0], box.concretize(A, bias)[0], rtol=1e-6)
    want_lo, _ = _corner_extremes(np.asarray(center - eps), np.asarray(center + eps), A, bias)
    np.testing.assert_allclose(box.concretize(A, bias)[0], want_lo, rtol=1e-5, atol=1e-5)


def test_l2_concretize_is_attained_by_the_dual_point():
    center, A, bias = _random_problem()
    eps = jnp.array([0.1, 0.5, 1.0])
    lo, hi = L2Ball(center, eps).concretize(A, bias)
    # x* = c - eps * A / ||A|| attains the minimum of A x + b over the ball.
    unit = A / jnp.linalg.norm(A, axis=-1, keepdims=True)
    x_min = center[:, None, :] - eps[:, None, None] * unit
    attained = jnp.einsum("bsd,bsd->bs", A, x_min) + bias
    np.testing.assert_allclose(lo, attained, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hi - lo, 2 * eps[:, None] * jnp.linalg.norm(A, axis=-1), rtol=1e-5)


def test_l1_concretize_is_attained_at_a_vertex():
    center, A, bias = _random_problem()
    lo, hi = L1Ball(center, 0.4).concretize(A, bias)
    # The minimum over the L1 ball is at +-eps on the coordinate with the largest |A|.
    i = jnp.argmax(jnp.abs(A), axis=-1)
    step = -0.4 * jnp.sign(jnp.take_along_axis(A, i[..., None], -1))[..., 0]
    attained = jnp.einsum("bsd,bd->bs", A, center) + bias
    attained = attained + step * jnp.take_along_axis(A, i[..., None], -1)[..., 0]
    np.testing.assert_allclose(lo, attained, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(hi) >= np.asarray(lo))


@pytest.mark.parametrize("cls", [L2Ball, L1Ball])
def test_norm_ball_with_clip_is_sound_and_no_looser_than_either_bound(cls):
    center, A, bias = _random_problem()
    ball = cls(center, 0.6)
    clipped = cls(center, 0.6, clip=(0.0, 1.0))
    lo, hi = clipped.concretize(A, bias)
    assert np.all(np.asarray(lo) >= np.asarray(ball.concretize(A, bias)[0]) - 1e-6)
    box_lo, _ = Box(*clipped.bounding_box()).concretize(A, bias)
    assert np.all(np.asarray(lo) >= np.asarray(box_lo) - 1e-6)
    pts = clipped.sample(KEY, 2000)
    vals = jnp.einsum("bsd,nbd->nbs", A, pts) + bias
    assert np.all(np.asarray(vals) >= np.asarray(lo) - 1e-5)
    assert np.all(np.asarray(vals) <= np.asarray(hi) + 1e-5)


@pytest.mark.parametrize(
    "make, norm",
    [
        (lambda c: LinfBall(c, 0.2, clip=(0.0, 1.0)), lambda d: jnp.max(jnp.abs(d), -1)),
        (lambda c: L2Ball(c, 0.2, clip=(0.0, 1.0)), lambda d: jnp.linalg.norm(d, axis=-1)),
        (lambda c: L1Ball(c, 0.2), lambda d: jnp.sum(jnp.abs(d), -1)),
    ],
)
def test_samples_lie_in_the_set(make, norm):
    center, _, _ = _random_problem()
    s = make(center)
    pts = s.sample(KEY, 500)
    assert pts.shape == (500, *center.shape)
    assert np.all(np.asarray(norm(pts - center)) <= 0.2 * (1 + 1e-5))
    lo, hi = s.bounding_box()
    assert np.all(np.asarray(pts) >= np.asarray(lo) - 1e-6)
    assert np.all(np.asarray(pts) <= np.asarray(hi) + 1e-6)


def test_vertices_are_corners():
    s = LinfBall(jnp.full((2, 4), 0.5), 0.25)
    v = np.asarray(s.vertices(KEY, 50))
    assert np.all(np.isclose(v, 0.25) | np.isclose(v, 0.75))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LinfBall(jnp.zeros((2, 3)), -0.1), "eps must be >= 0"),
        (lambda: LinfBall(jnp.zeros((2, 3)), jnp.nan), "eps must be finite"),
        (lambda: LinfBall(jnp.zeros((2, 3)), jnp.inf), "eps must be finite"),
        (lambda: LinfBall(jnp.zeros((2, 3)), jnp.zeros((4,))), "does not broadcast"),
        (lambda: LinfBall(jnp.zeros((2, 3)), 0.1, clip=(1.0, 0.0)), "clip low must be"),
        (lambda: L2Ball(jnp.zeros((2, 3)), -1.0), "eps must be >= 0"),
        (lambda: L2Ball(jnp.zeros((2, 3)), jnp.ones((3,))), r"shape \(batch,\)"),
        (lambda: Box(jnp.ones((2, 3)), jnp.zeros((2, 3))), "lower > upper"),
        (lambda: Box(jnp.ones((2, 3)), jnp.zeros((2, 4))), "same shape"),
    ],
)
def test_bad_sets_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_eps_under_jit_poisons_bounds_with_nan():
    @jax.jit
    def lower(eps):
        s = LinfBall(jnp.zeros((1, 2)), eps)
        return s.concretize(jnp.ones((1, 1, 2)))[0]

    assert np.isfinite(lower(0.1)).all()
    assert np.isnan(lower(-0.1)).all()


def test_concretize_rejects_mismatched_A():
    s = LinfBall(jnp.zeros((2, 3)), 0.1)
    with pytest.raises(ValueError, match="A must have shape"):
        s.concretize(jnp.ones((2, 1, 4)))


def test_sets_are_pytrees_through_jit_and_vmap():
    center, A, bias = _random_problem()
    s = LinfBall(center, 0.1, clip=(0.0, 1.0))
    eager = s.concretize(A, bias)
    jitted = jax.jit(lambda s: s.concretize(A, bias))(s)
    np.testing.assert_allclose(eager[0], jitted[0], rtol=1e-6)
    widths = jax.vmap(lambda e: LinfBall(center, e).concretize(A)[1].sum())(jnp.array([0.1, 0.2]))
    assert widths[1] > widths[0]


# ----------------------------------------------------------------------------- L0 ball


def _l0_brute_force(center, A, bias, k, clip):
    """min/max of A x + b over every way of moving <= k entries to an end of clip."""
    batch, dims = center.shape
    lows, highs = [], []
    for b in range(batch):
        vals = []
        for n in range(k + 1):
            for entries in itertools.combinations(range(dims), n):
                for ends in itertools.product(clip, repeat=n):
                    x = np.array(center[b])
                    x[list(entries)] = ends
                    vals.append(np.asarray(A[b]) @ x + np.asarray(bias[b]))
        vals = np.stack(vals)
        lows.append(vals.min(0))
        highs.append(vals.max(0))
    return np.stack(lows), np.stack(highs)


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_l0_concretize_equals_brute_force(k):
    center, A, bias = _random_problem()
    s = L0Ball(center, k)
    got_lo, got_hi = s.concretize(A, bias)
    want_lo, want_hi = _l0_brute_force(np.asarray(center), A, bias, k, (0.0, 1.0))
    np.testing.assert_allclose(got_lo, want_lo, atol=1e-5)
    np.testing.assert_allclose(got_hi, want_hi, atol=1e-5)


def test_l0_samples_and_vertices_change_at_most_k_entries():
    center, _, _ = _random_problem(batch=2, dims=6)
    s = L0Ball(center, 2, clip=(0.0, 1.0))
    for pts in (s.sample(KEY, 16), s.vertices(KEY, 16)):
        changed = np.sum(np.asarray(pts) != np.asarray(center)[None], axis=-1)
        assert changed.max() <= 2 and changed.max() >= 1
        assert np.all((np.asarray(pts) >= 0) & (np.asarray(pts) <= 1))
    lo, hi = s.bounding_box()
    assert np.all(np.asarray(lo) == 0) and np.all(np.asarray(hi) == 1)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda c: L0Ball(c, -1), "k must be an int"),
        (lambda c: L0Ball(c, 1.5), "k must be an int"),
        (lambda c: L0Ball(c, 1, clip=None), "needs a clip"),
        (lambda c: L0Ball(c + 2.0, 1), "inside clip"),
    ],
)
def test_bad_l0_balls_raise(make, match):
    center, _, _ = _random_problem()
    with pytest.raises(ValueError, match=match):
        make(center)


def test_l0_ball_is_a_pytree_with_static_k():
    center, A, bias = _random_problem()
    f = jax.jit(lambda s: s.concretize(A, bias)[0])
    np.testing.assert_allclose(f(L0Ball(center, 2)), L0Ball(center, 2).concretize(A, bias)[0])


# ------------------------------------------------------------------------- minimizers


@pytest.mark.parametrize(
    "make",
    [
        lambda c: Box(c - 0.2, c + 0.1),
        lambda c: LinfBall(c, 0.3, clip=(0.0, 1.0)),
        lambda c: L2Ball(c, 0.5),
        lambda c: L1Ball(c, 0.5),
        lambda c: L0Ball(c, 2),
    ],
)
def test_minimizer_lies_in_the_set_and_attains_the_lower_bound(make):
    center, A, bias = _random_problem()
    s = make(center)
    x_star = s.minimizer(A)
    assert x_star.shape == A.shape
    value = jnp.einsum("bsi,bsi->bs", A, x_star) + bias
    np.testing.assert_allclose(value, s.concretize(A, bias)[0], atol=1e-5)
    lo, hi = s.bounding_box()
    assert np.all(np.asarray(x_star) >= np.asarray(lo)[:, None] - 1e-6)
    assert np.all(np.asarray(x_star) <= np.asarray(hi)[:, None] + 1e-6)
    delta = np.asarray(x_star) - np.asarray(center)[:, None]
    if isinstance(s, L2Ball):
        assert np.linalg.norm(delta, axis=-1).max() <= 0.5 + 1e-5
    if isinstance(s, L1Ball):
        assert np.abs(delta).sum(-1).max() <= 0.5 + 1e-5
    if isinstance(s, L0Ball):
        assert (np.abs(delta) > 0).sum(-1).max() <= 2


def test_minimizer_of_clipped_norm_ball_is_refused():
    center, A, _ = _random_problem()
    with pytest.raises(NotImplementedError, match="without clip"):
        L2Ball(center, 0.5, clip=(0.0, 1.0)).minimizer(A)


@pytest.mark.parametrize("make_set", [jaxcert.LinfBall, jaxcert.L2Ball, jaxcert.L1Ball])
@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps_is_rejected(make_set, eps):
    with pytest.raises(ValueError, match="eps"):
        make_set(jnp.zeros((2, 3)), eps)


def test_negative_eps_entry_is_rejected():
    with pytest.raises(ValueError, match="eps"):
        jaxcert.LinfBall(jnp.zeros((2, 3)), jnp.array([0.1, -0.1, 0.1]))


def test_box_with_lower_above_upper_is_rejected():
    lower = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="lower"):
        jaxcert.Box(lower, lower.at[1, 2].set(-1e-3))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_linf_bounding_box_is_the_clipped_box(model):
    case = make_case(model)
    lo, hi = jaxcert.LinfBall(case.x, EPS, clip=CLIP).bounding_box()
    exp_lo, exp_hi = clipped_box(case.x, EPS)
    assert_close(lo, exp_lo, "bounding_box lower")
    assert_close(hi, exp_hi, "bounding_box upper")


def all_corners(lo, hi):
    """Every corner of each example's box: ``(2**n, batch, *x_shape)``."""
    n = int(np.prod(lo.shape[1:]))
    bits = np.array(list(itertools.product([0, 1], repeat=n)), dtype=bool)
    bits = bits.reshape((2**n, 1, *lo.shape[1:]))
    return np.where(bits, hi[None], lo[None])


def brute_force_linear(A, bias, points):
    """min/max over ``points`` of ``A x + bias``: ``(batch, n_spec)`` each."""
    A2 = A.reshape(A.shape[0], A.shape[1], -1)
    flat = points.reshape(points.shape[0], points.shape[1], -1)
    values = np.einsum("bsi,nbi->nbs", A2, flat) + bias[None]
    return values.min(0), values.max(0)


@pytest.mark.parametrize("x_shape", [(4,), (6,), (2, 3)])
def test_linf_clip_concretize_matches_brute_force(x_shape):
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(BATCH, *x_shape)).astype(np.float32)
    x[0] = np.clip(x[0], 0.0, 0.1)  # near the lower clip edge
    x[1].flat[0] = 0.95  # near the upper one
    A = rng.normal(size=(BATCH, 3, *x_shape)).astype(np.float32)
    bias = rng.normal(size=(BATCH, 3)).astype(np.float32)
    s = jaxcert.LinfBall(jnp.asarray(x), 0.15, clip=(0.0, 1.0))
    lower, upper = s.concretize(jnp.asarray(A), jnp.asarray(bias))
    corners = all_corners(np.clip(x - 0.15, 0.0, 1.0), np.clip(x + 0.15, 0.0, 1.0))
    exp_lower, exp_upper = brute_force_linear(A, bias, corners)
    assert lower.shape == upper.shape == (BATCH, 3)
    assert_close(lower, exp_lower, "concretize lower vs brute force")
    assert_close(upper, exp_upper, "concretize upper vs brute force")
    no_bias = s.concretize(jnp.asarray(A))
    assert_close(no_bias[0], exp_lower - bias, "concretize without bias (lower)")
    assert_close(no_bias[1], exp_upper - bias, "concretize without bias (upper)")


def test_box_concretize_matches_brute_force():
    rng = np.random.default_rng(4)
    lo = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    hi = (lo + rng.uniform(size=(BATCH, DIM))).astype(np.float32)
    A = rng.normal(size=(BATCH, 3, DIM)).astype(np.float32)
    bias = rng.normal(size=(BATCH, 3)).astype(np.float32)
    lower, upper = jaxcert.Box(jnp.asarray(lo), jnp.asarray(hi)).concretize(
        jnp.asarray(A), jnp.asarray(bias)
    )
    exp_lower, exp_upper = brute_force_linear(A, bias, all_corners(lo, hi))
    assert_close(lower, exp_lower, "Box concretize lower")
    assert_close(upper, exp_upper, "Box concretize upper")


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_norm_ball_concretize_is_attained(kind):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    A = rng.normal(size=(BATCH, 3, DIM)).astype(np.float32)
    bias = rng.normal(size=(BATCH, 3)).astype(np.float32)
    lower, upper = make_input_set(kind, x).concretize(jnp.asarray(A), jnp.asarray(bias))
    for row in range(3):
        coef = A[:, row]
        value_min = np.sum(coef * attaining_input(kind, x, coef), -1) + bias[:, row]
        value_max = np.sum(coef * attaining_input(kind, x, -coef), -1) + bias[:, row]
        assert_close(lower[:, row], value_min, f"{kind} concretize lower, row {row}")
        assert_close(upper[:, row], value_max, f"{kind} concretize upper, row {row}")


# ------------------------------------------------- what the domains ask of a set

SETS = {
    "box": lambda x: Box(x - 0.1, x + jnp.linspace(0.0, 0.2, x.shape[-1])),
    "linf": lambda x: LinfBall(x, 0.1, clip=(0.0, 1.0)),
    "linf-per-channel": lambda x: LinfBall(x, jnp.linspace(0.05, 0.2, x.shape[-1])),
    "l2": lambda x: L2Ball(x, 0.3),
    "l1": lambda x: L1Ball(x, 0.4, clip=(0.0, 1.0)),
    "l0": lambda x: L0Ball(jnp.clip(x, 0.0, 1.0), 2),
}


@pytest.mark.parametrize("kind", sorted(SETS))
def test_enclosing_l2_ball_contains_the_set(kind):
    # Two examples and two channels: a per-channel eps of shape (2,) must not be read as
    # one radius per example.
    x = jax.random.uniform(KEY, (2, 3, 2))
    s = SETS[kind](x)
    center, radius = s.enclosing_l2_ball()
    assert center.shape == x.shape and radius.shape == (2,)
    np.testing.assert_allclose(center, s.nominal())
    points = [s.sample(jax.random.PRNGKey(1), 300)]
    if hasattr(s, "vertices"):
        points.append(s.vertices(jax.random.PRNGKey(2), 300))
    points = jnp.concatenate(points)
    dist = jnp.sqrt(jnp.sum((points - center[None]) ** 2, axis=(2, 3)))
    assert np.all(np.asarray(dist) <= np.asarray(radius)[None] * (1 + 1e-6) + 1e-6), kind


def test_nominal_points_and_coordinate_radii():
    x = jnp.array([[0.2, 0.5]])
    box = Box(x - 0.1, x + 0.3)
    np.testing.assert_allclose(box.nominal(), x + 0.1)
    np.testing.assert_allclose(box.coordinate_radius(), [[0.2, 0.2]], rtol=1e-6)
    clipped = LinfBall(x, 0.3, clip=(0.0, 1.0))
    np.testing.assert_allclose(clipped.nominal(), x)
    # The margin papers start from eps, whatever the clip range.
    np.testing.assert_allclose(clipped.coordinate_radius(), [[0.3, 0.3]])
    assert box.is_box and clipped.is_box
    assert not L2Ball(x, 0.1).is_box and not L0Ball(x, 1).is_box


@pytest.mark.parametrize("kind", sorted(SETS))
def test_concretize_patches_equals_dense_concretization(kind):
    # Patch rows on an NHWC input: the windowed form (boxes) or the dense fallback must
    # give what concretize gives on the same rows written out densely.
    from jaxcert.patch_rows import PatchRows

    x = jax.random.uniform(KEY, (2, 5, 4, 2))
    s = SETS[kind](x)
    rows = jnp.array([[-1, 0, 1], [2, 3, 4]])  # window rows per patch row (one off the edge)
    cols = jnp.array([[0, 1], [2, 3]])
    coef = jax.random.normal(jax.random.PRNGKey(3), (2, 2, 3, 2, 2))
    coef = coef.at[:, 0, 0].set(0.0)  # the out-of-range row carries zeros
    patches = PatchRows(coef, rows, cols)
    bias = jnp.array([[0.5, -1.0], [0.0, 2.0]])
    lower, upper = s.concretize_patches(patches, bias)
    dense = s.concretize(patches.dense(s.shape), bias)
    np.testing.assert_allclose(lower, dense[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upper, dense[1], rtol=1e-5, atol=1e-5)


def test_norm_balls_by_name():
    from jaxcert.sets import NORM_BALLS, norm_ball

    x = jnp.zeros((1, 2))
    assert isinstance(norm_ball("l2", x, 0.5), L2Ball)
    assert norm_ball("linf", x, 0.5, (0.0, 1.0)).clip == (0.0, 1.0)
    assert set(NORM_BALLS) == {"linf", "l2", "l1"}
    with pytest.raises(ValueError, match="unknown norm 'l7'"):
        norm_ball("l7", x, 0.5)


# ------------------------------------------------------- bad input (issue 13)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: LinfBall(x, [-0.3]),
        lambda x: LinfBall(x, (-0.3,)),
        lambda x: L2Ball(x, [-1.0]),
        lambda x: Box(list(map(list, np.asarray(x) + 0.1)), list(map(list, np.asarray(x)))),
    ],
    ids=["linf-list", "linf-tuple", "l2-list", "box-lists"],
)
def test_sequences_are_validated_like_arrays(make):
    # A negative eps given as a list once skipped every check and certified a false margin.
    with pytest.raises(ValueError, match="eps|lower > upper"):
        make(jnp.array([[0.5, 0.2]]))


def test_sequences_become_arrays_and_bound_as_arrays():
    fn = lambda z: z @ jnp.array([[1.0], [-1.0]])  # noqa: E731
    from_list = jaxcert.bound(fn, LinfBall([[0.5, 0.2]], [0.1]), "ibp")
    from_array = jaxcert.bound(fn, LinfBall(jnp.array([[0.5, 0.2]]), 0.1), "ibp")
    np.testing.assert_allclose(from_list.lower, from_array.lower)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["linf", "l2", "l0"])
def test_non_finite_centers_are_refused(kind, bad):
    x = jnp.array([[bad, 0.5]])
    make = {"linf": lambda: LinfBall(x, 0.1, clip=(0, 1)), "l2": lambda: L2Ball(x, 0.1)}
    make["l0"] = lambda: L0Ball(x, 1)
    with pytest.raises(ValueError, match="center must be finite"):
        make[kind]()


def test_non_finite_centers_under_jit_give_nan_not_a_clipped_bound():
    # Under jit the values are unknown: inf clipped to [0, 1] must not pass for 1.0.
    fn = lambda z: 2.0 * z  # noqa: E731
    b = jax.jit(lambda x: jaxcert.bound(fn, LinfBall(x, 0.1, clip=(0.0, 1.0)), "crown"))(
        jnp.array([[jnp.inf, 0.5]])
    )
    assert np.all(np.isnan(np.asarray(b.lower)))


def test_nan_clip_is_refused():
    with pytest.raises(ValueError, match="clip must not be NaN"):
        LinfBall(jnp.zeros((1, 2)), 0.1, clip=(float("nan"), 1.0))


def test_overflowing_bounds_are_infinite_not_nan():
    # eps = 3e38 keeps the box finite but the intervals overflow: inf - inf gave NaN.
    fn = lambda z: jax.nn.relu(z @ jnp.array([[1.0, -1.0], [2.0, 1.0]])) @ jnp.ones((2, 1))  # noqa: E731
    s = LinfBall(jnp.array([[0.5, 0.2]]), 3e38)
    for method in ("ibp", "crown-ibp", "crown"):
        b = jaxcert.bound(fn, s, method)
        assert float(b.lower[0, 0]) == -np.inf and float(b.upper[0, 0]) == np.inf, method


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_inputs_are_refused_clearly(dtype):
    x = jnp.array([[0.5, 0.2]], dtype)
    s = LinfBall(x, 0.1)
    with pytest.raises(ValueError, match="float32 or float64"):
        jaxcert.bound(lambda z: z @ jnp.ones((2, 3), dtype), s, "crown", spec=jnp.ones((1, 1, 3)))


def test_low_precision_inside_the_function_is_refused_clearly():
    x = jnp.array([[0.5, 0.2]])
    fn = lambda z: z.astype(jnp.bfloat16) @ jnp.ones((2, 3), jnp.bfloat16)  # noqa: E731
    with pytest.raises(jaxcert.UnsupportedOperation, match="bfloat16"):
        jaxcert.bound(fn, LinfBall(x, 0.1), "ibp")


def test_an_empty_batch_is_refused_clearly():
    with pytest.raises(ValueError, match="no examples"):
        jaxcert.bound(lambda z: 2.0 * z, LinfBall(jnp.zeros((0, 3)), 0.1), "crown")
