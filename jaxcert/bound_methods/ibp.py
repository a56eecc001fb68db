"""Interval bound propagation as a bound method."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from jaxcert.bound_methods.base import Interval, Method, Network
from jaxcert.domains import linear
from jaxcert.domains.backward import Context, slope_chooser

Array = jax.Array

__all__ = ["IBP"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IBP(Method):
    """Interval bounds (Gowal et al.). With a specification, ``C`` is folded into the
    trailing affine operations ("elision"): a backward pass that stops at the last
    non-linear nodes and uses their intervals, never looser than ``C @ [l, u]``.

    Example:
      >>> fn = lambda x: x @ jnp.array([[1.0, -1.0], [1.0, 1.0]])
      >>> s = jaxcert.LinfBall(jnp.zeros((1, 2)), 0.1)
      >>> jaxcert.bound(fn, s, jaxcert.IBP()).upper
      Array([[0.2, 0.2]], dtype=float32)
    """

    def intermediate(self, net: Network) -> list[Interval]:
        return net.ibp_intervals()

    def lower(self, net: Network, A: Array, intervals: Sequence[Interval | None]) -> Array:
        ctx = Context(net.graph, intervals, slope_chooser("adaptive"))
        stops = linear.activation_stops(net.graph)
        return linear.lower_bound(ctx, net.input_set, net.graph.output, A, stop=stops)

    def bounds(
        self, net: Network, A: Array | None, bound_upper: bool
    ) -> tuple[Array, Array, Sequence[Interval | None]]:
        if A is not None:
            return super().bounds(net, A, bound_upper)
        intervals = net.ibp_intervals()
        lo, hi = intervals[net.graph.output]
        return lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1), intervals
