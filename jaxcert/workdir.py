"""One live run per work directory: an advisory lock that names its holder.

Two runs on one directory interleave their metrics and race on checkpoints (orbax's
rename can fail and its threads then hang the interpreter at exit). :func:`locked`
takes an exclusive ``flock`` on ``workdir/.jaxcert.lock`` and writes the holder (pid,
host, command, start time) into it; a second run is refused with that information. The
kernel releases the lock when its process dies, however it dies, so a stale lock file
from a killed run never blocks a resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jaxcert.errors import WorkdirLocked

__all__ = ["LOCK_NAME", "locked"]

LOCK_NAME = ".jaxcert.lock"


def _holder() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


@contextlib.contextmanager
def locked(workdir: str | Path) -> Iterator[Path]:
    """Holds ``workdir``'s lock for the ``with`` block (creating the directory).

    Raises:
      WorkdirLocked: another live process holds it; the message names the process.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as d, locked(d) as path:
      ...     path.name
      '.jaxcert.lock'
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_NAME
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            raise WorkdirLocked(
                f"{workdir} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}: "
                f"{holder.get('command', '?')}); wait for it, or use another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_holder()))
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
