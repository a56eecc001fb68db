"""The public entry point: ``bound(fn, input_set, method, spec)``.

Methods (see :data:`METHODS`):

=================  ============================  ===================================
method             intermediate bounds           final pass
=================  ============================  ===================================
``ibp``            IBP                           IBP; with a spec, ``C`` is folded
                                                 into the trailing affine ops
``crown-ibp``      IBP                           backward, CROWN adaptive slopes
``cap-ibp``        IBP                           backward, Fast-Lin slopes
``crown``          backward per layer            backward, adaptive slopes
``fastlin``        backward per layer (Fast-Lin) backward, Fast-Lin slopes
``crown-ibp-opt``  IBP                           backward, slopes from signed steps
``crown-opt``      backward per layer            backward, all slopes optimised
=================  ============================  ===================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.domains import interval, linear
from jaxcert.domains import lipschitz as lipschitz_lib
from jaxcert.graph import Graph, trace
from jaxcert.sets import InputSet
from jaxcert.slope_opt import optimised_crown_lower, resolve_objective, signed_step_slopes

Array = jax.Array

__all__ = ["Bounds", "METHODS", "TracedNetwork", "bound"]

METHODS = (
    "ibp",
    "crown-ibp",
    "crown",
    "fastlin",
    "cap-ibp",
    "crown-ibp-opt",
    "crown-opt",
    "bcp",
    "lmt",
)

# Lower-slope rule of the final backward pass (and of the intermediate passes for the
# methods that have them).
_FINAL_SLOPE = {
    "crown-ibp": "adaptive",
    "cap-ibp": "fastlin",
    "crown": "adaptive",
    "fastlin": "fastlin",
    "crown-ibp-opt": "adaptive",
    "crown-opt": "adaptive",
}


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


def _spec_matrix(spec: Array | None, out_shape: tuple[int, ...]) -> Array:
    """The specification as ``(batch, n_spec, *out_shape[1:])``."""
    batch, n_out = out_shape[0], math.prod(out_shape[1:])
    if spec is None:
        eye = jnp.eye(n_out, dtype=jnp.float32).reshape((1, n_out, *out_shape[1:]))
        return jnp.broadcast_to(eye, (batch, n_out, *out_shape[1:]))
    spec = jnp.asarray(spec)
    if spec.ndim != 3 or spec.shape[0] != batch or spec.shape[2] != n_out:
        raise ValueError(
            f"spec must have shape (batch, n_spec, n_out) = ({batch}, n_spec, {n_out}) for "
            f"this function's output of shape {out_shape}, got {spec.shape}"
        )
    return spec.reshape((batch, spec.shape[1], *out_shape[1:]))


def _intermediate(graph: Graph, intervals: list[Any]) -> dict[str, Bounds]:
    out = {}
    for node in graph.activations:
        lo, hi = intervals[node.inputs[0]]
        out[node.name] = Bounds(lo, hi)
    return out


def _check_request(method: str, steps: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def _check_slopes(graph: Graph, slopes: dict[str, Array] | None) -> dict[str, Array]:
    if slopes is None:
        return {}
    known = {n.name: n for n in linear.relu_nodes(graph)}
    for name, value in slopes.items():
        if name not in known:
            raise ValueError(f"slopes given for unknown ReLU node {name!r}; known: {list(known)}")
        if jnp.shape(value) != known[name].shape:
            raise ValueError(
                f"slopes[{name!r}] must have shape {known[name].shape}, got {jnp.shape(value)}"
            )
    return dict(slopes)


def bound(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    method: str = "ibp",
    spec: Array | None = None,
    *,
    return_intermediate: bool = False,
    slopes: dict[str, Array] | None = None,
    key: Array | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    objective: str | Callable[[Array], Array] | None = None,
    bound_upper: bool = True,
    chunk_size: int | None = None,
    intersect_ibp: bool = True,
    lipschitz: dict[int, Array] | None = None,
    solver_iters: int | None = None,
) -> Bounds:
    """Sound bounds of ``fn(x')`` (or ``spec @ fn(x')``) over every ``x'`` in ``input_set``.

    ``fn`` is any JAX function of a batched input that treats examples independently,
    e.g. ``lambda x: model.apply(variables, x)`` for a Flax model in eval mode. It is
    traced, not rewritten; parameters it closes over receive gradients through the
    bounds, and the whole computation composes with ``jit``, ``vmap`` and ``grad``.

    Args:
      fn: maps ``(batch, *x_shape)`` to ``(batch, *out_shape)``.
      input_set: a :mod:`jaxcert.sets` set with ``batch`` examples.
      method: one of :data:`METHODS`.
      spec: optional ``(batch, n_spec, n_out)``; bounds are then of ``spec @ fn(x')``
        (with ``fn``'s output flattened to ``n_out``). See :func:`jaxcert.margin_spec`.
      return_intermediate: also return the pre-activation bounds of every activation.
      slopes: optional ``{relu name: (batch, *shape[1:]) in [0, 1]}`` lower slopes for
        the final backward pass of the linear methods.
      key: PRNG key, required by ``"crown-ibp-opt"`` (initial slopes ``U[0, 1]``).
      steps: slope-optimisation steps (default 1 for ``crown-ibp-opt``, 20 for
        ``crown-opt``).
      step_size: signed step ``eta`` for ``crown-ibp-opt`` (default 2.0 for one step,
        0.1 for several), Adam learning rate for ``crown-opt`` (default 0.1).
      objective: what the slope optimisation minimises over the lower bounds:
        ``"ce"`` (robust cross-entropy, default of ``crown-ibp-opt``), ``"sum"``
        (minus their sum, default of ``crown-opt``) or a callable
        ``(batch, n_spec) -> ()``.
      bound_upper: compute upper bounds too (else ``upper`` is ``+inf``: half the work
        for the linear methods, as training needs only lower margins).
      chunk_size: neurons per backward pass for the intermediate bounds of
        ``crown``/``fastlin``/``crown-opt`` (default: about 64M numbers per pass).
      intersect_ibp: intersect intermediate backward bounds with IBP's.
      lipschitz: for ``"bcp"``/``"lmt"``, Lipschitz constants by node index of the
        one-example trace (:func:`jaxcert.domains.lipschitz.power_iteration` in
        training); default: certified upper bounds
        (:func:`~jaxcert.domains.lipschitz.certified_lipschitz`).
      solver_iters: rounds of BCP's ball ∩ box solver (default: to convergence).

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
    _check_request(method, steps)  # before tracing fn
    return TracedNetwork(fn, input_set).bound(
        method,
        spec,
        return_intermediate=return_intermediate,
        slopes=slopes,
        key=key,
        steps=steps,
        step_size=step_size,
        objective=objective,
        bound_upper=bound_upper,
        chunk_size=chunk_size,
        intersect_ibp=intersect_ibp,
        lipschitz=lipschitz,
        solver_iters=solver_iters,
    )


class TracedNetwork:
    """``fn`` traced once over ``input_set``: several bounds of it share one IBP pass.

    Training objectives mix bounds: CROWN-IBP's ``(1 - beta) IBP + beta CROWN-IBP``,
    loss fusion's IBP margins and its one linear row. As separate :func:`bound` calls,
    each would propagate IBP itself; XLA merges the duplicate forward passes but not
    their gradients, so the IBP pass would be differentiated once per call. Here every
    method whose intermediate bounds are IBP's reads the same intervals. Build it
    inside the function you differentiate or jit, as you would call :func:`bound`.

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
        self.fn, self.input_set = fn, input_set
        self.dtype = jnp.result_type(input_set.bounding_box()[0])
        self.graph = trace(fn, input_set.shape, self.dtype)
        self._ibp: list[Any] | None = None

    def ibp_intervals(self) -> list[Any]:
        """Every node's IBP interval ``(lower, upper)``, computed on first use."""
        if self._ibp is None:
            self._ibp = interval.propagate(self.graph, *self.input_set.bounding_box())
        return self._ibp

    def bound(
        self,
        method: str = "ibp",
        spec: Array | None = None,
        *,
        return_intermediate: bool = False,
        slopes: dict[str, Array] | None = None,
        key: Array | None = None,
        steps: int | None = None,
        step_size: float | None = None,
        objective: str | Callable[[Array], Array] | None = None,
        bound_upper: bool = True,
        chunk_size: int | None = None,
        intersect_ibp: bool = True,
        lipschitz: dict[int, Array] | None = None,
        solver_iters: int | None = None,
    ) -> Bounds:
        """Bounds of ``fn`` over the input set by ``method``: :func:`bound`'s arguments
        after ``input_set``, and the same result."""
        _check_request(method, steps)
        graph, input_set = self.graph, self.input_set
        out_shape = graph.nodes[graph.output].shape
        A = _spec_matrix(spec, out_shape).astype(self.dtype)
        n_spec = A.shape[1]
        # Upper bounds are minus the lower bounds of -A: one pass for both.
        A_both = jnp.concatenate([A, -A], axis=1) if bound_upper else A
        user_slopes = _check_slopes(graph, slopes)

        if method == "ibp":
            intervals = self.ibp_intervals()
            if spec is None:
                lo, hi = intervals[graph.output]
                return _finish(
                    graph,
                    intervals,
                    lo.reshape(lo.shape[0], -1),
                    hi.reshape(hi.shape[0], -1),
                    return_intermediate,
                )
            ctx = linear.Context(graph, intervals, linear.slope_chooser("adaptive"))
            both = linear.lower_bound(
                ctx, input_set, graph.output, A_both, stop=linear.activation_stops(graph)
            )
            return _split(graph, intervals, both, n_spec, bound_upper, return_intermediate)

        if method in ("bcp", "lmt"):
            lipschitz_lib.check_supported(graph)
            if lipschitz is None:
                lipschitz = lipschitz_lib.certified_lipschitz(
                    lipschitz_lib.unit_graph(self.fn, input_set)
                )
            both, intervals = lipschitz_lib.bcp_lower(
                graph, input_set, A_both, lipschitz, solver_iters, use_box=method == "bcp"
            )
            return _split(graph, intervals, both, n_spec, bound_upper, return_intermediate)

        rule = _FINAL_SLOPE[method]
        if method == "crown-opt":
            objective_fn = resolve_objective(objective or "sum")
            halves = [A, -A] if bound_upper else [A]
            results = [
                optimised_crown_lower(
                    graph,
                    input_set,
                    half,
                    steps=steps or 20,
                    step_size=step_size or 0.1,
                    objective=objective_fn,
                    chunk_size=chunk_size,
                    intersect_ibp=intersect_ibp,
                )
                for half in halves
            ]
            both = jnp.concatenate([r[0] for r in results], axis=1)
            return _split(graph, results[0][1], both, n_spec, bound_upper, return_intermediate)

        if method in ("crown", "fastlin"):
            intervals = linear.crown_intervals(
                graph,
                input_set,
                linear.slope_chooser(rule),
                intersect_ibp=intersect_ibp,
                chunk_size=chunk_size,
            )
        else:
            intervals = self.ibp_intervals()

        if method == "crown-ibp-opt":
            if key is None:
                raise ValueError("method 'crown-ibp-opt' needs key= (a PRNG key for the slopes)")
            n_steps = steps or 1
            eta = step_size if step_size is not None else (2.0 if n_steps == 1 else 0.1)
            objective_fn = resolve_objective(objective or "ce")
            lower_key, upper_key = jax.random.split(key)
            parts = []
            for half, half_key, obj in ((A, lower_key, objective_fn), (-A, upper_key, None)):
                if obj is None and not bound_upper:
                    break
                opt = signed_step_slopes(
                    graph,
                    input_set,
                    intervals,
                    half,
                    half_key,
                    steps=n_steps,
                    step_size=eta,
                    objective=obj or resolve_objective("sum"),
                )
                ctx = linear.Context(graph, intervals, linear.slope_chooser(rule, opt))
                parts.append(linear.lower_bound(ctx, input_set, graph.output, half))
            both = jnp.concatenate(parts, axis=1)
            return _split(graph, intervals, both, n_spec, bound_upper, return_intermediate)

        ctx = linear.Context(graph, intervals, linear.slope_chooser(rule, user_slopes))
        both = linear.lower_bound(ctx, input_set, graph.output, A_both)
        return _split(graph, intervals, both, n_spec, bound_upper, return_intermediate)


def _split(
    graph: Graph,
    intervals: list[Any],
    both: Array,
    n_spec: int,
    bound_upper: bool,
    return_intermediate: bool,
) -> Bounds:
    lower = both[:, :n_spec]
    upper = -both[:, n_spec:] if bound_upper else jnp.full_like(lower, jnp.inf)
    return _finish(graph, intervals, lower, upper, return_intermediate)


def _finish(
    graph: Graph, intervals: list[Any], lower: Array, upper: Array, return_intermediate: bool
) -> Bounds:
    inter = _intermediate(graph, intervals) if return_intermediate else None
    return Bounds(lower, upper, inter)
