"""SABR (Müller et al., ICLR 2023): IBP through a small box around an adversarial point.

For each example, PGD finds ``x'`` in the shrunk region ``B(x, eps - tau)`` (within the
input range), with ``tau = lambda * eps``; IBP then bounds the network over the small
box ``B(x', tau)``, which lies inside the full region ``B(x, eps)``. The training loss
is ``kappa CE(f(x)) + (1 - kappa) CE(worst-case logits of the small box)``, the mixed
objective of IBP training with the small box in place of the full one.

``lambda = 1`` is IBP training (the shrunk region is ``{x}``); ``lambda -> 0`` tends to
adversarial training at ``x'``. Because interval arithmetic is inclusion-monotone, the
robust term lies between the cross-entropy at ``x'`` and IBP's over the full region:
SABR's loss is **not a bound** of the worst case over ``B(x, eps)`` (its certificates
come from certification after training, not from the training loss). Config keys:
``sabr_lambda`` (default 0.4, a guess: the paper tunes it per setting), ``pgd_steps``,
``pgd_step_size`` (0: ``2.5 (eps - tau) / steps``), ``clip_min``/``clip_max``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.attacks import pgd
from jaxcert.bounds import bound
from jaxcert.losses import mixed_objective, robust_cross_entropy, verified
from jaxcert.methods.options import clip_range, config_value, pgd_step_size
from jaxcert.methods.registry import register
from jaxcert.sets import Box
from jaxcert.specs import margin_spec

Array = jax.Array

__all__ = ["small_box", "make_sabr"]


def small_box(
    x: Array, x_adv: Array, eps: Array | float, tau: Array | float, clip: tuple[float, float]
) -> Box:
    """The box ``B(x_adv, tau)`` within the input range, kept inside ``B(x, eps)``.

    ``x_adv`` should lie in ``B(x, eps - tau)``; it is moved there if it does not, so
    the box never leaves the region.

    Example:
      >>> b = small_box(jnp.array([[0.5]]), jnp.array([[0.9]]), 0.3, 0.1, (0.0, 1.0))
      >>> round(float(b.lower[0, 0]), 4), round(float(b.upper[0, 0]), 4)  # centre 0.7
      (0.6, 0.8)
    """
    centre = jnp.clip(x_adv, x - (eps - tau), x + (eps - tau))
    lower = jnp.clip(centre - tau, *clip)
    upper = jnp.clip(centre + tau, *clip)
    return Box(lower, upper)


@register("sabr")
def make_sabr(apply_fn, num_classes: int, config: Any):
    """The mixed objective of IBP over SABR's small boxes (see the module docstring)."""
    lam = float(config_value(config, "sabr_lambda", 0.4))
    if not 0 < lam <= 1:
        raise ValueError(f"sabr_lambda must lie in (0, 1], got {lam}")
    steps = int(config_value(config, "pgd_steps", 7))
    fixed_step = pgd_step_size(config)
    clip = clip_range(config)

    def loss_fn(params, x, y, hparams, rng):
        fn = lambda z: apply_fn(params, z)  # noqa: E731
        eps = hparams["eps"]
        tau = lam * eps
        if lam == 1:  # the shrunk region is {x}: no attack
            x_adv = x
        else:
            step = fixed_step if fixed_step is not None else 2.5 * (eps - tau) / steps
            x_adv = pgd(fn, x, y, eps - tau, steps=steps, step_size=step, key=rng, clip=clip)
        spec = margin_spec(y, num_classes)
        box = small_box(x, jax.lax.stop_gradient(x_adv), eps, tau, clip)
        m = bound(fn, box, spec=spec, bound_upper=False).lower
        robust = robust_cross_entropy(m, y, num_classes)
        loss, metrics = mixed_objective(fn(x), y, robust, hparams["kappa"], verified(m))
        # ``verified_acc`` here is of the small boxes, not a certificate of B(x, eps).
        metrics["small_box_verified_acc"] = metrics.pop("verified_acc")
        metrics["tau"] = jnp.asarray(tau)
        return loss, metrics

    return loss_fn
