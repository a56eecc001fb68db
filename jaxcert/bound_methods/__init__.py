"""Bound methods as objects, and the registry that names them.

=================  =========================================  ===============================
name               object                                     intermediate bounds / final pass
=================  =========================================  ===============================
``ibp``            ``IBP()``                                  IBP / IBP with ``C`` elided
``crown-ibp``      ``CrownIBP()``                             IBP / backward, adaptive slopes
``cap-ibp``        ``CrownIBP(relaxation="fastlin")``         IBP / backward, Fast-Lin slopes
``crown``          ``Crown()``                                backward per layer / backward
``fastlin``        ``Crown(relaxation="fastlin")``            the same with Fast-Lin slopes
``cnn-cert-zero``  ``Crown(relaxation="zero")``               the same with lower slopes 0
``crown-ibp-opt``  ``CrownIBPOpt(key)``                       IBP / slopes from signed steps
``crown-opt``      ``CrownOpt()``                             all slopes optimised (Adam)
``bcp``            ``BCP()``                                  L2 ball ∩ box / ball ∩ box
``lmt``            ``LMT()``                                  L2 ball / the ball alone
=================  =========================================  ===============================

Method names are spelled here and in experiment configs only; everything else asks the
object (``isinstance(m, LinearMethod)``, ``m.needs_key``, ``m.intermediate(net)``).
"""

from __future__ import annotations

from typing import Any

from jaxcert.bound_methods.base import Method, Network
from jaxcert.bound_methods.crown import Crown, CrownIBP, LinearMethod
from jaxcert.bound_methods.ibp import IBP
from jaxcert.bound_methods.lipschitz import BCP, LMT
from jaxcert.bound_methods.optimised import CrownIBPOpt, CrownOpt
from jaxcert.options import Registry

__all__ = [
    "METHODS",
    "Method",
    "LinearMethod",
    "Network",
    "IBP",
    "CrownIBP",
    "Crown",
    "CrownIBPOpt",
    "CrownOpt",
    "BCP",
    "LMT",
    "register_method",
    "get_method",
]

_REGISTRY: Registry[Method] = Registry("bound method", Method)

#: Every bound method's name -> its default object (read-only; see :func:`register_method`).
METHODS = _REGISTRY.defaults


def register_method(name: str, method: Method, *, override: bool = False) -> None:
    """Names a method object, so that :func:`jaxcert.bound`, the training methods and
    ``certify.verifiers`` accept ``name`` (training uses the mixed CROWN-IBP objective
    with it as the linear bound). A name is registered once, unless ``override``.

    Example:
      >>> m = jaxcert.CrownIBP(relaxation="zero")
      >>> jaxcert.register_method("crown-ibp-zero", m, override=True)
      >>> jaxcert.get_method("crown-ibp-zero")
      CrownIBP(relaxation='zero', slopes=None, chunk_size=None)
    """
    _REGISTRY.register(name, method, override=override)


def get_method(method: str | Method, **options: Any) -> Method:
    """The method object for a name (or an object), with ``options`` applied.

    An option the method does not have raises :class:`TypeError` listing the ones it has.

    Example:
      >>> jaxcert.get_method("crown", intersect_ibp=False).intersect_ibp
      False
    """
    return _REGISTRY.resolve(method, **options)


for _name, _method in (
    ("ibp", IBP()),
    ("crown-ibp", CrownIBP()),
    ("crown", Crown()),
    ("fastlin", Crown(relaxation="fastlin")),
    ("cap-ibp", CrownIBP(relaxation="fastlin")),
    ("crown-ibp-opt", CrownIBPOpt()),
    ("crown-opt", CrownOpt()),
    # CNN-Cert with CROWN-type bounds whose lower ReLU slope is always 0 (SingleProp's
    # "CNN-Cert-Zero", 002 §4): the verifier SingleProp-Zero approximates.
    ("cnn-cert-zero", Crown(relaxation="zero")),
    ("bcp", BCP()),
    ("lmt", LMT()),
):
    register_method(_name, _method)
