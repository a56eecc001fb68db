"""L2 methods from Lipschitz constants: BCP (ball and box propagation) and LMT."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import jax

from jaxcert.bound_methods.base import Interval, Method, Network, split_lower_upper
from jaxcert.domains import lipschitz

Array = jax.Array

__all__ = ["BCP", "LMT"]


@dataclasses.dataclass(frozen=True)
class _LipschitzMethod(Method):
    """Shared by BCP and LMT: an L2 ball around the nominal values through every layer.

    Attributes:
      lipschitz: Lipschitz constants by node index of the one-example trace
        (:func:`jaxcert.domains.lipschitz.power_iteration` estimates in training);
        default: certified upper bounds (:func:`~jaxcert.domains.lipschitz.certified_lipschitz`),
        what a certificate needs.
    """

    lipschitz: dict[int, Array] | None = None

    use_box: ClassVar[bool] = True

    def check(self, net: Network) -> None:
        lipschitz.check_supported(net.graph)

    def _constants(self, net: Network) -> dict[int, Array]:
        if self.lipschitz is not None:
            return self.lipschitz
        return lipschitz.certified_lipschitz(lipschitz.unit_graph(net.fn, net.input_set))

    def _solver_iters(self) -> int | None:
        return None

    def intermediate(self, net: Network) -> list[Interval]:
        return lipschitz.propagate(net.graph, net.input_set, self._constants(net))[2]

    def lower(self, net: Network, A: Array, intervals: Sequence[Interval | None]) -> Array:
        return self._lower_and_boxes(net, A)[0]

    def _lower_and_boxes(self, net: Network, A: Array) -> tuple[Array, list[Interval]]:
        return lipschitz.bcp_lower(
            net.graph,
            net.input_set,
            A,
            self._constants(net),
            self._solver_iters(),
            use_box=self.use_box,
        )

    def bounds(
        self, net: Network, A: Array | None, bound_upper: bool
    ) -> tuple[Array, Array, Sequence[Interval | None]]:
        A = net.spec_matrix(None) if A is None else A
        both = jax.numpy.concatenate([A, -A], axis=1) if bound_upper else A
        lower_both, boxes = self._lower_and_boxes(net, both)
        return (*split_lower_upper(lower_both, A.shape[1]), boxes)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BCP(_LipschitzMethod):
    """BCP (thesis §3.2): the intersection of an L2 ball and a box at every layer, and
    the exact minimum over ``ball ∩ box`` at the last one.

    Attributes:
      lipschitz: see :class:`LMT`.
      solver_iters: rounds of the ball ∩ box solver (None: to convergence, the exact
        minimum); a capped solver is what the thesis trains with.

    Example:
      >>> fn = lambda x: x @ jnp.array([[3.0], [4.0]])
      >>> b = jaxcert.bound(fn, jaxcert.L2Ball(jnp.zeros((1, 2)), 1.0), jaxcert.BCP())
      >>> b.lower, b.upper
      (Array([[-5.]], dtype=float32), Array([[5.]], dtype=float32))
    """

    solver_iters: int | None = dataclasses.field(default=None, metadata={"static": True})

    def __post_init__(self) -> None:
        if self.solver_iters is not None and not self.solver_iters >= 1:
            raise ValueError(f"solver_iters must be None or >= 1, got {self.solver_iters!r}")

    def _solver_iters(self) -> int | None:
        return self.solver_iters


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LMT(_LipschitzMethod):
    """LMT's global Lipschitz margin: the ball alone at the last layer
    (``c . z - rho ||c||``), the baseline BCP improves on.

    Attributes:
      lipschitz: Lipschitz constants by node index of the one-example trace
        (:func:`jaxcert.domains.lipschitz.power_iteration` estimates in training);
        default: certified upper bounds, what a certificate needs.

    Example:
      >>> fn = lambda x: x @ jnp.array([[3.0], [4.0]])
      >>> b = jaxcert.bound(fn, jaxcert.L2Ball(jnp.zeros((1, 2)), 1.0), jaxcert.LMT())
      >>> b.upper
      Array([[5.]], dtype=float32)
    """

    use_box: ClassVar[bool] = False
