"""Regulariser methods: ``CE(f(x), y) + lambda * R`` (DoubleMargin Table 1, SingleProp).

``R`` compares the cross-entropy of the worst logits a range allows (the lower end at
the label, the upper end elsewhere: SingleProp Eq. 4-5) with the natural one::

    R = CE(lower * onehot(y) + upper * (1 - onehot(y)), y) - CE(z_nom, y)

Registered methods and where their range comes from:

* ``singleprop-zero``, ``singleprop-fastlin``, ``double-margin``, ``double-margin-s``,
  ``ibp+v``: the margin domains of :mod:`jaxcert.domains.margins` (approximations);
  their nominal output is the logits, so one pass gives both terms;
* ``ibp-reg``: IBP's per-logit interval (IBP "as a regulariser", DoubleMargin Table 1).

``lambda`` is ``hparams["lam"]``: the ``lam_start -> lam_end`` ramp (0 -> 0.5 as IBP
does) or, with ``train.adaptive_lambda``, SingleProp's AHS value per epoch.
"""

from __future__ import annotations

from typing import Any

from jaxcert.bounds import bound
from jaxcert.domains.margins import MARGIN_METHODS, margins
from jaxcert.losses import accuracy, cross_entropy, range_regularizer
from jaxcert.methods import config_value, register
from jaxcert.sets import LinfBall


def make_regularized(domain: str):
    """A method maker for ``CE + lambda * R`` with the range of ``domain``."""

    def maker(apply_fn, num_classes: int, config: Any):
        del num_classes
        clip = (
            float(config_value(config, "clip_min", 0.0)),
            float(config_value(config, "clip_max", 1.0)),
        )
        gamma = float(config_value(config, "gamma", 0.1))

        def loss_fn(params, x, y, hparams, rng):
            del rng
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            s = LinfBall(x, hparams["eps"], clip=clip)
            if domain == "ibp-reg":
                logits = fn(x)
                b = bound(fn, s, "ibp")
                lower, upper = b.lower, b.upper
            else:
                m = margins(fn, s, domain, gamma=gamma)
                logits, lower, upper = m.nominal, m.lower, m.upper
            natural = cross_entropy(logits, y)
            reg = range_regularizer(lower, upper, logits, y)
            loss = natural + hparams["lam"] * reg
            metrics = {
                "loss": loss,
                "natural_loss": natural,
                "regularizer": reg,
                "clean_acc": accuracy(logits, y),
            }
            return loss, metrics

        return loss_fn

    return maker


for _name in (*MARGIN_METHODS, "ibp-reg"):
    register(_name)(make_regularized(_name))
