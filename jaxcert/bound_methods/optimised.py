"""Methods that optimise the lower ReLU slopes: the thesis' signed step and Adam."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcert.bound_methods.base import (
    Interval,
    Method,
    Network,
    check_chunk_size,
    check_steps,
    split_lower_upper,
)
from jaxcert.bound_methods.crown import Crown
from jaxcert.domains import linear
from jaxcert.domains.backward import Context, slope_chooser
from jaxcert.slope_opt import (
    OBJECTIVES,
    optimised_crown_lower,
    resolve_objective,
    signed_step_slopes,
)

Array = jax.Array
Objective = str | Callable[[Array], Array]

__all__ = ["CrownIBPOpt", "CrownOpt"]

_STATIC = {"static": True}


def _check_objective(objective: Objective) -> None:
    if not callable(objective) and objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrownIBPOpt(Method):
    """CROWN-IBP with lower slopes from signed gradient steps (the thesis' "OURS").

    The slopes of unstable ReLUs start ``U[0, 1]`` from ``key``, take ``steps`` steps
    ``a - step_size * sign(grad)`` of the ``objective`` over the lower bounds
    (``"ce"``: robust cross-entropy, ``"sum"``, or a callable ``(batch, n_spec) -> ()``),
    projected on ``[0, 1]``, and enter the final pass under ``stop_gradient``. The
    upper bounds take their own slopes (objective ``"sum"``). ``step_size`` defaults to 2
    for one step (slopes land on 0/1, as the authors' code) and 0.1 for several.

    Example:
      >>> fn = lambda x: jax.nn.relu(x) @ jnp.array([[1.0], [1.0]])
      >>> s = jaxcert.LinfBall(jnp.array([[0.0, 1.0]]), 0.5)
      >>> m = jaxcert.CrownIBPOpt(key=jax.random.PRNGKey(0))
      >>> float(jaxcert.bound(fn, s, m, bound_upper=False).lower[0, 0])  # x_0's slope -> 0
      0.5
    """

    key: Array | None = None
    steps: int = dataclasses.field(default=1, metadata=_STATIC)
    step_size: float | None = dataclasses.field(default=None, metadata=_STATIC)
    objective: Objective = dataclasses.field(default="ce", metadata=_STATIC)

    needs_key = True

    def __post_init__(self) -> None:
        check_steps(self.steps)
        _check_objective(self.objective)

    def with_key(self, key: Array) -> CrownIBPOpt:
        return dataclasses.replace(self, key=key)

    def check(self, net: Network) -> None:
        if self.key is None:
            raise ValueError(
                "CrownIBPOpt needs key= (a PRNG key for its initial slopes), e.g. "
                "key=jax.random.PRNGKey(0)"
            )

    def intermediate(self, net: Network) -> list[Interval]:
        return net.ibp_intervals()

    def _eta(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 2.0 if self.steps == 1 else 0.1

    def _keys(self) -> tuple[Array, Array]:
        """The keys of the lower and the upper bounds' initial slopes."""
        assert self.key is not None  # check() refuses a method without one
        lower_key, upper_key = jax.random.split(self.key)
        return lower_key, upper_key

    def lower(self, net: Network, A: Array, intervals: Sequence[Interval | None]) -> Array:
        # The same slopes as bounds()' lower half for these rows.
        lower_key, _ = self._keys()
        return self._lower(net, A, intervals, lower_key, resolve_objective(self.objective))

    def _lower(
        self,
        net: Network,
        A: Array,
        intervals: Sequence[Interval | None],
        key: Array,
        objective: Callable[[Array], Array],
    ) -> Array:
        slopes = signed_step_slopes(
            net.graph,
            net.input_set,
            intervals,  # type: ignore[arg-type]
            A,
            key,
            steps=self.steps,
            step_size=self._eta(),
            objective=objective,
        )
        ctx = Context(net.graph, intervals, slope_chooser("adaptive", slopes))
        return linear.lower_bound(ctx, net.input_set, net.graph.output, A)

    def bounds(
        self, net: Network, A: Array | None, bound_upper: bool
    ) -> tuple[Array, Array, Sequence[Interval | None]]:
        A = net.spec_matrix(None) if A is None else A
        intervals = self.intermediate(net)
        _, upper_key = self._keys()
        parts = [self.lower(net, A, intervals)]
        if bound_upper:
            parts.append(self._lower(net, -A, intervals, upper_key, resolve_objective("sum")))
        both = jnp.concatenate(parts, axis=1)
        return (*split_lower_upper(both, A.shape[1]), intervals)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrownOpt(Method):
    """Full CROWN with every layer's lower slopes optimised by Adam (alpha-CROWN style).

    ``steps`` Adam steps of rate ``step_size`` on the ``objective`` (``"sum"``: minus the
    sum of the lower bounds, ``"ce"``, or a callable), the slopes shared by the
    intermediate and final passes; each row keeps the best bound seen, so it is never
    looser than :class:`Crown` (whose bounds it also intersects with). Lower and upper
    bounds are optimised separately. ``chunk_size``, ``intersect_ibp`` and
    ``screen_ibp`` are :class:`Crown`'s.

    Example:
      >>> fn = lambda x: jax.nn.relu(x) @ jnp.array([[1.0], [1.0]])
      >>> s = jaxcert.LinfBall(jnp.array([[0.0, 1.0]]), 0.5)
      >>> float(jaxcert.bound(fn, s, jaxcert.CrownOpt(steps=5)).lower[0, 0])
      0.5
    """

    steps: int = dataclasses.field(default=20, metadata=_STATIC)
    step_size: float = dataclasses.field(default=0.1, metadata=_STATIC)
    objective: Objective = dataclasses.field(default="sum", metadata=_STATIC)
    chunk_size: int | None = dataclasses.field(default=None, metadata=_STATIC)
    intersect_ibp: bool = dataclasses.field(default=True, metadata=_STATIC)
    screen_ibp: bool = dataclasses.field(default=True, metadata=_STATIC)

    def __post_init__(self) -> None:
        check_steps(self.steps)
        _check_objective(self.objective)
        check_chunk_size(self.chunk_size)

    def intermediate(self, net: Network) -> list[Interval]:
        return net.crown_intervals(
            "adaptive", chunk_size=self.chunk_size, intersect_ibp=self.intersect_ibp
        )

    def lower(self, net: Network, A: Array, intervals: Sequence[Interval | None]) -> Array:
        return optimised_crown_lower(
            net.graph,
            net.input_set,
            A,
            steps=self.steps,
            step_size=self.step_size,
            objective=resolve_objective(self.objective),
            chunk_size=self.chunk_size,
            intersect_ibp=self.intersect_ibp,
            base_intervals=intervals,  # type: ignore[arg-type]
        )[0]

    def bounds(
        self, net: Network, A: Array | None, bound_upper: bool
    ) -> tuple[Array, Array, Sequence[Interval | None]]:
        # Lower and upper bounds each optimise their own slopes from the same CROWN.
        A = net.spec_matrix(None) if A is None else A
        intervals = self.intermediate(net)
        halves = [A, -A] if bound_upper else [A]
        both = jnp.concatenate([self.lower(net, half, intervals) for half in halves], axis=1)
        lower, upper = split_lower_upper(both, A.shape[1])
        # Crown's own result may come from another chain (screened) or the output's box:
        # keeping the tighter of the two, the optimised bound is never looser than Crown's.
        crown = Crown(
            chunk_size=self.chunk_size,
            intersect_ibp=self.intersect_ibp,
            screen_ibp=self.screen_ibp,
        )
        c_lower, c_upper, _ = crown.bounds(net, A, bound_upper)
        return jnp.maximum(lower, c_lower), jnp.minimum(upper, c_upper), intervals
