"""Linear-relaxation methods with one backward pass at the end: CROWN-IBP, CAP-IBP,
CROWN and Fast-Lin."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from jaxcert.bound_methods.base import Interval, Method, Network, check_chunk_size
from jaxcert.domains import linear
from jaxcert.domains.backward import Context, lower_bounds_in_chunks, slope_chooser
from jaxcert.relaxations import LOWER_SLOPE_RULES

Array = jax.Array

__all__ = ["LinearMethod", "CrownIBP", "Crown"]

_STATIC = {"static": True}


@dataclasses.dataclass(frozen=True)
class LinearMethod(Method):
    """A backward pass from the specification with fixed lower ReLU slopes.

    Attributes:
      relaxation: lower slope of the unstable ReLUs: ``"adaptive"`` (CROWN: 1 if
        ``u > -l`` else 0), ``"fastlin"`` (the upper line's slope), ``"zero"``, ``"one"``.
      slopes: optional ``{relu name: (batch, *shape[1:]) in [0, 1]}``: your own lower
        slopes for the final pass (the names of
        ``bound(..., return_intermediate=True).intermediate``).
      chunk_size: at most this many specification rows per backward pass (None: all);
        a way to bound the memory of a wide specification.

    Example:
      >>> isinstance(jaxcert.METHODS["fastlin"], LinearMethod)  # asks the object, not its name
      True
      >>> jaxcert.CrownIBP(relaxation="fastlin").relaxation
      'fastlin'
    """

    relaxation: str = dataclasses.field(default="adaptive", metadata=_STATIC)
    slopes: dict[str, Array] | None = None
    chunk_size: int | None = dataclasses.field(default=None, metadata=_STATIC)

    def __post_init__(self) -> None:
        if self.relaxation not in LOWER_SLOPE_RULES:
            raise ValueError(
                f"unknown relaxation {self.relaxation!r}; expected one of {LOWER_SLOPE_RULES}"
            )
        check_chunk_size(self.chunk_size)

    def check(self, net: Network) -> None:
        if self.slopes is None:
            return
        known = {n.name: n for n in linear.relu_nodes(net.graph)}
        for name, value in self.slopes.items():
            if name not in known:
                raise ValueError(
                    f"slopes given for unknown ReLU node {name!r}; known: {list(known)}"
                )
            if jax.numpy.shape(value) != known[name].shape:
                raise ValueError(
                    f"slopes[{name!r}] must have shape {known[name].shape}, "
                    f"got {jax.numpy.shape(value)}"
                )

    def context(self, net: Network, intervals: Sequence[Interval | None]) -> Context:
        """The backward pass's context: ``intervals`` and this method's slopes."""
        return Context(net.graph, intervals, slope_chooser(self.relaxation, self.slopes))

    def lower(self, net: Network, A: Array, intervals: Sequence[Interval | None]) -> Array:
        ctx = self.context(net, intervals)

        def run(rows: Array) -> Array:
            return linear.lower_bound(ctx, net.input_set, net.graph.output, rows)

        return lower_bounds_in_chunks(run, A, self.chunk_size)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrownIBP(LinearMethod):
    """CROWN-IBP: IBP intermediate bounds, one backward pass at the end.

    ``CrownIBP(relaxation="fastlin")`` is CAP-IBP (``"cap-ibp"``).

    Example:
      >>> fn = lambda x: jax.nn.relu(x) @ jnp.array([[1.0], [1.0]])
      >>> s = jaxcert.LinfBall(jnp.array([[0.0, 1.0]]), 0.5)
      >>> jaxcert.bound(fn, s, jaxcert.CrownIBP(relaxation="fastlin")).lower
      Array([[0.25]], dtype=float32)
    """

    def intermediate(self, net: Network) -> list[Interval]:
        return net.ibp_intervals()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Crown(LinearMethod):
    """CROWN: every pre-activation bounded by its own backward passes, then one at the end.

    ``Crown(relaxation="fastlin")`` is Fast-Lin (``"fastlin"``). Convolutional neurons
    are bounded on their receptive fields (patches).

    Attributes:
      chunk_size: neurons per backward pass of the intermediate bounds (default: about
        64M numbers per pass), and at most this many rows per final pass (default: all).
      intersect_ibp: intersect the intermediate bounds with IBP's (tighter, still sound).

    Example:
      >>> fn = lambda x: jax.nn.relu(x @ jnp.array([[1.0], [1.0]]))
      >>> b = jaxcert.bound(fn, jaxcert.LinfBall(jnp.array([[0.5, -0.5]]), 0.1), jaxcert.Crown())
      >>> float(b.lower[0, 0]), round(float(b.upper[0, 0]), 6)
      (0.0, 0.2)
    """

    intersect_ibp: bool = dataclasses.field(default=True, metadata=_STATIC)

    def intermediate(self, net: Network) -> list[Interval]:
        return net.crown_intervals(
            self.relaxation, chunk_size=self.chunk_size, intersect_ibp=self.intersect_ibp
        )
