"""Certified training from margin bounds: IBP, CROWN-IBP and their relatives.

The objective (CROWN-IBP, Eq. 9) mixes a natural and a robust cross-entropy:

    kappa * CE(f(x), y) + (1 - kappa) * CE(worst((1 - beta) m_IBP + beta m_method), y)

where ``m`` are lower bounds of the margins ``z_y - z_j`` over the eps ball and
``worst`` builds the worst-case logits (thesis §3.1). ``beta`` is ignored by "ibp".
When ``hparams["use_linear"]`` is the Python value False (the training loop passes it
as a static flag: ``beta == 0`` or ``kappa == 1`` at this step), the linear bound is not
computed at all, so the warm-up and the IBP phase of a ``beta: 1 -> 0`` schedule cost
what IBP costs. (A ``lax.cond``
on a traced ``beta`` would do the same inside one program, but XLA's CPU backend runs
the differentiated conditional ~3.5x slower.)

Registered methods: ``ibp``, ``crown-ibp``, ``crown-ibp-opt`` (the thesis' "OURS":
one signed step on the lower slopes, ``beta`` 1 by default), ``cap-ibp``, and, for
small networks, ``crown`` and ``fastlin``.

``crown-ibp-tight``, ``crown-tight`` and ``fastlin-tight`` add the tightness
regularisers of ``001_…`` (Eq. 4, :mod:`jaxcert.tightness`) to the same objective:
``+ tight_d * mean_b sum_t d + tight_r * mean_b sum_t r`` (config keys ``tight_d``,
``tight_r``), computed where the linear bound is.

With ``loss_fusion`` (config key; ``crown-ibp``, ``cap-ibp``, ``crown``, ``fastlin``)
the robust term is the fused bound of the cross-entropy itself
(:mod:`jaxcert.loss_fusion`): one backward row instead of ``num_classes - 1``, mixed
with IBP's bound by ``beta`` on the sum of exponentials rather than on the margins.
It is a different (sound) objective, not a faster route to the same numbers.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcert.bounds import TracedNetwork
from jaxcert.loss_fusion import LINEAR_METHODS, fused_cross_entropy_bound
from jaxcert.losses import mixed_objective, robust_cross_entropy, verified
from jaxcert.methods import config_value, register
from jaxcert.sets import LinfBall
from jaxcert.specs import margin_spec
from jaxcert.tightness import tightness


def make_certified(bound_method: str):
    """A method maker for the mixed objective with ``bound_method`` as ``m_method``."""

    tight = bound_method.endswith("-tight")
    base_method = bound_method.removesuffix("-tight")

    def maker(apply_fn, num_classes: int, config: Any):
        tight_d = float(config_value(config, "tight_d", 0.0))
        tight_r = float(config_value(config, "tight_r", 0.0))
        loss_fusion = bool(config_value(config, "loss_fusion", False))
        if loss_fusion and bound_method not in LINEAR_METHODS:
            raise ValueError(
                f"loss_fusion needs one of {LINEAR_METHODS}, not method {bound_method!r}"
            )
        clip = (
            float(config_value(config, "clip_min", 0.0)),
            float(config_value(config, "clip_max", 1.0)),
        )
        opt_kwargs = {}
        if bound_method == "crown-ibp-opt":
            opt_kwargs = {
                "steps": int(config_value(config, "opt_steps", 1)),
                "step_size": float(config_value(config, "opt_step_size", 2.0)),
            }

        def margins(net, spec, method, rng):
            kwargs = dict(opt_kwargs, key=rng) if method == "crown-ibp-opt" else {}
            return net.bound(method, spec=spec, bound_upper=False, **kwargs).lower

        def loss_fn(params, x, y, hparams, rng):
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            eps, kappa = hparams["eps"], hparams["kappa"]
            s = LinfBall(x, eps, clip=clip)
            if loss_fusion and hparams.get("use_linear", True) is not False:
                return _fused_loss(fn, s, x, y, num_classes, bound_method, hparams)
            spec = margin_spec(y, num_classes)
            # One trace and one IBP pass for both bounds (and one gradient through it).
            net = TracedNetwork(fn, s)
            m_ibp = margins(net, spec, "ibp", rng)
            extra = {}
            if bound_method == "ibp" or hparams.get("use_linear", True) is False:
                m = m_ibp
                penalty = 0.0
            elif tight:
                t = tightness(fn, s, spec, base_method, network=net)
                beta = hparams["beta"]
                m = (1 - beta) * m_ibp + beta * t.lower
                extra = {
                    "tight_d": jnp.mean(jnp.sum(t.d, -1)),
                    "tight_r": jnp.mean(jnp.sum(t.r, -1)),
                }
                penalty = tight_d * extra["tight_d"] + tight_r * extra["tight_r"]
            else:
                beta = hparams["beta"]
                m = (1 - beta) * m_ibp + beta * margins(net, spec, bound_method, rng)
                penalty = 0.0
            robust = robust_cross_entropy(m, y, num_classes)
            loss, metrics = mixed_objective(fn(x), y, robust, kappa, verified(m), penalty)
            return loss, {**extra, **metrics}

        return loss_fn

    return maker


def _fused_loss(fn, s, x, y, num_classes: int, bound_method: str, hparams):
    """The mixed objective with the fused robust cross-entropy."""
    fused = fused_cross_entropy_bound(fn, s, y, num_classes, bound_method, hparams["beta"])
    robust = jnp.mean(fused.upper)
    return mixed_objective(fn(x), y, robust, hparams["kappa"], fused.verified)


for _name in (
    "ibp",
    "crown-ibp",
    "crown-ibp-opt",
    "cap-ibp",
    "crown",
    "fastlin",
    "crown-ibp-tight",
    "crown-tight",
    "fastlin-tight",
):
    register(_name)(make_certified(_name))
