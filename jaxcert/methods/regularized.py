"""Regulariser methods: ``CE(f(x), y) + lambda * R`` (DoubleMargin Table 1, SingleProp).

``R`` turns a range ``[lower, upper]`` of the logits into an upper bound of the loss, in
the form each paper uses:

* SingleProp (``002_…`` Eq. 4-5): the cross-entropy of the worst logits the range allows
  (the lower end at the label, the upper end elsewhere),
  ``CE(lower * onehot(y) + upper * (1 - onehot(y)), y) - CE(z_nom, y)``
  (:func:`jaxcert.losses.range_regularizer`);
* DoubleMargin and its IBP baseline (``000_…`` §3): the loss split into an increasing and
  a decreasing part, ``L+(upper) + L-(lower) - CE(z_nom, y)`` with ``L+ = logsumexp`` and
  ``L- = -z_y`` (:func:`jaxcert.losses.split_regularizer`), looser by design.

Registered methods and where their range comes from:

* ``singleprop-zero``, ``singleprop-fastlin``, ``double-margin``, ``double-margin-s``,
  ``ibp+v``: the margin domains of :mod:`jaxcert.domains.margins` (approximations);
  their nominal output is the logits, so one pass gives both terms;
* ``ibp-reg``: IBP's per-logit interval (IBP "as a regulariser", DoubleMargin Table 1),
  with DoubleMargin's split form.

``lambda`` is ``hparams["lam"]``: the ``lam_start -> lam_end`` ramp (0 -> 0.5 as IBP
does) or, with ``train.adaptive_lambda``, SingleProp's AHS value per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jaxcert.bounds import bound
from jaxcert.domains.margins import MARGIN_METHODS, DoubleMargin, MarginMethod, margins
from jaxcert.losses import accuracy, cross_entropy, range_regularizer, split_regularizer
from jaxcert.methods.options import clip_range, config_value
from jaxcert.methods.registry import MethodMaker, register, register_family
from jaxcert.options import option_names, with_options
from jaxcert.sets import LinfBall


def make_regularized(domain: MarginMethod | None) -> MethodMaker:
    """A method maker for ``CE + lambda * R`` with the range of the margin method
    ``domain`` (None: IBP's sound per-logit interval)."""

    def maker(apply_fn, num_classes: int, config: Any):
        del num_classes
        clip = clip_range(config)
        method = domain
        if method is not None and "gamma" in option_names(method):
            method = with_options(method, gamma=float(config_value(config, "gamma", 0.1)))
        # 000's split form for DoubleMargin and for IBP as its baseline; 002's for SingleProp.
        split = method is None or isinstance(method, DoubleMargin)
        regularizer = split_regularizer if split else range_regularizer

        def loss_fn(params, x, y, hparams, rng):
            del rng
            fn = lambda z: apply_fn(params, z)  # noqa: E731
            s = LinfBall(x, hparams["eps"], clip=clip)
            if method is None:
                logits = fn(x)
                b = bound(fn, s)  # IBP
                lower, upper = b.lower, b.upper
            else:
                m = margins(fn, s, method)
                logits, lower, upper = m.nominal, m.lower, m.upper
            natural = cross_entropy(logits, y)
            reg = regularizer(lower, upper, logits, y)
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


class _MarginMethods:
    """Every margin method (:data:`jaxcert.domains.margins.MARGIN_METHODS`) as ``CE +
    lambda R`` with its range."""

    norms: tuple[str, ...] = ("linf",)

    def names(self) -> Iterable[str]:
        return MARGIN_METHODS.keys()

    def maker(self, name: str) -> MethodMaker:
        return make_regularized(MARGIN_METHODS[name])


register_family(_MarginMethods())
register("ibp-reg")(make_regularized(None))
