"""The work-directory lock: one live holder, named; released when its process dies."""

import json
import os
import subprocess
import sys

import pytest

from jaxcert.errors import WorkdirLocked
from jaxcert.workdir import LOCK_NAME, locked


def test_the_lock_names_its_holder_and_is_released_after(tmp_path):
    with locked(tmp_path) as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"]
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: nothing claims it
    with locked(tmp_path):  # and it can be taken again
        pass


def test_a_held_lock_refuses_another_process(tmp_path):
    with locked(tmp_path):
        code = f"from jaxcert.workdir import locked\nwith locked({str(tmp_path)!r}):\n    pass\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"pid {os.getpid()}" in proc.stderr and "WorkdirLocked" in proc.stderr


def test_a_stale_lock_file_does_not_block(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone"}))
    with locked(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_the_same_process_cannot_take_it_twice(tmp_path):
    # flock is per open file: a second open in this process is a second holder.
    with locked(tmp_path), pytest.raises(WorkdirLocked), locked(tmp_path):
        pass
