"""TRADES (Zhang et al., 2019): the natural loss plus beta times a KL robustness term.

``CE(f(x), y) + beta * KL(p(x) || p(x'))`` with ``p = softmax(f)`` and ``x'`` the point
of the Linf ball (within the input range) that maximises the KL term, found by sign
gradient ascent from ``x + 0.001 * N(0, 1)`` (TRADES' own start; its last iterate, not a
"best" point, since the inner objective does not involve the label). DoubleMargin
(``000_…``) and SingleProp (``002_…``) compare with it as the adversarial-training
baseline. ``beta = 0`` is natural training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.losses import accuracy, cross_entropy
from jaxcert.methods.options import clip_range, config_value, pgd_step_size
from jaxcert.methods.registry import register

Array = jax.Array

__all__ = ["kl_divergence", "trades_perturbation", "make_trades"]


def kl_divergence(clean_logits: Array, logits: Array) -> Array:
    """Per-example ``KL(softmax(clean_logits) || softmax(logits))``, ``(batch,)``.

    Example:
      >>> z = jnp.array([[1.0, 2.0]])
      >>> float(kl_divergence(z, z)[0])
      0.0
    """
    clean = jax.nn.log_softmax(clean_logits, axis=-1)
    other = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(clean) * (clean - other), axis=-1)


def trades_perturbation(
    fn: Callable[[Array], Array],
    x: Array,
    eps: float | Array,
    *,
    steps: int,
    step_size: float | Array,
    key: Array,
    clip: tuple[float, float] = (0.0, 1.0),
) -> Array:
    """TRADES' inner maximiser: ``steps`` sign-gradient steps on ``KL(p(x) || p(x'))``.

    ``x`` is ``(batch, ...)``; the result stays within ``eps`` of ``x`` in Linf and inside
    ``clip``, and is a constant for ``jax.grad`` (the outer loss differentiates only
    the network at it). One ``lax.fori_loop``: no Python loop over steps.

    Example:
      >>> fn = lambda x: x @ jnp.array([[2.0, -2.0], [0.0, 0.0]])
      >>> x = jnp.array([[0.5, 0.5]])
      >>> x_adv = trades_perturbation(fn, x, 0.1, steps=5, step_size=0.05,
      ...                             key=jax.random.PRNGKey(0))
      >>> bool(jnp.max(jnp.abs(x_adv - x)) <= 0.1 + 1e-6)
      True
    """
    x = jax.lax.stop_gradient(x)
    clean = jax.lax.stop_gradient(fn(x))

    def total_kl(z: Array) -> Array:
        return jnp.sum(kl_divergence(clean, fn(z)))

    def project(z: Array) -> Array:
        return jnp.clip(jnp.clip(z, x - eps, x + eps), *clip)

    def step(_: int | Array, z: Array) -> Array:
        grad = jax.lax.stop_gradient(jax.grad(total_kl)(z))
        return project(z + step_size * jnp.sign(grad))

    start = project(x + 0.001 * jax.random.normal(key, x.shape, x.dtype))
    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, step, start))


@register("trades")
def make_trades(apply_fn, num_classes: int, config: Any):
    """``CE(f(x), y) + beta * mean KL(p(x) || p(x'))`` at the scheduled ``eps``.

    Config keys: ``trades_beta`` (default 6.0, TRADES' CIFAR-10 value), ``pgd_steps``
    (7), ``pgd_step_size`` (0 or absent: ``2.5 eps / steps``), ``clip_min``/``clip_max``.
    """
    del num_classes
    beta = float(config_value(config, "trades_beta", 6.0))
    steps = int(config_value(config, "pgd_steps", 7))
    fixed_step = pgd_step_size(config)
    clip = clip_range(config)
    if beta < 0:
        raise ValueError(f"trades_beta must be >= 0, got {beta}")

    def loss_fn(params, x, y, hparams, rng):
        fn = lambda z: apply_fn(params, z)  # noqa: E731
        eps = hparams["eps"]
        step_size = fixed_step if fixed_step is not None else 2.5 * eps / steps
        logits = fn(x)
        natural = cross_entropy(logits, y)
        x_adv = trades_perturbation(
            fn, x, eps, steps=steps, step_size=step_size, key=rng, clip=clip
        )
        adv_logits = fn(x_adv)
        robust = jnp.mean(kl_divergence(logits, adv_logits))
        loss = natural + beta * robust
        metrics = {
            "loss": loss,
            "natural_loss": natural,
            "kl": robust,
            "clean_acc": accuracy(logits, y),
            "adv_acc": accuracy(adv_logits, y),
        }
        return loss, metrics

    return loss_fn
