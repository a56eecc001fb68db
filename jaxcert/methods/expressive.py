"""Expressive losses (De Palma et al., ICLR 2024): IBP and an attack, one coefficient.

Each loss spans the adversarial loss (``alpha = 0``) and IBP's robust loss (``alpha =
1``) with one over-approximation coefficient ``alpha`` (config key ``alpha``), from the
margins ``z_adv = C f(x_adv)`` at an attack point and IBP's margin lower bounds ``m``
(``C``: :func:`jaxcert.margin_spec`; ``L(z)`` the cross-entropy of the worst-case
logits built from margins ``z``, so ``L(z_adv) = CE(f(x_adv), y)``):

* ``cc-ibp``: ``L((1 - alpha) z_adv + alpha m)``, a convex combination of the margins;
* ``mtl-ibp``: ``(1 - alpha) L(z_adv) + alpha L(m)``, of the losses;
* ``exp-ibp``: ``L(z_adv)^(1 - alpha) * L(m)^alpha`` per example, in log space.

Since ``m <= z_adv`` (a sound bound lies below any reachable margin), each lies between
``L(z_adv)`` and ``L(m)``. The attack is PGD from a random start with ``pgd_steps``
steps (the paper's choice is a single step: ``pgd_steps=1``) of size ``pgd_step_size``
(0: ``2.5 eps / steps``), within the ``clip`` range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcert.attacks import pgd
from jaxcert.bounds import bound
from jaxcert.losses import accuracy, verified
from jaxcert.methods.options import clip_range, config_value, pgd_step_size
from jaxcert.methods.registry import MethodMaker, register
from jaxcert.sets import LinfBall
from jaxcert.specs import margin_spec, worst_case_logits

Array = jax.Array

__all__ = ["EXPRESSIVE_LOSSES", "expressive_loss", "make_expressive"]


def _per_example_loss(margins: Array, y: Array, num_classes: int) -> Array:
    """``L(z)`` per example, ``(batch,)``: CE of the worst-case logits of margins ``z``."""
    logits = worst_case_logits(margins, y, num_classes)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _cc(adv: Array, ibp: Array, y: Array, c: int, alpha: Array | float) -> Array:
    return jnp.mean(_per_example_loss((1 - alpha) * adv + alpha * ibp, y, c))


def _mtl(adv: Array, ibp: Array, y: Array, c: int, alpha: Array | float) -> Array:
    loss_adv, loss_ibp = _per_example_loss(adv, y, c), _per_example_loss(ibp, y, c)
    return jnp.mean((1 - alpha) * loss_adv + alpha * loss_ibp)


def _exp(adv: Array, ibp: Array, y: Array, c: int, alpha: Array | float) -> Array:
    loss_adv, loss_ibp = _per_example_loss(adv, y, c), _per_example_loss(ibp, y, c)
    return jnp.mean(loss_adv ** (1 - alpha) * loss_ibp**alpha)


EXPRESSIVE_LOSSES: dict[str, Callable[..., Array]] = {
    "cc-ibp": _cc,
    "mtl-ibp": _mtl,
    "exp-ibp": _exp,
}


def expressive_loss(
    name: str, adv_margins: Array, ibp_margins: Array, y: Array, alpha: Array | float
) -> Array:
    """The expressive loss ``name`` from attack margins and IBP's margin lower bounds.

    Args:
      name: ``"cc-ibp"``, ``"mtl-ibp"`` or ``"exp-ibp"``.
      adv_margins, ibp_margins: ``(batch, num_classes - 1)`` in the row order of
        :func:`jaxcert.margin_spec`.
      y: ``(batch,)`` labels.
      alpha: the over-approximation coefficient in ``[0, 1]``.

    Example:
      >>> adv, ibp, y = jnp.array([[2.0]]), jnp.array([[-1.0]]), jnp.array([0])
      >>> [round(float(expressive_loss("mtl-ibp", adv, ibp, y, a)), 4) for a in (0, 1)]
      [0.1269, 1.3133]
    """
    if name not in EXPRESSIVE_LOSSES:
        raise ValueError(f"unknown expressive loss {name!r}; one of {sorted(EXPRESSIVE_LOSSES)}")
    num_classes = adv_margins.shape[-1] + 1
    return EXPRESSIVE_LOSSES[name](adv_margins, ibp_margins, y, num_classes, alpha)


def make_expressive(name: str) -> MethodMaker:
    """A method maker for the expressive loss ``name`` (config: ``alpha``, ``pgd_steps``,
    ``pgd_step_size``, ``clip_min``/``clip_max``)."""

    def maker(apply_fn, num_classes: int, config: Any):
        alpha = float(config_value(config, "alpha", 0.5))
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        steps = int(config_value(config, "pgd_steps", 1))
        step_size = pgd_step_size(config)
        clip = clip_range(config)

        def loss_fn(params, x, y, hparams, rng):
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            eps = hparams["eps"]
            spec = margin_spec(y, num_classes)
            x_adv = pgd(fn, x, y, eps, steps=steps, step_size=step_size, key=rng, clip=clip)
            adv = jnp.einsum("bko,bo->bk", spec, fn(x_adv))
            ibp = bound(fn, LinfBall(x, eps, clip=clip), spec=spec, bound_upper=False).lower
            loss = expressive_loss(name, adv, ibp, y, alpha)
            metrics = {
                "loss": loss,
                "clean_acc": accuracy(fn(x), y),
                "pgd_acc": jnp.mean(jnp.all(adv > 0, axis=-1)),
                "verified_acc": jnp.mean(verified(ibp)),
            }
            return loss, metrics

        return loss_fn

    return maker


for _name in EXPRESSIVE_LOSSES:
    register(_name)(make_expressive(_name))
