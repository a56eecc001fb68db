"""Optimising the lower ReLU slopes of the backward bound.

The lower slope ``a`` of each unstable ReLU is a free parameter in ``[0, 1]``: every
choice gives a sound bound, so the bound can be tightened by gradient steps on ``a``.

* :func:`signed_step_slopes` is the thesis' method ("OURS", Eq. 3.3.24): slopes start
  ``U[0, 1]`` from an explicit key, take one step ``a - eta * sign(grad L)`` with
  ``eta >= 1`` (so they end at 0 or 1 wherever the gradient is non-zero), are
  projected on ``[0, 1]`` and then held fixed under ``stop_gradient``. ``steps > 1``
  with a small ``eta`` is the multi-step variant (C.8.7). One slope per neuron and
  example, shared by the specification rows. Intermediate bounds are IBP's.
* :func:`optimised_crown_lower` optimises the slopes of every layer of full CROWN
  (shared by the intermediate and final passes) with Adam, for verification, and
  keeps the best bound seen, never worse than CROWN's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxcert.domains.backward import Context, Interval, slope_chooser
from jaxcert.domains.intermediate import crown_intervals
from jaxcert.domains.linear import lower_bound, relu_nodes
from jaxcert.graph import Graph
from jaxcert.sets import InputSet

Array = jax.Array
Objective = Callable[[Array], Array]

__all__ = ["OBJECTIVES", "resolve_objective", "signed_step_slopes", "optimised_crown_lower"]


def _robust_ce(lower: Array) -> Array:
    """Cross-entropy of the worst-case logits, taking the spec rows as margins.

    ``log(1 + sum_j exp(-m_j))`` per example, summed over the batch: the loss
    CROWN-IBP training minimises (the true class' logit is 0, the others ``-m_j``).
    """
    zeros = jnp.zeros(lower.shape[:1] + (1,), lower.dtype)
    return jnp.sum(jax.nn.logsumexp(jnp.concatenate([zeros, -lower], axis=1), axis=1))


def _negative_sum(lower: Array) -> Array:
    """Minus the sum of the lower bounds: tightens every row alike."""
    return -jnp.sum(lower)


OBJECTIVES: dict[str, Objective] = {"ce": _robust_ce, "sum": _negative_sum}


def resolve_objective(objective: str | Objective) -> Objective:
    """The objective function of a name of :data:`OBJECTIVES` (or the callable itself)."""
    if callable(objective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")
    return OBJECTIVES[objective]


def signed_step_slopes(
    graph: Graph,
    input_set: InputSet,
    intervals: Sequence[Interval],
    A: Array,
    key: Array,
    *,
    steps: int = 1,
    step_size: float = 2.0,
    objective: Objective = _robust_ce,
) -> dict[str, Array]:
    """Lower slopes after ``steps`` signed gradient steps from ``U[0, 1]``.

    Args:
      graph, input_set, intervals: the traced function, its input set and per-node
        intervals (IBP's, as in CROWN-IBP).
      A: ``(batch, n_spec, *out_shape[1:])`` specification at the output.
      key: PRNG key for the initial slopes.
      steps: number of steps (1 for the thesis' one-step method).
      step_size: ``eta``; ``>= 1`` makes one step land on 0/1.
      objective: loss of the lower bounds ``(batch, n_spec) -> ()`` to descend.

    Returns:
      ``{relu node name: slopes (batch, *shape[1:])}``, under ``stop_gradient``.
    """
    relus = relu_nodes(graph)
    keys = jax.random.split(key, max(len(relus), 1))
    slopes = {
        n.name: jax.random.uniform(k, n.shape, n.dtype) for n, k in zip(relus, keys, strict=False)
    }
    frozen = [None if iv is None else jax.tree.map(jax.lax.stop_gradient, iv) for iv in intervals]

    def loss(a: dict[str, Array]) -> Array:
        ctx = Context(graph, frozen, slope_chooser("adaptive", a))
        return objective(lower_bound(ctx, input_set, graph.output, jax.lax.stop_gradient(A)))

    for _ in range(steps):
        grads = jax.grad(loss)(slopes)
        slopes = {
            name: jnp.clip(a - step_size * jnp.sign(grads[name]), 0.0, 1.0)
            for name, a in slopes.items()
        }
    return jax.tree.map(jax.lax.stop_gradient, slopes)


def _adaptive_slopes(graph: Graph, intervals: Sequence[Interval]) -> dict[str, Array]:
    """CROWN's adaptive choice as explicit slopes in [0, 1]: 1 where ``u > -l``."""
    out = {}
    for node in relu_nodes(graph):
        lo, hi = intervals[node.inputs[0]]
        out[node.name] = (hi > -lo).astype(node.dtype)
    return out


def optimised_crown_lower(
    graph: Graph,
    input_set: InputSet,
    A: Array,
    *,
    steps: int = 20,
    step_size: float = 0.1,
    objective: Objective = _negative_sum,
    chunk_size: int | None = None,
    intersect_ibp: bool = True,
    base_intervals: Sequence[Interval] | None = None,
) -> tuple[Array, Sequence[Interval]]:
    """Full CROWN with every layer's lower slopes optimised (Adam, projected to [0, 1]).

    The bound of each specification row is the best over CROWN's own bound and the
    ``steps + 1`` slope iterates, each of which is sound: never looser than CROWN.
    ``base_intervals``: CROWN's intervals, if already computed.

    Returns:
      ``(lower, intervals)``: lower bounds ``(batch, n_spec)`` and CROWN's intervals.
    """
    if base_intervals is None:
        base_intervals = crown_intervals(
            graph,
            input_set,
            slope_chooser("adaptive"),
            intersect_ibp=intersect_ibp,
            chunk_size=chunk_size,
        )
    base_ctx = Context(graph, base_intervals, slope_chooser("adaptive"))
    base = lower_bound(base_ctx, input_set, graph.output, A)
    slopes0 = _adaptive_slopes(graph, base_intervals)
    if not slopes0:
        return base, base_intervals

    def bound_with(slopes: dict[str, Array]) -> Array:
        choose = slope_chooser("adaptive", slopes)
        ivs = crown_intervals(
            graph, input_set, choose, intersect_ibp=intersect_ibp, chunk_size=chunk_size
        )
        return lower_bound(Context(graph, ivs, choose), input_set, graph.output, A)

    def loss(slopes: dict[str, Array]) -> tuple[Array, Array]:
        lower = bound_with(slopes)
        return objective(lower), lower

    optimizer = optax.adam(step_size)

    def step(carry, _):
        slopes, state, best = carry
        slopes = jax.lax.stop_gradient(slopes)
        grads, lower = jax.grad(loss, has_aux=True)(slopes)
        grads = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0), grads)
        updates, state = optimizer.update(grads, state, slopes)
        slopes = jax.tree.map(lambda a: jnp.clip(a, 0.0, 1.0), optax.apply_updates(slopes, updates))
        # fmax: an iterate that failed numerically (NaN) never replaces a sound bound.
        return (slopes, state, jnp.fmax(best, lower)), None

    carry = (slopes0, optimizer.init(slopes0), base)
    (slopes, _, best), _ = jax.lax.scan(step, carry, None, length=steps)
    best = jnp.fmax(best, bound_with(jax.lax.stop_gradient(slopes)))
    return best, base_intervals
