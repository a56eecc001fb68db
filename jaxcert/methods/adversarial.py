"""PGD adversarial training (Madry et al.): cross-entropy at a PGD point."""

from __future__ import annotations

from typing import Any

import jax

from jaxcert.attacks import pgd
from jaxcert.losses import accuracy, cross_entropy
from jaxcert.methods.options import clip_range, config_value, pgd_step_size
from jaxcert.methods.registry import register


@register("pgd")
def make_pgd(apply_fn, num_classes: int, config: Any):
    """``CE(f(x_adv), y)`` with ``x_adv`` from PGD at the scheduled ``eps``.

    Config keys: ``pgd_steps`` (default 7), ``pgd_step_size`` (0 or absent: ``2.5 eps /
    steps``), ``pgd_restarts`` (1), ``clip_min``/``clip_max`` (0, 1).
    """
    del num_classes
    steps = int(config_value(config, "pgd_steps", 7))
    step_size = pgd_step_size(config)
    restarts = int(config_value(config, "pgd_restarts", 1))
    clip = clip_range(config)

    def loss_fn(params, x, y, hparams, rng):
        fn = lambda z: apply_fn(params, z)  # noqa: E731
        eps = hparams["eps"]
        x_adv = pgd(
            fn,
            x,
            y,
            eps,
            steps=steps,
            restarts=restarts,
            key=rng,
            clip=clip,
            step_size=step_size,
        )
        x_adv = jax.lax.stop_gradient(x_adv)
        adv_logits = fn(x_adv)
        loss = cross_entropy(adv_logits, y)
        metrics = {
            "loss": loss,
            "clean_acc": accuracy(fn(x), y),
            "pgd_acc": accuracy(adv_logits, y),
        }
        return loss, metrics

    return loss_fn
