"""Certified training from margin bounds: IBP, CROWN-IBP and their relatives.

The objective (CROWN-IBP, Eq. 9) mixes a natural and a robust cross-entropy:

    kappa * CE(f(x), y) + (1 - kappa) * CE(worst((1 - beta) m_IBP + beta m_method), y)

where ``m`` are lower bounds of the margins ``z_y - z_j`` over the eps ball and
``worst`` builds the worst-case logits (thesis §3.1). ``beta`` is ignored by IBP.
When ``hparams["use_linear"]`` is the Python value False (the training loop passes it
as a static flag: ``beta == 0`` or ``kappa == 1`` at this step), the linear bound is not
computed at all, so the warm-up and the IBP phase of a ``beta: 1 -> 0`` schedule cost
what IBP costs. (A ``lax.cond``
on a traced ``beta`` would do the same inside one program, but XLA's CPU backend runs
the differentiated conditional ~3.5x slower.)

Every bound method of :data:`jaxcert.METHODS` is a training method of this objective
(registered as a family, so methods named later with :func:`jaxcert.register_method`
train too): IBP, CROWN-IBP, the thesis' "OURS" (one signed step on the lower slopes,
``opt_steps`` / ``opt_step_size`` in the config), CAP-IBP, and, for small networks,
CROWN and Fast-Lin.

``crown-ibp-tight``, ``crown-tight`` and ``fastlin-tight`` add the tightness
regularisers of ``001_…`` (Eq. 4, :mod:`jaxcert.tightness`) to the same objective:
``+ tight_d * mean_b sum_t d + tight_r * mean_b sum_t r`` (config keys ``tight_d``,
``tight_r``), computed where the linear bound is.

With ``loss_fusion`` (config key; any :class:`~jaxcert.LinearMethod`) the robust term
is the fused bound of the cross-entropy itself (:mod:`jaxcert.loss_fusion`): one
backward row instead of ``num_classes - 1``, mixed
with IBP's bound by ``beta`` on the sum of exponentials rather than on the margins.
It is a different (sound) objective, not a faster route to the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import (
    IBP,
    METHODS,
    Crown,
    CrownIBP,
    CrownIBPOpt,
    LinearMethod,
    Method,
    get_method,
)
from jaxcert.bounds import TracedNetwork
from jaxcert.loss_fusion import LINEAR_METHODS, fused_cross_entropy_bound
from jaxcert.losses import mixed_objective, robust_cross_entropy, verified
from jaxcert.methods.options import clip_range, config_value
from jaxcert.methods.registry import MethodMaker, register, register_family
from jaxcert.sets import LinfBall
from jaxcert.specs import margin_spec
from jaxcert.tightness import tightness

Array = jax.Array


def _configured(method: Method, config: Any) -> Method:
    """The method with the options its config section sets: the signed-step method's
    ``opt_steps`` and ``opt_step_size``."""
    if isinstance(method, CrownIBPOpt):
        return dataclasses.replace(
            method,
            steps=int(config_value(config, "opt_steps", 1)),
            step_size=float(config_value(config, "opt_step_size", 2.0)),
        )
    return method


def make_certified(bound_method: Method, tight: bool = False) -> MethodMaker:
    """A method maker for the mixed objective with ``bound_method`` as ``m_method``;
    ``tight`` adds the tightness regularisers (it needs a :class:`~jaxcert.LinearMethod`)."""
    if tight and not isinstance(bound_method, LinearMethod):
        raise ValueError(f"the tightness regularisers need a linear method, not {bound_method}")

    def maker(apply_fn, num_classes: int, config: Any):
        tight_d = float(config_value(config, "tight_d", 0.0))
        tight_r = float(config_value(config, "tight_r", 0.0))
        loss_fusion = bool(config_value(config, "loss_fusion", False))
        if loss_fusion and not isinstance(bound_method, LinearMethod):
            raise ValueError(
                f"loss_fusion needs a linear method (one of {LINEAR_METHODS}), not {bound_method}"
            )
        clip = clip_range(config)
        method = _configured(bound_method, config)
        ibp_only = isinstance(method, IBP)

        def margins(net, spec, m: Method, rng):
            m = m.with_key(rng) if m.needs_key else m
            return net.bound(m, spec=spec, bound_upper=False).lower

        def loss_fn(params, x, y, hparams, rng):
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            eps, kappa = hparams["eps"], hparams["kappa"]
            s = LinfBall(x, eps, clip=clip)
            if loss_fusion and hparams.get("use_linear", True) is not False:
                return _fused_loss(fn, s, x, y, num_classes, method, hparams)
            spec = margin_spec(y, num_classes)
            # One trace and one IBP pass for both bounds (and one gradient through it).
            net = TracedNetwork(fn, s)
            m_ibp = margins(net, spec, IBP(), rng)
            extra = {}
            penalty: Array | float = 0.0
            if ibp_only or hparams.get("use_linear", True) is False:
                m = m_ibp
            elif tight:
                t = tightness(fn, s, spec, method, network=net)
                beta = hparams["beta"]
                m = (1 - beta) * m_ibp + beta * t.lower
                extra = {
                    "tight_d": jnp.mean(jnp.sum(t.d, -1)),
                    "tight_r": jnp.mean(jnp.sum(t.r, -1)),
                }
                penalty = tight_d * extra["tight_d"] + tight_r * extra["tight_r"]
            else:
                beta = hparams["beta"]
                m = (1 - beta) * m_ibp + beta * margins(net, spec, method, rng)
            robust = robust_cross_entropy(m, y, num_classes)
            loss, metrics = mixed_objective(fn(x), y, robust, kappa, verified(m), penalty)
            return loss, {**extra, **metrics}

        return loss_fn

    return maker


def _fused_loss(fn, s, x, y, num_classes: int, bound_method: Method, hparams):
    """The mixed objective with the fused robust cross-entropy."""
    fused = fused_cross_entropy_bound(fn, s, y, num_classes, bound_method, hparams["beta"])
    robust = jnp.mean(fused.upper)
    return mixed_objective(fn(x), y, robust, hparams["kappa"], fused.verified)


class _BoundMethods:
    """Every registered bound method (:data:`jaxcert.METHODS`) trains with the mixed
    objective; registered later ones too."""

    norms: tuple[str, ...] = ("linf",)

    def names(self) -> Iterable[str]:
        return METHODS.keys()

    def maker(self, name: str) -> MethodMaker:
        return make_certified(get_method(name))


register_family(_BoundMethods())
for _name, _method in (
    ("crown-ibp-tight", CrownIBP()),
    ("crown-tight", Crown()),
    ("fastlin-tight", Crown(relaxation="fastlin")),
):
    register(_name)(make_certified(_method, tight=True))
