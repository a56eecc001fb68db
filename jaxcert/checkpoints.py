"""A run's checkpoints: saved from good states, kept until proven, restored with fallback.

* A checkpoint of step ``s`` is *verified* once the next step, computed from it, gives a
  finite loss within the divergence bound (and finite gradients). Old checkpoints are
  deleted only beyond the newest ``keep`` verified ones, so the last good state is never
  deleted while a later one is unproven, whatever ``keep`` is.
* When training diverges, the unverified checkpoints (whose state produced the bad step)
  are discarded: a resume starts from a state that trained well.
* Restoring takes the newest *readable* checkpoint: a corrupt one is reported (by step
  and error) and skipped; training moves it aside to ``broken_checkpoints/`` so that new
  saves do not collide with it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from jaxcert.errors import CheckpointError

__all__ = ["Checkpoints"]

log = logging.getLogger(__name__)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class Checkpoints:
    """The orbax checkpoints in ``workdir/checkpoints`` (pruned by this class).

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> with tempfile.TemporaryDirectory() as d:
      ...     ckpts = Checkpoints(d, keep=1)
      ...     ckpts.save(1, {"w": jnp.ones(2)})
      ...     ckpts.verify_before(2)
      ...     state, step, broken = ckpts.restore_latest({"w": jnp.zeros(2)})
      ...     ckpts.close()
      >>> step, float(state["w"][0]), broken
      (1, 1.0, [])
    """

    def __init__(self, workdir: str | Path, keep: int):
        self.workdir = Path(workdir)
        self.keep = keep
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
        self.manager = ocp.CheckpointManager(
            (self.workdir / "checkpoints").absolute(), options=options
        )
        # Checkpoints of an earlier process count as unproven until a step verifies them.
        self.unverified = set(self.manager.all_steps())
        self.verified: set[int] = set()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state))
        self.unverified.add(step)

    def verify_before(self, step: int) -> None:
        """Step ``step`` went well: every checkpoint before it is good. Prunes to the
        newest ``keep`` good ones."""
        proven = {s for s in self.unverified if s < step}
        if not proven:
            return
        self.unverified -= proven
        self.verified |= proven
        # Pruning waits for no save: while one is in flight it is left for a later call.
        if not self.manager.is_saving_in_progress():
            self._prune()

    def _prune(self) -> None:
        for old in sorted(self.verified)[: -self.keep]:
            self.manager.delete(old)
            self.verified.discard(old)

    def discard_unverified(self) -> list[int]:
        """Deletes the checkpoints no good step followed; returns their steps."""
        self.manager.wait_until_finished()
        dropped = sorted(self.unverified)
        for step in dropped:
            self.manager.delete(step)
        self.unverified.clear()
        return dropped

    def last_good(self) -> int | None:
        return max(self.verified) if self.verified else None

    def _restore_step(self, step: int, template: Any) -> Any:
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(template))
        except ValueError:
            if not hasattr(template, "method_state"):
                raise
            # Checkpoints written before method_state and batch_stats existed.
            fields = {k: getattr(template, k) for k in ("step", "params", "opt_state", "key")}
            old = self.manager.restore(step, args=ocp.args.StandardRestore(fields))
            return type(template)(
                **old, method_state=template.method_state, batch_stats=template.batch_stats
            )

    def restore_latest(self, template: Any) -> tuple[Any, int, list[int]]:
        """``(state, step, broken steps)`` of the newest readable checkpoint.

        Raises:
          CheckpointError: there is no checkpoint, or none can be read.
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.workdir / 'checkpoints'}: train first")
        broken: list[int] = []
        for step in reversed(steps):
            try:
                return self._restore_step(step, template), step, broken
            except Exception as err:  # tensorstore/orbax raise many kinds on bad files
                log.warning(
                    "checkpoint step %d in %s is unreadable (%s); trying an older one",
                    step,
                    self.workdir / "checkpoints",
                    _first_line(err),
                )
                broken.append(step)
        raise CheckpointError(
            f"no readable checkpoint in {self.workdir / 'checkpoints'} (steps {steps} all "
            "failed to load; see the warnings above)"
        )

    def move_aside(self, steps: list[int]) -> None:
        """Moves broken checkpoints to ``workdir/broken_checkpoints/`` (for inspection)."""
        if not steps:
            return
        target = self.workdir / "broken_checkpoints"
        target.mkdir(exist_ok=True)
        for step in steps:
            source = self.workdir / "checkpoints" / str(step)
            if source.exists():
                shutil.move(str(source), str(target / f"{step}"))
            self.unverified.discard(step)
            self.verified.discard(step)
        self.manager.reload()

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self._prune()
        self.manager.close()
