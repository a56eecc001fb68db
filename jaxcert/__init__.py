"""jaxcert: sound bounds and certified training for JAX/Flax models.

Example:
  >>> import jax.numpy as jnp, jaxcert
  >>> x, y = jnp.zeros((1, 2)), jnp.array([0])
  >>> fn = lambda x: x @ jnp.array([[1.0, -1.0], [1.0, 1.0]])
  >>> s = jaxcert.LinfBall(x, 0.1)
  >>> jaxcert.bound(fn, s, "crown-ibp", spec=jaxcert.margin_spec(y, 2)).lower
  Array([[-0.2]], dtype=float32)
"""

from jaxcert.bound_methods import (
    BCP,
    IBP,
    LMT,
    METHODS,
    Crown,
    CrownIBP,
    CrownIBPOpt,
    CrownOpt,
    LinearMethod,
    Method,
    get_method,
    register_method,
)
from jaxcert.bounds import Bounds, TracedNetwork, bound
from jaxcert.errors import UnsupportedOperation
from jaxcert.loss_fusion import FusedLossBound, fused_cross_entropy_bound
from jaxcert.radius import certified_radius
from jaxcert.sets import Box, InputSet, L0Ball, L1Ball, L2Ball, LinfBall
from jaxcert.specs import margin_spec, worst_case_logits
from jaxcert.xla_options import compiler_options

__version__ = "0.1.0"

__all__ = [
    "BCP",
    "IBP",
    "LMT",
    "METHODS",
    "Bounds",
    "Crown",
    "CrownIBP",
    "CrownIBPOpt",
    "CrownOpt",
    "LinearMethod",
    "Method",
    "Box",
    "FusedLossBound",
    "InputSet",
    "L0Ball",
    "L1Ball",
    "L2Ball",
    "LinfBall",
    "TracedNetwork",
    "UnsupportedOperation",
    "bound",
    "certified_radius",
    "compiler_options",
    "fused_cross_entropy_bound",
    "get_method",
    "margin_spec",
    "register_method",
    "worst_case_logits",
]
