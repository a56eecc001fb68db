"""The base of bound methods and what they may ask of a traced network."""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import jax
import jax.numpy as jnp

from jaxcert.graph import Graph
from jaxcert.sets import InputSet

Array = jax.Array
Interval = tuple[Array, Array]
M = TypeVar("M", bound="Method")

__all__ = ["Network", "Method", "Interval"]


class Network(Protocol):
    """What a method reads of ``fn`` traced over an input set
    (:class:`jaxcert.TracedNetwork` implements it, caching the shared passes)."""

    fn: Callable[[Array], Array]
    input_set: InputSet
    graph: Graph
    dtype: Any

    def spec_matrix(self, spec: Array | None) -> Array:
        """The specification as ``(batch, n_spec, *out_shape[1:])`` (None: identity)."""
        ...

    def ibp_intervals(self) -> list[Interval]:
        """Every node's IBP interval."""
        ...

    def crown_intervals(
        self,
        relaxation: str,
        *,
        chunk_size: int | None,
        intersect_ibp: bool,
        screen_ibp: bool = False,
    ) -> list[Interval]:
        """Intervals with every pre-activation bounded by its own backward passes."""
        ...


class Method(abc.ABC):
    """A bound method: a small frozen dataclass (a pytree) that holds only its options.

    Its intermediate-bounds strategy and its final pass are methods, so that callers
    ask the object instead of comparing names. Subclasses implement
    :meth:`intermediate` and :meth:`lower` (the final pass on the rows of a
    specification), or override :meth:`bounds` as a whole; decorate them with
    ``@jax.tree_util.register_dataclass`` and ``@dataclasses.dataclass(frozen=True)``
    and name them with :func:`jaxcert.register_method` to use them by name, in training
    too.

    Example:
      >>> jaxcert.METHODS["cap-ibp"]
      CrownIBP(relaxation='fastlin', slopes=None, chunk_size=None)
      >>> jaxcert.METHODS["crown-ibp-opt"].needs_key
      True
    """

    #: Whether the method draws random numbers: it then needs a PRNG key (``key=``),
    #: which training and certification supply with :meth:`with_key`.
    needs_key: bool = False

    def with_key(self: M, key: Array) -> M:
        """This method with PRNG key ``key`` (itself if it draws no random numbers)."""
        return self

    def check(self, net: Network) -> None:  # noqa: B027 (optional hook: most methods fit any net)
        """Raises ValueError for options that do not fit ``net`` (before any pass)."""

    @abc.abstractmethod
    def intermediate(self, net: Network) -> Sequence[Interval | None]:
        """Per-node intervals: the pre-activation bounds the final pass relaxes with."""

    @abc.abstractmethod
    def lower(self, net: Network, A: Array, intervals: Sequence[Interval | None]) -> Array:
        """Lower bounds of ``A . fn(x')`` over the set, ``(batch, n_rows)``, for rows
        ``A`` ``(batch, n_rows, *out_shape[1:])``."""

    def bounds(
        self, net: Network, A: Array | None, bound_upper: bool
    ) -> tuple[Array, Array, Sequence[Interval | None]]:
        """``(lower, upper, intervals)`` of ``A . fn(x')`` (``A`` None: of ``fn(x')``).

        Upper bounds are minus the lower bounds of ``-A``, in the same pass; without
        ``bound_upper`` they are ``+inf``.
        """
        A = net.spec_matrix(None) if A is None else A
        intervals = self.intermediate(net)
        both = jnp.concatenate([A, -A], axis=1) if bound_upper else A
        return (*split_lower_upper(self.lower(net, both, intervals), A.shape[1]), intervals)


def split_lower_upper(both: Array, n_spec: int) -> tuple[Array, Array]:
    """Lower bounds of ``[A; -A]`` (or of ``A`` alone) as ``(lower, upper)``."""
    lower = both[:, :n_spec]
    upper = -both[:, n_spec:] if both.shape[1] > n_spec else jnp.full_like(lower, jnp.inf)
    return lower, upper


def check_chunk_size(chunk_size: Any) -> None:
    if chunk_size is not None and not _positive_int(chunk_size):
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")


def check_steps(steps: Any) -> None:
    if not _positive_int(steps):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1
