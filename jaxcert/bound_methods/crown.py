"""Linear-relaxation methods with one backward pass at the end: CROWN-IBP, CAP-IBP,
CROWN and Fast-Lin."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxcert.bound_methods.base import (
    Interval,
    Method,
    Network,
    check_chunk_size,
    split_lower_upper,
)
from jaxcert.domains import linear
from jaxcert.domains.backward import Context, lower_bounds_in_chunks, slope_chooser
from jaxcert.relaxations import LOWER_SLOPE_RULES

Array = jax.Array

__all__ = ["LinearMethod", "CrownIBP", "Crown", "box_lower", "intersect_chains"]

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
      screen_ibp: a ReLU input neuron that IBP proves stable keeps IBP's bounds
        (auto_LiRPA's default, "sparse intermediate bounds"). With both options (the
        default) two chains of intermediate bounds run, the intersected one and the
        screened one, and every output keeps the tighter of their final bounds: CROWN's
        final bound is not monotone in its intermediate bounds (a tighter interval can
        flip an adaptive lower slope), so neither chain is the tighter on every output.
        With neither, this is textbook CROWN.

    Example:
      >>> fn = lambda x: jax.nn.relu(x @ jnp.array([[1.0], [1.0]]))
      >>> b = jaxcert.bound(fn, jaxcert.LinfBall(jnp.array([[0.5, -0.5]]), 0.1), jaxcert.Crown())
      >>> float(b.lower[0, 0]), round(float(b.upper[0, 0]), 6)
      (0.0, 0.2)
    """

    intersect_ibp: bool = dataclasses.field(default=True, metadata=_STATIC)
    screen_ibp: bool = dataclasses.field(default=True, metadata=_STATIC)

    def chains(self, net: Network) -> list[list[Interval]]:
        """The chains of intermediate bounds whose final bounds are intersected."""
        flags = [(self.intersect_ibp, self.screen_ibp)]
        if self.intersect_ibp and self.screen_ibp:
            flags = [(True, False), (False, True)]
        return [
            net.crown_intervals(
                self.relaxation, chunk_size=self.chunk_size, intersect_ibp=i, screen_ibp=s
            )
            for i, s in flags
        ]

    def intermediate(self, net: Network) -> list[Interval]:
        return intersect_chains(self.chains(net))

    def bounds(
        self, net: Network, A: Array | None, bound_upper: bool
    ) -> tuple[Array, Array, Sequence[Interval | None]]:
        A = net.spec_matrix(None) if A is None else A
        chains = self.chains(net)
        both = jnp.concatenate([A, -A], axis=1) if bound_upper else A
        intervals = intersect_chains(chains)
        # Each chain's final pass, and the rows over the output's own interval (IBP from
        # the refined bounds: tighter where the last op is an activation, e.g. sigmoid).
        lowers = [self.lower(net, both, c) for c in chains]
        lowers.append(box_lower(both, intervals[net.graph.output]))
        lower = functools.reduce(jnp.maximum, lowers)
        return (*split_lower_upper(lower, A.shape[1]), intervals)


def box_lower(rows: Array, box: Interval) -> Array:
    """Lower bounds ``(batch, n_rows)`` of ``rows . y`` over ``y`` in the box ``(lo, hi)``;
    ``rows`` ``(batch, n_rows, *shape[1:])``, the box's arrays ``(batch, *shape[1:])``.

    Not :meth:`jaxcert.Box.concretize`: its midpoint-radius form turns an infinite bound
    (an interval across a pole) into NaN; here each endpoint is read on its own side.

    Example:
      >>> box_lower(jnp.array([[[1.0, -1.0]]]), (jnp.zeros((1, 2)), jnp.ones((1, 2))))
      Array([[-1.]], dtype=float32)
    """
    lo, hi = (b[:, None] for b in box)
    terms = jnp.maximum(rows, 0) * lo + jnp.minimum(rows, 0) * hi
    # 0 * inf is nan: a zero coefficient contributes nothing whatever the bound.
    terms = jnp.where(rows == 0, 0, terms)
    return terms.reshape(terms.shape[:2] + (-1,)).sum(-1)


def intersect_chains(chains: Sequence[Sequence[Interval]]) -> list[Interval]:
    """Node by node, the intersection of several sound chains of intervals."""
    return [
        (
            functools.reduce(jnp.maximum, [c[i][0] for c in chains]),
            functools.reduce(jnp.minimum, [c[i][1] for c in chains]),
        )
        for i in range(len(chains[0]))
    ]
