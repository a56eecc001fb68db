"""Writing one benchmark's table into its marked section of ``BENCHMARKS.md``."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import jax

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(name: str, title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replaces the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` with
    ``body``, or appends a ``## title`` section holding it; the prose around is kept."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text)


def run_header(command: str) -> dict[str, str]:
    """Date, machine, backend and jax version of this run, and the command that made it."""
    machine = platform.processor() or platform.machine()
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{machine}, {jax.device_count()} device(s)",
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "command": command,
    }
