"""Gradient attacks: FGSM, PGD (with restarts), EOT-PGD, adversarial accuracy.

Attacks give the *lower* side of robustness (the "PGD error" of CROWN-IBP Table 2 and
thesis Table 3.4) next to the certified upper side of :func:`jaxcert.bound`. They act
on ``fn(x) -> logits`` of a batched input ``x`` of shape ``(batch, ...)`` and labels
``y`` of shape ``(batch,)``, are pure and can be wrapped in ``jax.jit`` (the step and
restart loops are ``lax.fori_loop``). ``fn`` must treat examples independently: the
gradient of the summed loss is used as the per-example gradient.

Attacks are not differentiated through: their output is a constant for ``jax.grad``
(as adversarial training wants), also with respect to weights ``fn`` closes over.

Each attack is compiled with ``fn`` as a static argument, so repeated calls with the
same callable object (e.g. one ``functools.partial(model.apply, variables)`` over the
batches of a test set) reuse the executable. Arrays ``fn`` closes over are then
constants of that executable; to keep large weights out of it, call the attack inside
your own ``jax.jit`` that takes the weights as an argument.

Threat model: ``||x_adv - x|| <= eps`` in ``norm`` ("linf" or "l2") intersected with
the ``clip`` box; ``eps`` is a scalar or one radius per example. ``x`` itself should
lie inside the box. Thesis ch. 2: FGSM is ``x + eps * sign(grad)`` (Eq. 2.1.2; FGM
with the l2-normalised gradient, Eq. 2.1.3); PGD iterates such steps of size
``alpha`` with a projection onto the ball (Eq. 2.1.5-2.1.6); EOT replaces the gradient
of a randomised network by its sample mean (Eq. 2.2.8).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Clip = tuple[float | Array, float | Array] | None

__all__ = ["LOSSES", "NORMS", "adversarial_accuracy", "eot_pgd", "fgsm", "pgd"]

LOSSES = ("ce", "margin")
NORMS = ("linf", "l2")

# fold_in data of the keys derived from an attack's key: restart r's random start uses
# r, its EOT samples _STEP_KEYS + r, the EOT evaluation of the clean input _CLEAN_KEY.
_STEP_KEYS = 2**30
_CLEAN_KEY = 2**31 - 1

# (x_adv, key) -> (per-example loss, logits); the key is ignored by deterministic fns.
_Evaluate = Callable[[Array, Array | None], tuple[Array, Array]]


# --------------------------------------------------------------------------- losses


def _cross_entropy(logits: Array, y: Array) -> Array:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]


def _margin(logits: Array, y: Array) -> Array:
    """CW-style margin ``max_{j != y} z_j - z_y``: positive iff misclassified."""
    true = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    is_true = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    others = jnp.where(is_true, -jnp.inf, logits)
    return jnp.max(others, axis=-1) - true


_LOSS_FNS = {"ce": _cross_entropy, "margin": _margin}


# --------------------------------------------------------------------------- validation


def _check_options(norm: str, loss: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {list(NORMS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {list(LOSSES)}")


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _concrete(value) -> np.ndarray | None:
    """``value`` as numpy when it is concrete, ``None`` under a trace."""
    try:
        return np.asarray(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _per_example(name: str, value: float | Array, x: Array) -> Array:
    """A scalar or ``(batch,)`` value as a ``(batch, 1, ...)`` array (one shape for both,
    so scalar and per-example radii share a compiled attack)."""
    value = jnp.asarray(value, x.dtype)
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != x.shape[0]):
        raise ValueError(f"{name} must be a scalar or of shape ({x.shape[0]},), got {value.shape}")
    return jnp.broadcast_to(value, x.shape[:1]).reshape((-1,) + (1,) * (x.ndim - 1))


def _check_step_size(step_size: float | Array | None) -> None:
    values = None if step_size is None else _concrete(step_size)
    if values is not None and (not np.all(np.isfinite(values)) or np.any(values <= 0)):
        raise ValueError(f"step_size must be finite and > 0, got {values}")


def _static(fn: Callable) -> Callable:
    """``fn`` itself when hashable (a static jit argument), else a hashable wrapper."""
    try:
        hash(fn)
    except TypeError:
        return lambda *args: fn(*args)
    return fn


def _prepare(fn_name: str, x: Array, y: Array, eps: float | Array) -> tuple[Array, Array, Array]:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    y = jnp.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"{fn_name}: x must be batched, (batch, ...), got shape {x.shape}")
    if y.shape != x.shape[:1] or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(
            f"{fn_name}: y must be ({x.shape[0]},) integer labels, got {y.dtype}{y.shape}"
        )
    values = _concrete(eps)
    if values is not None and (not np.all(np.isfinite(values)) or np.any(values < 0)):
        raise ValueError(f"{fn_name}: eps must be finite and >= 0, got {values}")
    return x, y, _per_example("eps", eps, x)


# --------------------------------------------------------------------------- geometry


def _batch_norm(v: Array) -> Array:
    """Per-example l2 norm, shaped ``(batch, 1, ...)``."""
    axes = tuple(range(1, v.ndim))
    return jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))


def _ascent_direction(grad: Array, norm: str) -> Array:
    """The unit-ball maximiser of ``<g, grad>``: sign (linf) or normalised gradient (l2)."""
    if norm == "linf":
        return jnp.sign(grad)
    return grad / jnp.maximum(_batch_norm(grad), 1e-12)


def _project(x_adv: Array, x: Array, eps: Array, norm: str, clip: Clip) -> Array:
    """Project onto the ``eps`` ball around ``x``, then onto the ``clip`` box.

    For linf the intersection of ball and box is a box, so this is the exact
    projection. For l2 it is feasible (clipping towards ``x``, which lies in the box,
    only shrinks every coordinate of the perturbation) though not the exact projection.
    """
    if norm == "linf":
        x_adv = jnp.clip(x_adv, x - eps, x + eps)
    else:
        delta = x_adv - x
        scale = jnp.minimum(1.0, eps / jnp.maximum(_batch_norm(delta), 1e-12))
        x_adv = x + delta * scale
    if clip is not None:
        x_adv = jnp.clip(x_adv, clip[0], clip[1])
    return x_adv


def _random_start(key: Array, x: Array, eps: Array, norm: str, clip: Clip) -> Array:
    """A uniform sample of the ``eps`` ball around ``x``, projected onto the box."""
    if norm == "linf":
        delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    else:
        # Uniform in the d-ball with a single draw: a uniform point on the sphere of
        # R^(d+2) (a normalised Gaussian) with two coordinates dropped.
        batch, dim = x.shape[0], int(np.prod(x.shape[1:]))
        g = jax.random.normal(key, (batch, dim + 2), x.dtype)
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        delta = g[:, :dim].reshape(x.shape) * eps
    return _project(x + delta, x, eps, norm, clip)


# --------------------------------------------------------------------------- core loop


def _misclassified(logits: Array, y: Array) -> Array:
    return jnp.argmax(logits, axis=-1) != y


def _keep_better(candidate, best):
    """Per example, keep the candidate if it is misclassified and the best is not, or
    if both agree on misclassification and the candidate's loss is higher."""
    x_new, loss_new, mis_new = candidate
    x_best, loss_best, mis_best = best
    better = (mis_new & ~mis_best) | ((mis_new == mis_best) & (loss_new > loss_best))
    x_out = jnp.where(better.reshape((-1,) + (1,) * (x_new.ndim - 1)), x_new, x_best)
    return x_out, jnp.where(better, loss_new, loss_best), mis_new | mis_best


def _run_pgd(
    evaluate: _Evaluate,
    grad_fn: Callable[[Array, Array | None], tuple[Array, Array, Array]],
    x: Array,
    y: Array,
    eps: Array,
    *,
    steps: int,
    step_size: float | Array | None,
    restarts: int,
    key: Array | None,
    norm: str,
    clip: Clip,
    random_start: bool,
    keyed: bool,
) -> Array:
    """PGD from ``restarts`` starts; keeps, per example, the best point ever evaluated.

    "Best" is misclassified first, then highest loss; the clean ``x`` is the first
    candidate, so the result never has a lower loss than ``x``. Restart ``r`` draws
    its start from ``fold_in(key, r)``, so the first restarts do not depend on
    ``restarts``: more restarts can only improve the result. ``keyed``: ``evaluate``
    and ``grad_fn`` take PRNG keys (EOT); otherwise they get ``None`` and no keys are
    derived (each PRNG call site adds to the compile time).
    """
    alpha = 2.5 * eps / steps if step_size is None else _per_example("step_size", step_size, x)
    base_key = jax.random.PRNGKey(0) if key is None else key

    # The attack is not differentiated through (Danskin: x_adv is a constant of the
    # outer loss), so no tangents flow into the loops when a training step takes the
    # gradient with respect to weights that ``fn`` closes over.
    x, eps, alpha = jax.lax.stop_gradient((x, eps, alpha))

    def candidate(x_adv: Array, k: Array | None):
        loss, logits = jax.lax.stop_gradient(evaluate(x_adv, k))
        return x_adv, loss, _misclassified(logits, y)

    def restart(r: int | Array, best):
        x_adv = (
            _random_start(jax.random.fold_in(base_key, r), x, eps, norm, clip)
            if random_start
            else x
        )
        # EOT samples: keys of their own, never the start's key reused.
        k_steps = jax.random.fold_in(base_key, _STEP_KEYS + r) if keyed else None

        def step_key(i: int | Array) -> Array | None:
            return jax.random.fold_in(k_steps, i) if k_steps is not None else None

        def step(i: int | Array, carry):
            x_adv, best = carry
            loss, logits, grad = jax.lax.stop_gradient(grad_fn(x_adv, step_key(i)))
            best = _keep_better((x_adv, loss, _misclassified(logits, y)), best)
            x_adv = _project(x_adv + alpha * _ascent_direction(grad, norm), x, eps, norm, clip)
            return x_adv, best

        x_adv, best = jax.lax.fori_loop(0, steps, step, (x_adv, best))
        return _keep_better(candidate(x_adv, step_key(steps)), best)

    clean_key = jax.random.fold_in(base_key, _CLEAN_KEY) if keyed else None
    best = jax.lax.fori_loop(0, restarts, restart, candidate(x, clean_key))
    return best[0]


def _deterministic(fn: Callable[[Array], Array], y: Array, loss: str):
    """``evaluate`` and ``grad_fn`` of a deterministic network (keys ignored)."""
    loss_fn = _LOSS_FNS[loss]

    def evaluate(x_adv: Array, key: Array | None) -> tuple[Array, Array]:
        logits = fn(x_adv)
        return loss_fn(logits, y), logits

    def total(x_adv: Array) -> tuple[Array, tuple[Array, Array]]:
        losses, logits = evaluate(x_adv, None)
        return jnp.sum(losses), (losses, logits)

    def grad_fn(x_adv: Array, key: Array | None) -> tuple[Array, Array, Array]:
        grad, (losses, logits) = jax.grad(total, has_aux=True)(x_adv)
        return losses, logits, grad

    return evaluate, grad_fn


def _expectation(fn_random: Callable[[Array, Array], Array], y: Array, loss: str, samples: int):
    """``evaluate`` and ``grad_fn`` averaged over ``samples`` draws of a random network.

    The draws are accumulated in a loop, so memory does not grow with ``samples``.
    """
    loss_fn = _LOSS_FNS[loss]

    def evaluate(x_adv: Array, key: Array) -> tuple[Array, Array]:
        keys = jax.random.split(key, samples)

        def add(i, acc):
            logits = fn_random(x_adv, keys[i])
            return acc[0] + loss_fn(logits, y), acc[1] + logits

        logits = fn_random(x_adv, keys[0])
        acc = jax.lax.fori_loop(1, samples, add, (loss_fn(logits, y), logits))
        return acc[0] / samples, acc[1] / samples

    def grad_fn(x_adv: Array, key: Array) -> tuple[Array, Array, Array]:
        keys = jax.random.split(key, samples)

        def one(sample_key: Array) -> tuple[Array, Array, Array]:
            def total(z: Array):
                logits = fn_random(z, sample_key)
                losses = loss_fn(logits, y)
                return jnp.sum(losses), (losses, logits)

            grad, (losses, logits) = jax.grad(total, has_aux=True)(x_adv)
            return losses, logits, grad

        def add(i, acc):
            return jax.tree.map(jnp.add, acc, one(keys[i]))

        acc = jax.lax.fori_loop(1, samples, add, one(keys[0]))
        return jax.tree.map(lambda a: a / samples, acc)

    return evaluate, grad_fn


@functools.partial(
    jax.jit,
    static_argnames=("fn", "loss", "norm", "steps", "restarts", "random_start", "samples"),
)
def _attack(
    fn: Callable,
    x: Array,
    y: Array,
    eps: Array,
    step_size: float | Array | None,
    key: Array | None,
    clip: Clip,
    *,
    loss: str,
    norm: str,
    steps: int,
    restarts: int,
    random_start: bool,
    samples: int | None,
) -> Array:
    """Compiled PGD / EOT-PGD (``samples`` set). ``fn`` is static: calls with the same
    callable object and settings reuse the executable."""
    if samples is None:
        evaluate, grad_fn = _deterministic(fn, y, loss)
    else:
        evaluate, grad_fn = _expectation(fn, y, loss, samples)
    return _run_pgd(
        evaluate,
        grad_fn,
        x,
        y,
        eps,
        steps=steps,
        step_size=step_size,
        restarts=restarts,
        key=key,
        norm=norm,
        clip=clip,
        random_start=random_start,
        keyed=samples is not None,
    )


@functools.partial(jax.jit, static_argnames=("fn", "loss", "norm"))
def _fgsm(fn: Callable, x: Array, y: Array, eps: Array, clip: Clip, *, loss: str, norm: str):
    x, eps = jax.lax.stop_gradient((x, eps))
    _, grad_fn = _deterministic(fn, y, loss)
    grad = jax.lax.stop_gradient(grad_fn(x, None)[2])
    return _project(x + eps * _ascent_direction(grad, norm), x, eps, norm, clip)


# --------------------------------------------------------------------------- public API


def fgsm(
    fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    eps: float | Array,
    *,
    clip: Clip = (0.0, 1.0),
    norm: str = "linf",
    loss: str = "ce",
) -> Array:
    """Fast Gradient Sign Method (FGM for ``norm="l2"``): one full-size gradient step.

    ``x_adv = clip(x + eps * sign(grad_x L(fn(x), y)))`` (thesis Eq. 2.1.2); for l2 the
    sign is replaced by ``grad / ||grad||_2`` (Eq. 2.1.3).

    Args:
      fn: batched network, ``fn(x) -> logits`` of shape ``(batch, classes)``.
      x: inputs ``(batch, ...)``; y: integer labels ``(batch,)``.
      eps: radius, a scalar or ``(batch,)``.
      clip: ``(low, high)`` input box (scalars or broadcastable arrays), or ``None``.
      norm: ``"linf"`` or ``"l2"``.
      loss: ``"ce"`` (cross-entropy) or ``"margin"`` (``max_{j != y} z_j - z_y``).

    Returns:
      Adversarial inputs shaped like ``x``.

    Example:
      >>> fn = lambda x: x @ jnp.array([[1.0, -1.0], [0.0, 0.0]])
      >>> fgsm(fn, jnp.array([[0.5, 0.5]]), jnp.array([0]), 0.1)
      Array([[0.4, 0.5]], dtype=float32)
    """
    _check_options(norm, loss)
    x, y, eps = _prepare("fgsm", x, y, eps)
    return _fgsm(_static(fn), x, y, eps, clip, loss=loss, norm=norm)


def pgd(
    fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    eps: float | Array,
    *,
    steps: int = 200,
    step_size: float | Array | None = None,
    restarts: int = 1,
    key: Array | None = None,
    loss: str = "ce",
    norm: str = "linf",
    clip: Clip = (0.0, 1.0),
    random_start: bool = True,
) -> Array:
    """Projected gradient ascent on the loss (Madry et al.), with random restarts.

    Each restart starts uniformly in the ``eps`` ball (``random_start``) and takes
    ``steps`` steps ``x <- proj(x + step_size * d)``, ``d`` the sign of the gradient
    (linf) or the l2-normalised gradient (l2), projected onto the ball intersected with
    ``clip``. Per example the result is the best point evaluated over all restarts
    and iterations (the clean ``x`` included): a misclassified point if any was found,
    else the one with the highest loss.

    Args:
      fn: batched network, ``fn(x) -> logits`` of shape ``(batch, classes)``.
      x: inputs ``(batch, ...)`` inside ``clip``; y: integer labels ``(batch,)``.
      eps: radius, a scalar or ``(batch,)``.
      steps: iterations per restart (thesis Table 3.4 reports 100-step PGD).
      step_size: scalar or ``(batch,)``; default ``2.5 * eps / steps`` (Madry).
      restarts: number of starts; restart ``r`` uses ``fold_in(key, r)`` (more than one
        only helps with ``random_start``).
      key: PRNG key of the random starts; ``None`` means ``PRNGKey(0)``.
      loss: ``"ce"`` or ``"margin"`` (CW-style ``max_{j != y} z_j - z_y``).
      norm: ``"linf"`` or ``"l2"``.
      clip: ``(low, high)`` input box, or ``None``.
      random_start: start uniformly in the ball rather than at ``x``.

    Returns:
      Adversarial inputs shaped like ``x``.

    Example:
      >>> fn = lambda x: x @ jnp.array([[1.0, -1.0], [-1.0, 1.0]])
      >>> x_adv = pgd(fn, jnp.array([[0.5, 0.5]]), jnp.array([0]), 0.1, steps=10)
      >>> [round(v, 4) for v in x_adv[0].tolist()]
      [0.4, 0.6]
    """
    _check_options(norm, loss)
    x, y, eps = _prepare("pgd", x, y, eps)
    _check_step_size(step_size)
    return _attack(
        _static(fn),
        x,
        y,
        eps,
        step_size,
        key,
        clip,
        loss=loss,
        norm=norm,
        steps=_check_count("steps", steps),
        restarts=_check_count("restarts", restarts),
        random_start=bool(random_start),
        samples=None,
    )


def eot_pgd(
    fn_random: Callable[[Array, Array], Array],
    x: Array,
    y: Array,
    eps: float | Array,
    *,
    key: Array,
    samples: int,
    steps: int,
    step_size: float | Array | None = None,
    restarts: int = 1,
    loss: str = "ce",
    norm: str = "linf",
    clip: Clip = (0.0, 1.0),
    random_start: bool = True,
) -> Array:
    """PGD with Expectation over Transformation, for randomised networks.

    ``fn_random(x, key) -> logits`` draws one network (noise, dropout, a Bayesian
    sample) per key. Every step uses the mean gradient over ``samples`` fresh keys
    (thesis Eq. 2.2.8); candidates are ranked by the mean loss and by the
    prediction of the mean logits. The samples are accumulated in a loop, so memory
    does not grow with ``samples``. EOT-FGSM (thesis §2.2.4: ``n = 20``, ``alpha =
    eps``, one step) is ``steps=1, step_size=eps, random_start=False``; the thesis'
    EOT-PGD uses ``alpha = eps / 4`` and 20 steps. With a deterministic ``fn_random``
    this is :func:`pgd` with the same ``key``.

    Args:
      fn_random: ``fn_random(x, key) -> logits`` of shape ``(batch, classes)``.
      key: PRNG key of the random starts and of the network samples.
      samples: network samples per gradient (and per loss evaluation).
      The other arguments are those of :func:`pgd`.

    Example:
      >>> def noisy(x, key):
      ...     w = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
      ...     return x @ w + 0.01 * jax.random.normal(key, (x.shape[0], 2))
      >>> x_adv = eot_pgd(noisy, jnp.array([[0.5, 0.5]]), jnp.array([0]), 0.1,
      ...                 key=jax.random.PRNGKey(1), samples=4, steps=10)
      >>> [round(v, 4) for v in x_adv[0].tolist()]
      [0.4, 0.6]
    """
    _check_options(norm, loss)
    x, y, eps = _prepare("eot_pgd", x, y, eps)
    _check_step_size(step_size)
    return _attack(
        _static(fn_random),
        x,
        y,
        eps,
        step_size,
        key,
        clip,
        loss=loss,
        norm=norm,
        steps=_check_count("steps", steps),
        restarts=_check_count("restarts", restarts),
        random_start=bool(random_start),
        samples=_check_count("samples", samples),
    )


def adversarial_accuracy(
    fn: Callable[[Array], Array], x: Array, y: Array, eps: float | Array, **pgd_kwargs
) -> Array:
    """Fraction of examples classified correctly both at ``x`` and at :func:`pgd`'s point.

    ``1 -`` this is the "PGD error" of CROWN-IBP Table 2 / thesis Table 3.4; it is never
    above the clean accuracy. ``pgd_kwargs`` are passed to :func:`pgd`.

    Example:
      >>> fn = lambda x: x @ jnp.array([[1.0, -1.0], [-1.0, 1.0]])
      >>> x = jnp.array([[0.9, 0.1], [0.52, 0.48]])
      >>> adversarial_accuracy(fn, x, jnp.array([0, 0]), 0.05, steps=10)
      Array(0.5, dtype=float32)
    """
    x_adv = pgd(fn, x, y, eps, **pgd_kwargs)
    y = jnp.asarray(y)
    robust = (jnp.argmax(fn(x), axis=-1) == y) & (jnp.argmax(fn(x_adv), axis=-1) == y)
    return jnp.mean(robust.astype(jnp.float32))
