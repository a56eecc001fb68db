"""Training schedules: perturbation radius, loss mixing weights, learning rate, optimiser.

Certified training starts from natural training and grows the perturbation radius
slowly (CROWN-IBP §5 "Models and training schedules"; thesis App. C.1; SingleProp
§3.3): ``eps`` is 0 for a warm-up period, ramps up to its target over the ramp-up
period and then stays there. The CROWN-IBP mixing weights ``kappa`` (natural vs.
robust loss) and ``beta`` (IBP vs. CROWN-IBP bound) move linearly over the same
ramp-up window; a regulariser weight ``lambda`` (SingleProp, IBP as regulariser) can
follow the same window or be set adaptively with :func:`adaptive_lambda`.

Every schedule is a pure function of an integer step (a Python int or a traced jnp
integer), returns a float32 scalar and can be used inside ``jax.jit``. Schedule
parameters (steps, values) are static Python numbers and are validated eagerly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from numbers import Number

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
StepSchedule = Callable[[int | Array], Array]

__all__ = [
    "EPS_SHAPES",
    "DECAYS",
    "OPTIMIZERS",
    "Schedules",
    "adaptive_lambda",
    "eps_schedule",
    "linear_ramp",
    "make_learning_rate",
    "make_optimizer",
    "mixed_schedules",
    "smooth_ramp",
]

EPS_SHAPES = ("linear", "smooth")
DECAYS = ("none", "step", "halve")
OPTIMIZERS = ("adam", "adamw", "sgd")


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, Number | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: float, minimum: float | None = None) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _check_unit(name: str, value: float) -> float:
    value = _check_float(name, value, 0.0)
    if value > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def _check_window(start_step: int, end_step: int) -> tuple[int, int]:
    start_step = _check_int("start_step", start_step)
    end_step = _check_int("end_step", end_step)
    if end_step < start_step:
        raise ValueError(f"end_step must be >= start_step ({start_step}), got {end_step}")
    return start_step, end_step


def _check_step(step: int | Array) -> Array:
    """The step as a jnp integer/float array; a concrete Python step must be >= 0."""
    if isinstance(step, Number | np.number) and step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    return jnp.asarray(step)


def _ramp_fraction(step: int | Array, start_step: int, end_step: int) -> Array:
    """Progress ``u`` in ``[0, 1]`` of ``step`` through ``[start_step, end_step]``."""
    # Integer difference first: float32 would lose exactness for large raw steps.
    offset = (_check_step(step) - start_step).astype(jnp.float32)
    if end_step == start_step:  # a jump at start_step
        return (offset >= 0).astype(jnp.float32)
    return jnp.clip(offset / float(end_step - start_step), 0.0, 1.0)


def _interpolate(fraction: Array, start_value: float, end_value: float) -> Array:
    """``start + (end - start) * fraction``, exact at both ends and monotone in float32.

    Rounding of the affine form can overshoot ``end`` by one ulp just before the end;
    clamping to the segment and pinning ``fraction == 1`` to ``end`` keeps the
    schedule monotone and its end value exact.
    """
    start = jnp.float32(start_value)
    end = jnp.float32(end_value)
    value = start + (end - start) * fraction
    value = jnp.clip(value, jnp.minimum(start, end), jnp.maximum(start, end))
    return jnp.where(fraction >= 1.0, end, value).astype(jnp.float32)


# --------------------------------------------------------------------------- ramps


def linear_ramp(
    step: int | Array,
    *,
    start_value: float,
    end_value: float,
    start_step: int,
    end_step: int,
) -> Array:
    """Piecewise-linear ramp: ``start_value`` until ``start_step``, then linear, then flat.

    The value is ``start_value`` for ``step <= start_step``, ``end_value`` for
    ``step >= end_step`` and linear in between. With ``end_step == start_step`` it is
    a jump: ``start_value`` before ``start_step``, ``end_value`` from it on.

    Args:
      step: the training step, a Python int or a (possibly traced) jnp integer.
      start_value, end_value: the values before and after the ramp.
      start_step, end_step: the ramp window, ``0 <= start_step <= end_step``.

    Returns:
      A float32 scalar (or an array shaped like ``step``).

    Example:
      >>> linear_ramp(15, start_value=0.0, end_value=1.0, start_step=10, end_step=20)
      Array(0.5, dtype=float32)
    """
    start_step, end_step = _check_window(start_step, end_step)
    start_value = _check_float("start_value", start_value)
    end_value = _check_float("end_value", end_value)
    fraction = _ramp_fraction(step, start_step, end_step)
    return _interpolate(fraction, start_value, end_value)


def _smooth_fraction(u: Array, mid_point: float, beta: float) -> Array:
    """Normalised smooth ramp ``f: [0, 1] -> [0, 1]`` (see :func:`smooth_ramp`)."""
    p = mid_point
    denom = p + beta * (1.0 - p)  # > 0 for p in [0, 1], beta >= 1
    c = p / denom  # f(p), the value at the junction
    k = beta / denom  # slope of the linear part == f'(p) of the polynomial part
    safe_p = max(p, 1e-30)  # p == 0: the polynomial branch is never taken
    poly = c * jnp.power(jnp.clip(u / safe_p, 0.0, 1.0), beta)
    linear = c + k * (u - p)
    return jnp.where(u < p, poly, linear)


def smooth_ramp(
    step: int | Array,
    *,
    start_value: float,
    end_value: float,
    start_step: int,
    end_step: int,
    mid_point: float = 0.25,
    beta: float = 4.0,
) -> Array:
    """Polynomial-then-linear ramp with a continuous derivative (the "smoothed" eps schedule).

    This is the schedule of DeepMind's IBP code (``smooth_schedule``) that auto_LiRPA
    ships as ``SmoothedScheduler`` and later certified-training work uses for ``eps``.
    With ``u = (step - start_step) / (end_step - start_step)`` clipped to ``[0, 1]``
    and ``p = mid_point``, the value is ``start + (end - start) * f(u)`` where::

        f(u) = c * (u / p) ** beta        for u < p   (polynomial growth)
        f(u) = c + k * (u - p)            for u >= p  (linear to the end)
        c = p / (p + beta * (1 - p)),     k = beta / (p + beta * (1 - p)).

    ``c`` and ``k`` are the unique constants making ``f`` continuous at ``p`` with a
    continuous derivative there (``beta * c / p == k``) and ``f(1) == 1``; this equals
    auto_LiRPA's ``alpha * (step - init) ** beta`` form, except that the junction is
    not rounded to an integer step. ``mid_point = 0`` gives the linear ramp,
    ``mid_point = 1`` the pure power ``u ** beta``; ``beta = 1`` is linear too.

    Args:
      step: the training step, a Python int or a (possibly traced) jnp integer.
      start_value, end_value: values before and after the ramp.
      start_step, end_step: the ramp window (``end_step == start_step`` is a jump).
      mid_point: fraction of the ramp spent in the polynomial phase, in ``[0, 1]``.
      beta: the power of the polynomial phase, ``>= 1`` (auto_LiRPA default 4).

    Returns:
      A float32 scalar.

    Example:
      >>> smooth_ramp(20, start_value=0.0, end_value=1.0, start_step=0, end_step=20)
      Array(1., dtype=float32)
    """
    start_step, end_step = _check_window(start_step, end_step)
    start_value = _check_float("start_value", start_value)
    end_value = _check_float("end_value", end_value)
    mid_point = _check_unit("mid_point", mid_point)
    beta = _check_float("beta", beta, 1.0)
    u = _ramp_fraction(step, start_step, end_step)
    fraction = jnp.where(u >= 1.0, 1.0, _smooth_fraction(u, mid_point, beta))
    return _interpolate(fraction, start_value, end_value)


def eps_schedule(
    step: int | Array,
    *,
    eps: float,
    warmup_steps: int,
    ramp_steps: int,
    shape: str = "linear",
    start: float = 0.0,
    mid_point: float = 0.25,
    beta: float = 4.0,
) -> Array:
    """The warm-up + ramp-up perturbation radius of certified training.

    ``start`` (normally 0: natural training) for the first ``warmup_steps`` steps,
    then a ramp to ``eps`` over ``ramp_steps`` steps, then ``eps`` (CROWN-IBP §5;
    IBP/SingleProp: 2000 warm-up + 10000 ramp-up steps on MNIST). ``shape`` is
    ``"linear"`` (:func:`linear_ramp`) or ``"smooth"`` (:func:`smooth_ramp`, which
    uses ``mid_point`` and ``beta``).

    Example:
      >>> eps_schedule(150, eps=0.4, warmup_steps=100, ramp_steps=100)
      Array(0.2, dtype=float32)
    """
    eps = _check_float("eps", eps, 0.0)
    start = _check_float("start", start, 0.0)
    warmup_steps = _check_int("warmup_steps", warmup_steps)
    ramp_steps = _check_int("ramp_steps", ramp_steps)
    window = dict(start_step=warmup_steps, end_step=warmup_steps + ramp_steps)
    if shape == "linear":
        return linear_ramp(step, start_value=start, end_value=eps, **window)
    if shape == "smooth":
        return smooth_ramp(
            step, start_value=start, end_value=eps, mid_point=mid_point, beta=beta, **window
        )
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(EPS_SHAPES)}")


# --------------------------------------------------------------------------- mixing weights


@dataclasses.dataclass(frozen=True)
class Schedules:
    """The per-step quantities of a certified-training objective.

    Each field maps a step to a float32 scalar: ``eps`` the perturbation radius,
    ``kappa`` the weight of the natural loss (CROWN-IBP Eq. 9 / thesis C.1.1),
    ``beta`` the weight of the CROWN-IBP bound against IBP, ``lam`` a regulariser
    weight (SingleProp ``L + lambda * R``).

    Example:
      >>> s = mixed_schedules(eps=0.3, warmup_steps=10, ramp_steps=10)
      >>> s.values(15)["kappa"]
      Array(0.5, dtype=float32)
    """

    eps: StepSchedule
    kappa: StepSchedule
    beta: StepSchedule
    lam: StepSchedule

    def values(self, step: int | Array) -> dict[str, Array]:
        """All four schedules at ``step`` (handy for logging)."""
        return {f.name: getattr(self, f.name)(step) for f in dataclasses.fields(self)}


def mixed_schedules(
    *,
    eps: float,
    warmup_steps: int,
    ramp_steps: int,
    eps_shape: str = "linear",
    kappa_start: float = 1.0,
    kappa_end: float = 0.0,
    beta_start: float = 1.0,
    beta_end: float = 0.0,
    lam_start: float = 0.0,
    lam_end: float = 0.0,
) -> Schedules:
    """The CROWN-IBP schedules: eps, kappa, beta and lambda over one ramp-up window.

    ``eps`` follows :func:`eps_schedule`; ``kappa``, ``beta`` and ``lam`` are held at
    their start values during warm-up and move linearly to their end values over the
    same ramp-up window (CROWN-IBP §5: "kappa is scheduled to linearly decrease from
    kappa_start to kappa_end within R ramp-up epochs", settings 1 -> 0.5 (Gowal et
    al.), 1 -> 0 and 0 -> 0; "beta_start = 1 and beta_end = 0", or 1 -> 1 for
    CIFAR-10 at 2/255). For a constant value pass ``start == end``.

    Example:
      >>> s = mixed_schedules(eps=0.3, warmup_steps=10, ramp_steps=10, kappa_end=0.5)
      >>> float(s.kappa(20)), float(s.beta(20)), float(s.eps(20))
      (0.5, 0.0, 0.30000001192092896)
    """
    eps = _check_float("eps", eps, 0.0)
    warmup_steps = _check_int("warmup_steps", warmup_steps)
    ramp_steps = _check_int("ramp_steps", ramp_steps)
    if eps_shape not in EPS_SHAPES:
        raise ValueError(f"unknown eps_shape {eps_shape!r}; expected one of {list(EPS_SHAPES)}")
    for name, value in (
        ("kappa_start", kappa_start),
        ("kappa_end", kappa_end),
        ("beta_start", beta_start),
        ("beta_end", beta_end),
    ):
        _check_unit(name, value)
    _check_float("lam_start", lam_start, 0.0)
    _check_float("lam_end", lam_end, 0.0)

    window = dict(start_step=warmup_steps, end_step=warmup_steps + ramp_steps)

    def ramp(start_value: float, end_value: float) -> StepSchedule:
        return functools.partial(
            linear_ramp, start_value=start_value, end_value=end_value, **window
        )

    return Schedules(
        eps=functools.partial(
            eps_schedule,
            eps=eps,
            warmup_steps=warmup_steps,
            ramp_steps=ramp_steps,
            shape=eps_shape,
        ),
        kappa=ramp(kappa_start, kappa_end),
        beta=ramp(beta_start, beta_end),
        lam=ramp(lam_start, lam_end),
    )


def adaptive_lambda(loss_val: float, reg_val: float, gamma: float) -> float:
    """SingleProp's adaptive hyper-parameter selection (AHS) of the regulariser weight.

    Set once per epoch from validation-set averages (SingleProp §3.3)::

        lambda = gamma * L_val / ((1 + gamma) * L_val + R_val)

    with ``L_val`` the natural loss and ``R_val`` the regulariser (robust minus natural
    loss, >= 0 for a sound bound). ``lambda`` lies in ``[0, gamma / (1 + gamma))``; it
    grows as ``R_val`` shrinks relative to ``L_val``. A zero denominator
    (``L_val == R_val == 0``) gives 0.

    Args:
      loss_val: validation natural loss, ``>= 0``.
      reg_val: validation regulariser value, ``>= 0``.
      gamma: trade-off constant, ``> 0`` (smaller favours clean accuracy).

    Example:
      >>> adaptive_lambda(1.0, 2.0, 1.0)
      0.25
    """
    loss_val = _check_float("loss_val", loss_val, 0.0)
    reg_val = _check_float("reg_val", reg_val, 0.0)
    gamma = _check_float("gamma", gamma)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    denominator = (1.0 + gamma) * loss_val + reg_val
    if denominator == 0.0:
        return 0.0
    return gamma * loss_val / denominator


# --------------------------------------------------------------------------- optimisation


def make_learning_rate(
    *,
    base: float,
    steps_per_epoch: int,
    decay: str = "none",
    decay_epochs: Sequence[int] = (),
    decay_factor: float = 0.1,
    halve_every: int | None = None,
    halve_after: int = 0,
    warmup_epochs: int = 0,
) -> optax.Schedule:
    """An epoch-based learning-rate schedule as an ``optax`` schedule of the update count.

    With ``epoch = count // steps_per_epoch``:

    * ``"none"``: ``base``.
    * ``"step"``: ``base * decay_factor ** #{d in decay_epochs: epoch >= d}`` (CROWN-IBP
      / thesis Table A.1 milestones, factor 0.1).
    * ``"halve"``: ``base * 0.5 ** (max(epoch - halve_after, 0) // halve_every)``: the
      first halving is at epoch ``halve_after + halve_every`` (thesis C.1: "reduce the
      learning rate by 50% every 10 epochs after eps-scheduling ends", i.e.
      ``halve_after = warm-up + ramp-up epochs``).

    ``warmup_epochs > 0`` multiplies by ``min(1, (count + 1) / warmup_steps)``, a linear
    warm-up whose first update is already non-zero. Arguments of the decay kinds not
    selected are ignored.

    Example:
      >>> lr = make_learning_rate(base=1e-3, steps_per_epoch=10, decay="step",
      ...                         decay_epochs=(2,))
      >>> float(lr(19)), float(lr(20))
      (0.0010000000474974513, 0.00010000000474974513)
    """
    base = _check_float("base", base, 0.0)
    steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
    warmup_epochs = _check_int("warmup_epochs", warmup_epochs)
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; expected one of {list(DECAYS)}")
    if decay == "step":
        decay_epochs = tuple(_check_int("decay_epochs", d) for d in decay_epochs)
        decay_factor = _check_float("decay_factor", decay_factor)
        if decay_factor <= 0:
            raise ValueError(f"decay_factor must be > 0, got {decay_factor!r}")
    if decay == "halve":
        if halve_every is None:
            raise ValueError("halve_every must be given for decay='halve'")
        halve_every = _check_int("halve_every", halve_every, 1)
        halve_after = _check_int("halve_after", halve_after)
    warmup_steps = warmup_epochs * steps_per_epoch

    def schedule(count: int | Array) -> Array:
        count = _check_step(count)
        epoch = count // steps_per_epoch
        lr = jnp.float32(base)
        if decay == "step" and decay_epochs:
            n = sum(((epoch >= d).astype(jnp.int32) for d in decay_epochs), jnp.int32(0))
            lr = lr * jnp.power(jnp.float32(decay_factor), n.astype(jnp.float32))
        elif decay == "halve":
            assert halve_every is not None  # checked above
            n = jnp.maximum(epoch - halve_after, 0) // halve_every
            lr = lr * jnp.power(jnp.float32(0.5), n.astype(jnp.float32))
        if warmup_steps:
            ramp = (count + 1).astype(jnp.float32) / warmup_steps
            lr = lr * jnp.minimum(1.0, ramp)
        return jnp.asarray(lr, jnp.float32)

    return schedule


def make_optimizer(
    *,
    name: str = "adam",
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: float = 0.0,
    grad_clip_norm: float | None = None,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam / AdamW / SGD with optional global-norm clipping and weight decay.

    The chain is ``clip_by_global_norm`` (when ``grad_clip_norm`` is set), then:

    * ``"adam"``: L2 weight decay added to the gradients (``g + wd * w``, as PyTorch's
      ``Adam(weight_decay=...)``), then ``optax.adam``;
    * ``"adamw"``: ``optax.adamw`` with decoupled decay (``w -= lr * wd * w``);
    * ``"sgd"``: L2 decay added to the gradients, then ``optax.sgd`` with ``momentum``
      (0 disables it) and ``nesterov``.

    Example:
      >>> opt = make_optimizer(name="sgd", learning_rate=0.1, grad_clip_norm=1.0)
      >>> params = {"w": jnp.zeros(2)}
      >>> updates, _ = opt.update({"w": jnp.array([30.0, 40.0])}, opt.init(params), params)
      >>> updates["w"]
      Array([-0.06, -0.08], dtype=float32)
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer name {name!r}; expected one of {list(OPTIMIZERS)}")
    if not callable(learning_rate):
        _check_float("learning_rate", learning_rate, 0.0)
    weight_decay = _check_float("weight_decay", weight_decay, 0.0)
    momentum = _check_float("momentum", momentum, 0.0)
    if momentum >= 1.0:
        raise ValueError(f"momentum must be < 1, got {momentum!r}")
    if nesterov and (name != "sgd" or momentum == 0.0):
        raise ValueError("nesterov=True needs name='sgd' and momentum > 0")
    parts: list[optax.GradientTransformation] = []
    if grad_clip_norm is not None:
        grad_clip_norm = _check_float("grad_clip_norm", grad_clip_norm)
        if grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be > 0, got {grad_clip_norm!r}")
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    if name == "adamw":
        parts.append(optax.adamw(learning_rate, weight_decay=weight_decay))
    else:
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay))
        if name == "adam":
            parts.append(optax.adam(learning_rate))
        else:
            parts.append(optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
    return optax.chain(*parts)
