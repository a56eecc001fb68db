"""The public entry point: ``bound(fn, input_set, method, spec)``, and ``TracedNetwork``.

A method is a name of :data:`jaxcert.METHODS` or a method object
(:mod:`jaxcert.bound_methods`); keyword options after ``spec`` are the method's own
(``bound(fn, s, "crown", chunk_size=64)`` is ``bound(fn, s, Crown(chunk_size=64))``),
and an option the method does not have raises :class:`TypeError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import IBP, Method, get_method
from jaxcert.domains.backward import Interval, slope_chooser
from jaxcert.domains.intermediate import crown_intervals, ibp_intervals
from jaxcert.graph import Graph, trace
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = ["Bounds", "TracedNetwork", "bound"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Bounds:
    """Lower and upper bounds, ``(batch, n)`` each.

    ``intermediate`` (when asked for) maps each activation node's name (``"relu_0"``,
    ``"relu_1"``, ...) to the :class:`Bounds` of its input (the pre-activation),
    shaped ``(batch, *node_shape[1:])``.

    Example:
      >>> b = jaxcert.bound(jax.nn.relu, jaxcert.Box(-jnp.ones((1, 2)), jnp.ones((1, 2))))
      >>> b.lower, b.upper
      (Array([[0., 0.]], dtype=float32), Array([[1., 1.]], dtype=float32))
    """

    lower: Array
    upper: Array
    intermediate: dict[str, Bounds] | None = None


def bound(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    method: str | Method = IBP(),
    spec: Array | None = None,
    *,
    bound_upper: bool = True,
    return_intermediate: bool = False,
    **options: Any,
) -> Bounds:
    """Sound bounds of ``fn(x')`` (or ``spec @ fn(x')``) over every ``x'`` in ``input_set``.

    ``fn`` is any JAX function of a batched input that treats examples independently,
    e.g. ``lambda x: model.apply(variables, x)`` for a Flax model in eval mode. It is
    traced, not rewritten; parameters it closes over receive gradients through the
    bounds, and the whole computation composes with ``jit``, ``vmap`` and ``grad``.

    Args:
      fn: maps ``(batch, *x_shape)`` to ``(batch, *out_shape)``.
      input_set: a :mod:`jaxcert.sets` set with ``batch`` examples.
      method: a name of :data:`jaxcert.METHODS` (``"ibp"``, ``"crown-ibp"``, ``"crown"``,
        ...) or a method object (``jaxcert.Crown(intersect_ibp=False)``).
      spec: optional ``(batch, n_spec, n_out)``; bounds are then of ``spec @ fn(x')``
        (with ``fn``'s output flattened to ``n_out``). See :func:`jaxcert.margin_spec`.
      bound_upper: compute upper bounds too (else ``upper`` is ``+inf``: half the work
        for the linear methods, as training needs only lower margins).
      return_intermediate: also return the pre-activation bounds of every activation.
      **options: the method's own options, applied to its object with
        ``dataclasses.replace`` (e.g. ``key=`` for ``"crown-ibp-opt"``, ``chunk_size=`` for
        ``"crown"``, ``slopes=`` for the linear methods, ``lipschitz=`` for ``"bcp"``);
        an option the method does not have raises :class:`TypeError`.

    Returns:
      :class:`Bounds` with ``lower``/``upper`` of shape ``(batch, n_out)`` or
      ``(batch, n_spec)``.

    Example:
      >>> import jaxcert
      >>> x = jnp.array([[0.5, -0.5]])
      >>> fn = lambda x: jax.nn.relu(x @ jnp.array([[1.0], [1.0]]))
      >>> b = jaxcert.bound(fn, jaxcert.LinfBall(x, 0.1), method="crown")
      >>> float(b.lower[0, 0]), round(float(b.upper[0, 0]), 6)
      (0.0, 0.2)
    """
    resolved = get_method(method, **options)  # before tracing fn: bad options fail fast
    return TracedNetwork(fn, input_set).bound(
        resolved, spec, bound_upper=bound_upper, return_intermediate=return_intermediate
    )


def _intermediate(graph: Graph, intervals: Sequence[Interval | None]) -> dict[str, Bounds]:
    out = {}
    for node in graph.activations:
        iv = intervals[node.inputs[0]]
        assert iv is not None  # every method bounds the activations' inputs
        out[node.name] = Bounds(*iv)
    return out


class TracedNetwork:
    """``fn`` traced once over ``input_set``: several bounds of it share one IBP pass.

    Training objectives mix bounds: CROWN-IBP's ``(1 - beta) IBP + beta CROWN-IBP``,
    loss fusion's IBP margins and its one linear row. As separate :func:`bound` calls,
    each would propagate IBP itself; XLA merges the duplicate forward passes but not
    their gradients, so the IBP pass would be differentiated once per call. Here every
    method whose intermediate bounds are IBP's reads the same intervals (and full
    CROWN's intermediate bounds are shared the same way). Build it inside the function
    you differentiate or jit, as you would call :func:`bound`.

    Example:
      >>> import jaxcert
      >>> fn = lambda x: jax.nn.relu(x @ jnp.array([[1.0, -1.0]])) @ jnp.ones((2, 1))
      >>> net = TracedNetwork(fn, jaxcert.LinfBall(jnp.array([[0.5]]), 0.25))
      >>> net.bound("ibp").lower, net.bound("crown-ibp").lower  # one IBP pass for both
      (Array([[0.25]], dtype=float32), Array([[0.25]], dtype=float32))
    """

    def __init__(self, fn: Callable[[Array], Array], input_set: InputSet):
        if not isinstance(input_set, InputSet):
            raise TypeError(
                f"input_set must be a jaxcert input set, got {type(input_set).__name__}"
            )
        if not input_set.shape or input_set.shape[0] == 0:
            raise ValueError(f"the input set holds no examples (shape {input_set.shape})")
        self.fn, self.input_set = fn, input_set
        self.dtype = jnp.result_type(input_set.bounding_box()[0])
        if jnp.finfo(self.dtype).bits < 32:
            raise ValueError(
                f"jaxcert bounds inputs in float32 or float64, got {jnp.dtype(self.dtype).name}: "
                "rounding that coarse can break soundness; cast the input set's arrays (and "
                "the model's parameters) to float32"
            )
        self.graph = trace(fn, input_set.shape, self.dtype)
        self._ibp: list[Interval] | None = None
        self._crown: dict[tuple[str, int | None, bool, bool], list[Interval]] = {}

    def ibp_intervals(self) -> list[Interval]:
        """Every node's IBP interval ``(lower, upper)``, computed on first use (the first
        affine layers exact over a norm ball:
        :func:`~jaxcert.domains.intermediate.ibp_intervals`)."""
        if self._ibp is None:
            self._ibp = ibp_intervals(self.graph, self.input_set)
        return self._ibp

    def crown_intervals(
        self,
        relaxation: str,
        *,
        chunk_size: int | None = None,
        intersect_ibp: bool = True,
        screen_ibp: bool = False,
    ) -> list[Interval]:
        """Intervals with every pre-activation bounded by backward passes with lower
        slopes ``relaxation`` (see :class:`jaxcert.Crown` and
        :func:`~jaxcert.domains.intermediate.crown_intervals`), computed once per choice."""
        key = (relaxation, chunk_size, intersect_ibp, screen_ibp)
        if key not in self._crown:
            self._crown[key] = crown_intervals(
                self.graph,
                self.input_set,
                slope_chooser(relaxation),
                intersect_ibp=intersect_ibp,
                screen_ibp=screen_ibp,
                chunk_size=chunk_size,
            )
        return self._crown[key]

    def spec_matrix(self, spec: Array | None) -> Array:
        """The specification as ``(batch, n_spec, *out_shape[1:])`` in the output's dtype
        (None: the identity, bounds of every output)."""
        out = self.graph.nodes[self.graph.output]
        out_shape, dtype = out.shape, out.dtype
        batch, n_out = out_shape[0], math.prod(out_shape[1:])
        if spec is None:
            eye = jnp.eye(n_out, dtype=dtype).reshape((1, n_out, *out_shape[1:]))
            return jnp.broadcast_to(eye, (batch, n_out, *out_shape[1:]))
        spec = jnp.asarray(spec)
        if spec.ndim != 3 or spec.shape[0] != batch or spec.shape[2] != n_out:
            raise ValueError(
                f"spec must have shape (batch, n_spec, n_out) = ({batch}, n_spec, {n_out}) "
                f"for this function's output of shape {out_shape}, got {spec.shape}"
            )
        return spec.reshape((batch, spec.shape[1], *out_shape[1:])).astype(dtype)

    def bound(
        self,
        method: str | Method = IBP(),
        spec: Array | None = None,
        *,
        bound_upper: bool = True,
        return_intermediate: bool = False,
        **options: Any,
    ) -> Bounds:
        """Bounds of ``fn`` over the input set by ``method``: :func:`bound`'s arguments
        after ``input_set``, and the same result."""
        resolved = get_method(method, **options)
        resolved.check(self)
        A = None if spec is None else self.spec_matrix(spec)
        lower, upper, intervals = resolved.bounds(self, A, bound_upper)
        lower, upper = _overflow_to_infinity(lower, upper, self.input_set.bounding_box())
        inter = _intermediate(self.graph, intervals) if return_intermediate else None
        return Bounds(lower, upper, inter)


def _overflow_to_infinity(lower: Array, upper: Array, box: Interval) -> tuple[Array, Array]:
    """NaN bounds of an example with a finite input box came from arithmetic (infinite
    intervals met as ``inf - inf``, e.g. a huge eps): they are ``-inf``/``+inf``, sound and
    plain. An example whose box is NaN (an invalid set under ``jit``) stays NaN."""
    rows = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    finite = jnp.all(jnp.isfinite(rows(box[0])) & jnp.isfinite(rows(box[1])), axis=1)[:, None]
    lower = jnp.where(finite & jnp.isnan(lower), -jnp.inf, lower)
    upper = jnp.where(finite & jnp.isnan(upper), jnp.inf, upper)
    return lower, upper
