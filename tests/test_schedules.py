"""Tests of jaxcert.schedules: eps/kappa/beta/lambda ramps, learning rates, optimisers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcert.schedules import (
    Schedules,
    adaptive_lambda,
    eps_schedule,
    linear_ramp,
    make_learning_rate,
    make_optimizer,
    mixed_schedules,
    smooth_ramp,
)


def _f(value) -> float:
    return float(np.asarray(value))


# --------------------------------------------------------------------------- ramps


def test_linear_ramp_key_steps():
    kw = dict(start_value=1.0, end_value=3.0, start_step=10, end_step=20)
    for step, want in [(0, 1.0), (10, 1.0), (12, 1.4), (15, 2.0), (19, 2.8), (20, 3.0), (99, 3.0)]:
        assert _f(linear_ramp(step, **kw)) == pytest.approx(want, abs=1e-6), step
    assert linear_ramp(15, **kw).dtype == jnp.float32
    # Decreasing ramps work alike (kappa 1 -> 0).
    assert _f(linear_ramp(15, start_value=1.0, end_value=0.0, start_step=10, end_step=20)) == 0.5


def test_linear_ramp_jump_when_window_is_empty():
    kw = dict(start_value=0.0, end_value=2.0, start_step=7, end_step=7)
    assert _f(linear_ramp(6, **kw)) == 0.0
    assert _f(linear_ramp(7, **kw)) == 2.0
    assert _f(linear_ramp(50, **kw)) == 2.0


def test_eps_schedule_warmup_ramp_and_hold():
    kw = dict(eps=0.4, warmup_steps=100, ramp_steps=100)
    for step, want in [(0, 0.0), (99, 0.0), (100, 0.0), (150, 0.2), (175, 0.3), (200, 0.4)]:
        assert _f(eps_schedule(step, **kw)) == pytest.approx(want, abs=1e-7), step
    # The target is reached exactly, not up to rounding.
    assert _f(eps_schedule(200, **kw)) == np.float32(0.4)
    assert _f(eps_schedule(10**6, **kw)) == np.float32(0.4)
    # A non-zero start value during warm-up.
    assert _f(eps_schedule(50, start=0.1, **kw)) == pytest.approx(0.1)
    assert _f(eps_schedule(150, start=0.1, **kw)) == pytest.approx(0.25)
    # No ramp: a jump at the end of warm-up.
    assert _f(eps_schedule(9, eps=0.3, warmup_steps=10, ramp_steps=0)) == 0.0
    assert _f(eps_schedule(10, eps=0.3, warmup_steps=10, ramp_steps=0)) == np.float32(0.3)


@pytest.mark.parametrize("shape", ["linear", "smooth"])
def test_eps_schedule_is_monotone_and_bounded(shape):
    steps = jnp.arange(0, 400)
    values = np.asarray(
        eps_schedule(steps, eps=8 / 255, warmup_steps=50, ramp_steps=300, shape=shape)
    )
    assert np.all(np.diff(values) >= 0)
    assert values[0] == 0.0 and values[-1] == np.float32(8 / 255)
    assert np.all(values <= np.float32(8 / 255))


def _auto_lirpa_smoothed(step, init_step, final_step, final_value, mid_point, beta):
    """Float64 reference: the alpha * (step - init) ** beta form of auto_LiRPA / IBP."""
    mid_step = int((final_step - init_step) * mid_point) + init_step
    t = (mid_step - init_step) ** (beta - 1.0)
    alpha = final_value / ((final_step - mid_step) * beta * t + (mid_step - init_step) * t)
    mid_value = alpha * (mid_step - init_step) ** beta
    if step <= init_step:
        return 0.0
    if step < mid_step:
        return alpha * (step - init_step) ** beta
    slope = (final_value - mid_value) / (final_step - mid_step)
    return min(mid_value + slope * (step - mid_step), final_value)


def test_smooth_ramp_matches_reference_formula():
    # mid_point * length is an integer here, so auto_LiRPA's rounding does not enter.
    kw = dict(start_value=0.0, end_value=0.3, start_step=100, end_step=1100)
    for beta, mid in [(4.0, 0.25), (2.0, 0.5), (3.0, 0.4)]:
        for step in [0, 100, 150, 250, 349, 350, 351, 500, 600, 1000, 1099, 1100, 2000]:
            got = _f(smooth_ramp(step, mid_point=mid, beta=beta, **kw))
            want = _auto_lirpa_smoothed(step, 100, 1100, 0.3, mid, beta)
            assert got == pytest.approx(want, abs=2e-7), (beta, mid, step)


def test_smooth_ramp_continuous_with_continuous_slope_at_junction():
    length = 10**6
    kw = dict(start_value=0.0, end_value=1.0, start_step=0, end_step=length)
    junction = length // 4  # mid_point 0.25
    before = [_f(smooth_ramp(junction - d, **kw)) for d in (2000, 1000)]
    at = _f(smooth_ramp(junction, **kw))
    after = [_f(smooth_ramp(junction + d, **kw)) for d in (1000, 2000)]
    # Value: continuous (the closed form gives c = p / (p + beta (1 - p)) = 1/13).
    assert at == pytest.approx(1 / 13, abs=1e-6)
    step_change = 16 / 13 * 1000 / length  # slope times 1000 steps
    assert at - before[1] == pytest.approx(step_change, rel=2e-2)
    assert after[0] - at == pytest.approx(step_change, rel=2e-2)
    # Slope: left and right finite differences agree (k = beta / (p + beta (1 - p)) = 16/13).
    left = (before[1] - before[0]) / 1000 * length
    right = (after[1] - after[0]) / 1000 * length
    assert right == pytest.approx(16 / 13, rel=1e-3)
    assert left == pytest.approx(right, rel=2e-2)
    # The polynomial phase starts slower than the linear ramp and ends exactly on target.
    assert _f(smooth_ramp(length // 8, **kw)) < 1 / 8
    assert _f(smooth_ramp(length, **kw)) == 1.0
    assert _f(smooth_ramp(2 * length, **kw)) == 1.0


def test_smooth_ramp_degenerate_parameters_are_linear():
    kw = dict(start_value=0.0, end_value=1.0, start_step=0, end_step=100)
    for step in [0, 10, 37, 80, 100]:
        linear = _f(linear_ramp(step, **kw))
        assert _f(smooth_ramp(step, mid_point=0.0, **kw)) == pytest.approx(linear, abs=1e-6)
        assert _f(smooth_ramp(step, beta=1.0, **kw)) == pytest.approx(linear, abs=1e-6)
    # mid_point = 1: the pure power u ** beta.
    assert _f(smooth_ramp(50, mid_point=1.0, beta=2.0, **kw)) == pytest.approx(0.25, abs=1e-6)


def test_schedules_are_jittable():
    kw = dict(eps=0.3, warmup_steps=10, ramp_steps=20)
    for shape in ("linear", "smooth"):
        f = jax.jit(lambda s, shape=shape: eps_schedule(s, shape=shape, **kw))
        assert _f(f(jnp.int32(5))) == 0.0
        assert _f(f(jnp.int32(17))) == pytest.approx(_f(eps_schedule(17, shape=shape, **kw)))
        assert f(jnp.int32(40)).dtype == jnp.float32
    lr = make_learning_rate(base=1e-3, steps_per_epoch=10, decay="halve", halve_every=2)
    assert _f(jax.jit(lr)(jnp.int32(45))) == pytest.approx(2.5e-4)


RAMP = dict(start_value=0.0, end_value=1.0, start_step=0, end_step=4)
EPS = dict(eps=0.1, warmup_steps=0, ramp_steps=2)
LR = dict(base=1.0, steps_per_epoch=1)
AHS = dict(loss_val=1.0, reg_val=1.0, gamma=1.0)
at_0, at_minus_3 = functools.partial(linear_ramp, 0), functools.partial(linear_ramp, -3)
smooth_at_0 = functools.partial(smooth_ramp, 0)
eps_at_0 = functools.partial(eps_schedule, 0)


@pytest.mark.parametrize(
    "fn, kwargs, name",
    [
        (at_0, RAMP | dict(start_step=-1), "start_step"),
        (at_0, RAMP | dict(start_step=5), "end_step"),
        (at_minus_3, RAMP, "step"),
        (smooth_at_0, RAMP | dict(mid_point=1.5), "mid_point"),
        (smooth_at_0, RAMP | dict(beta=0.5), "beta"),
        (eps_at_0, EPS | dict(eps=-0.1), "eps"),
        (eps_at_0, EPS | dict(eps=float("nan")), "eps"),
        (eps_at_0, EPS | dict(warmup_steps=-1), "warmup_steps"),
        (eps_at_0, EPS | dict(ramp_steps=-1), "ramp_steps"),
        (eps_at_0, EPS | dict(shape="cosine"), "shape"),
        (eps_at_0, EPS | dict(start=-1.0), "start"),
        (mixed_schedules, EPS | dict(kappa_end=1.5), "kappa_end"),
        (mixed_schedules, EPS | dict(beta_start=-0.5), "beta_start"),
        (mixed_schedules, EPS | dict(eps_shape="x"), "eps_shape"),
        (mixed_schedules, EPS | dict(warmup_steps=2.5), "warmup_steps"),
        (make_learning_rate, LR | dict(base=-1.0), "base"),
        (make_learning_rate, LR | dict(steps_per_epoch=0), "steps_per_epoch"),
        (make_learning_rate, LR | dict(decay="cosine"), "decay"),
        (make_learning_rate, LR | dict(decay="halve"), "halve_every"),
        (make_learning_rate, LR | dict(decay="step", decay_epochs=(-1,)), "decay_epochs"),
        (make_learning_rate, LR | dict(warmup_epochs=-2), "warmup_epochs"),
        (make_optimizer, dict(name="rmsprop", learning_rate=0.1), "rmsprop"),
        (make_optimizer, dict(learning_rate=-0.1), "learning_rate"),
        (make_optimizer, dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
        (make_optimizer, dict(learning_rate=0.1, grad_clip_norm=0.0), "grad_clip_norm"),
        (make_optimizer, dict(name="sgd", learning_rate=0.1, momentum=-0.5), "momentum"),
        (make_optimizer, dict(learning_rate=0.1, nesterov=True), "nesterov"),
        (adaptive_lambda, AHS | dict(gamma=0.0), "gamma"),
        (adaptive_lambda, AHS | dict(loss_val=-1.0), "loss_val"),
        (adaptive_lambda, AHS | dict(reg_val=-1.0), "reg_val"),
    ],
)
def test_bad_arguments_raise_naming_them(fn, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fn(**kwargs)


# --------------------------------------------------------------------------- mixing weights


def test_mixed_schedules_crown_ibp_settings():
    s = mixed_schedules(eps=0.3, warmup_steps=10, ramp_steps=20, kappa_end=0.5)
    assert isinstance(s, Schedules)
    for step, kappa, beta, eps in [
        (0, 1.0, 1.0, 0.0),
        (10, 1.0, 1.0, 0.0),
        (20, 0.75, 0.5, 0.15),
        (30, 0.5, 0.0, 0.3),
        (100, 0.5, 0.0, 0.3),
    ]:
        v = s.values(step)
        assert set(v) == {"eps", "kappa", "beta", "lam"}
        assert _f(v["kappa"]) == pytest.approx(kappa), step
        assert _f(v["beta"]) == pytest.approx(beta), step
        assert _f(v["eps"]) == pytest.approx(eps, abs=1e-7), step
        assert _f(v["lam"]) == 0.0
    # Constant beta = 1 (CIFAR-10 at 2/255), lambda 0 -> 0.5 (IBP as a regulariser).
    s = mixed_schedules(
        eps=2 / 255, warmup_steps=0, ramp_steps=4, beta_start=1.0, beta_end=1.0, lam_end=0.5
    )
    assert [_f(s.beta(t)) for t in range(6)] == [1.0] * 6
    assert [_f(s.lam(t)) for t in (0, 2, 4, 9)] == [0.0, 0.25, 0.5, 0.5]
    # The smooth eps shape is passed through; the jitted container works.
    s = mixed_schedules(eps=0.3, warmup_steps=10, ramp_steps=20, eps_shape="smooth")
    want = eps_schedule(15, eps=0.3, warmup_steps=10, ramp_steps=20, shape="smooth")
    assert _f(jax.jit(s.eps)(jnp.int32(15))) == pytest.approx(_f(want))


def test_adaptive_lambda_matches_singleprop_formula():
    for loss, reg, gamma in [(1.0, 2.0, 1.0), (0.3, 0.05, 0.5), (2.3, 7.1, 4.0), (0.0, 1.0, 2.0)]:
        want = gamma * loss / ((1 + gamma) * loss + reg)
        assert adaptive_lambda(loss, reg, gamma) == pytest.approx(want)
    assert adaptive_lambda(1.0, 2.0, 1.0) == pytest.approx(0.25)
    # R -> 0 approaches the cap gamma / (1 + gamma); smaller R gives larger lambda.
    assert adaptive_lambda(1.0, 0.0, 3.0) == pytest.approx(0.75)
    assert adaptive_lambda(1.0, 0.1, 1.0) > adaptive_lambda(1.0, 1.0, 1.0)
    assert adaptive_lambda(0.0, 0.0, 1.0) == 0.0
    assert isinstance(adaptive_lambda(jnp.float32(1.0), 2.0, 1.0), float)


# --------------------------------------------------------------------------- learning rate


def test_learning_rate_step_decay_at_boundaries():
    lr = make_learning_rate(
        base=1e-3, steps_per_epoch=10, decay="step", decay_epochs=(3, 5), decay_factor=0.1
    )
    for count, want in [(0, 1e-3), (29, 1e-3), (30, 1e-4), (49, 1e-4), (50, 1e-5), (999, 1e-5)]:
        assert _f(lr(count)) == pytest.approx(want, rel=1e-5), count
    assert _f(make_learning_rate(base=0.5, steps_per_epoch=3)(10**6)) == 0.5


def test_learning_rate_halving_after_ramp_up():
    # Thesis C.1: halve every 10 epochs once eps-scheduling (10 + 50 epochs) has ended.
    lr = make_learning_rate(
        base=3e-3, steps_per_epoch=4, decay="halve", halve_every=10, halve_after=60
    )
    for epoch, want in [
        (0, 3e-3),
        (59, 3e-3),
        (60, 3e-3),
        (69, 3e-3),
        (70, 1.5e-3),
        (79, 1.5e-3),
        (80, 7.5e-4),
        (100, 3e-3 / 16),
    ]:
        assert _f(lr(4 * epoch)) == pytest.approx(want, rel=1e-5), epoch
        assert _f(lr(4 * epoch + 3)) == pytest.approx(want, rel=1e-5), epoch


def test_learning_rate_linear_warmup():
    lr = make_learning_rate(
        base=1e-3, steps_per_epoch=5, warmup_epochs=2, decay="step", decay_epochs=(4,)
    )
    assert _f(lr(0)) == pytest.approx(1e-4)
    assert _f(lr(4)) == pytest.approx(5e-4)
    assert _f(lr(9)) == pytest.approx(1e-3)
    assert _f(lr(19)) == pytest.approx(1e-3)
    assert _f(lr(20)) == pytest.approx(1e-4)


# --------------------------------------------------------------------------- optimiser


def _first_update(opt: optax.GradientTransformation, grads, params):
    updates, _ = opt.update(grads, opt.init(params), params)
    return updates


def test_optimizer_clips_by_global_norm_first():
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    huge = {"a": jnp.full(3, 1e6), "b": jnp.full((2, 2), -1e6)}
    opt = make_optimizer(name="sgd", learning_rate=1.0, momentum=0.0, grad_clip_norm=2.0)
    upd = _first_update(opt, huge, params)
    assert _f(optax.tree.norm(upd)) == pytest.approx(2.0, rel=1e-5)
    # Without clipping the update is the raw gradient.
    opt = make_optimizer(name="sgd", learning_rate=1.0, momentum=0.0)
    assert _f(optax.tree.norm(_first_update(opt, huge, params))) == pytest.approx(
        _f(optax.tree.norm(huge)), rel=1e-5
    )
    # Clipping comes before the L2 term: the decay is not clipped away.
    opt = make_optimizer(
        name="sgd", learning_rate=1.0, momentum=0.0, grad_clip_norm=1.0, weight_decay=10.0
    )
    upd = _first_update(opt, {"w": jnp.array([1e6])}, {"w": jnp.array([1.0])})
    assert _f(upd["w"][0]) == pytest.approx(-11.0, rel=1e-5)


def test_optimizer_weight_decay_kinds():
    params = {"w": jnp.array([2.0, -4.0])}
    zero = {"w": jnp.zeros(2)}
    # SGD: L2 added to the gradient, update = -lr * wd * w.
    opt = make_optimizer(name="sgd", learning_rate=0.5, momentum=0.0, weight_decay=0.1)
    np.testing.assert_allclose(_first_update(opt, zero, params)["w"], [-0.1, 0.2], rtol=1e-6)
    # Adam: L2 added to the gradient, then normalised (first step ~ -lr * sign(w)).
    opt = make_optimizer(name="adam", learning_rate=0.01, weight_decay=0.1)
    np.testing.assert_allclose(_first_update(opt, zero, params)["w"], [-0.01, 0.01], rtol=1e-4)
    # AdamW: decoupled, update = -lr * wd * w whatever the adaptive part.
    opt = make_optimizer(name="adamw", learning_rate=0.01, weight_decay=0.1)
    np.testing.assert_allclose(_first_update(opt, zero, params)["w"], [-0.002, 0.004], rtol=1e-5)
    # No decay: a zero gradient gives a zero update.
    for name in ("adam", "sgd"):
        upd = _first_update(make_optimizer(name=name, learning_rate=0.1), zero, params)
        np.testing.assert_array_equal(upd["w"], 0.0)


def test_optimizer_momentum_and_schedule():
    lr = make_learning_rate(base=1.0, steps_per_epoch=1, decay="step", decay_epochs=(1,))
    opt = make_optimizer(name="sgd", learning_rate=lr, momentum=0.5)
    params = {"w": jnp.zeros(1)}
    state = opt.init(params)
    g = {"w": jnp.ones(1)}
    upd1, state = opt.update(g, state, params)
    upd2, state = opt.update(g, state, params)
    assert _f(upd1["w"][0]) == pytest.approx(-1.0)
    assert _f(upd2["w"][0]) == pytest.approx(-0.1 * 1.5)  # trace 1 + 0.5, lr decayed 10x
    make_optimizer(name="sgd", learning_rate=0.1, nesterov=True)  # builds
