"""Exceptions raised by jaxcert."""

from __future__ import annotations


class UnsupportedOperation(Exception):
    """The traced function uses an operation no bound rule covers.

    The message names the primitive and the user's source line, e.g.
    ``"sin at model.py:12 (MyNet.__call__): no interval rule"``.

    Example:
      >>> try:
      ...     jaxcert.bound(jnp.sin, jaxcert.LinfBall(jnp.zeros((1, 2)), 0.1))
      ... except jaxcert.UnsupportedOperation as e:
      ...     print(e.primitive)
      sin
    """

    def __init__(self, primitive: str, source: str, reason: str):
        self.primitive = primitive
        self.source = source
        self.reason = reason
        super().__init__(f"unsupported operation '{primitive}' at {source}: {reason}")
