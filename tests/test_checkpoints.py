"""Checkpoints kept until proven, discarded when unproven, restored with fallback."""

import jax.numpy as jnp
import pytest

from jaxcert.checkpoints import Checkpoints
from jaxcert.errors import CheckpointError


def _state(value):
    return {"w": jnp.full((3,), float(value))}


def test_only_proven_checkpoints_count_towards_keep(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=1)
    ckpts.save(1, _state(1))
    ckpts.save(2, _state(2))
    assert ckpts.steps() == [1, 2] and ckpts.last_good() is None
    ckpts.verify_before(2)  # step 2 trained well from checkpoint 1
    assert ckpts.last_good() == 1 and ckpts.steps() == [1, 2]
    ckpts.wait_until_finished()  # pruning waits for no save: it happens once none is in flight
    ckpts.verify_before(3)
    assert ckpts.last_good() == 2 and ckpts.steps() == [2]
    ckpts.save(3, _state(3))
    assert ckpts.discard_unverified() == [3] and ckpts.steps() == [2]
    state, step, broken = ckpts.restore_latest(_state(0))
    assert step == 2 and float(state["w"][0]) == 2.0 and broken == []
    ckpts.close()


def test_an_empty_directory_is_a_clear_error(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=1)
    with pytest.raises(CheckpointError, match="train first"):
        ckpts.restore_latest(_state(0))
    ckpts.close()


def test_broken_checkpoints_are_skipped_and_moved_aside(tmp_path):
    ckpts = Checkpoints(tmp_path, keep=3)
    for step in (1, 2):
        ckpts.save(step, _state(step))
    ckpts.wait_until_finished()
    for path in (p for p in (tmp_path / "checkpoints" / "2").rglob("*") if p.is_file()):
        path.write_bytes(b"garbage")
    state, step, broken = ckpts.restore_latest(_state(0))
    assert (step, broken) == (1, [2]) and float(state["w"][0]) == 1.0
    ckpts.move_aside(broken)
    assert ckpts.steps() == [1] and (tmp_path / "broken_checkpoints" / "2").exists()
    ckpts.save(2, _state(5))  # no collision with the broken one
    ckpts.close()
