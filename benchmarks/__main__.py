"""Every benchmark in one run: ``python -m benchmarks [--quick] [--write]``.

Runs, in this order and in this process, :mod:`benchmarks.steps` (first, so that its
running peak-memory column is its own), :mod:`benchmarks.scaling`,
:mod:`benchmarks.bounds`, :mod:`benchmarks.chains` and :mod:`benchmarks.lirpa` (the
last one only compares when auto_LiRPA imports; otherwise it says why). With
``--write`` each replaces its own section of ``BENCHMARKS.md`` (and ``scaling`` its
plot), so one command reproduces every figure there.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import bounds, chains, lirpa, scaling, steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small sizes of each")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    flags = [f for f, on in (("--quick", args.quick), ("--write", args.write)) if on]
    for module in (steps, scaling, bounds, chains, lirpa):
        start = time.perf_counter()
        print(f"\n=== {module.__name__} {' '.join(flags)}", flush=True)
        module.main(flags)
        print(f"=== {module.__name__}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
