"""Bound-computation time per batch, as ratios to a plain forward pass in the same run.

Run from the repository root:

    python -m benchmarks.bounds            # real sizes (DM-small batch 100, DM-large batch 64)
    python -m benchmarks.bounds --quick    # small batches, for a 2-core laptop
    python -m benchmarks.bounds --write    # also replace the table in BENCHMARKS.md

Models have random weights (the cost does not depend on them). Every method computes the
lower bounds of the margin specification (``bound_upper=False``, what training and
verification use). Methods whose cost grows with the number of neurons (``crown``,
``fastlin``, ``crown-opt``) run at ``--full-batch`` examples (default 4 on a CPU) with
their time scaled to the batch and flagged; on a CPU they skip DM-large (65k neurons per
layer: many minutes per example) unless ``--large-full`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

import jaxcert
from benchmarks.report import write_section
from jaxcert.models import get_model
from jaxcert.xla_options import jit as xla_jit

# Methods that bound every intermediate neuron by its own backward pass.
FULL_METHODS = ("crown", "fastlin", "crown-opt")


def _time(fn, *args, min_time: float = 1.0, min_reps: int = 3) -> tuple[float, float]:
    """(compile + first run seconds, median seconds per call after it)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times: list[float] = []
    while len(times) < min_reps or sum(times) < min_time:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break
    return first, statistics.median(times)


def _setup(name: str, shape: tuple[int, ...], batch: int, eps: float, seed: int = 0):
    model = get_model(name)
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.uniform(kx, (batch, *shape))
    y = jax.random.randint(ky, (batch,), 0, 10)
    variables = model.init(kp, x[:1])
    return model, variables, x, y, eps


def bench_model(name, shape, batch, eps, methods, full_batch, crown_opt_steps, skip_full=False):
    model, variables, x, y, eps = _setup(name, shape, batch, eps)
    forward = xla_jit(lambda v, x: model.apply(v, x))
    _, t_forward = _time(forward, variables, x)
    rows = [
        {
            "model": name,
            "method": "forward",
            "batch": batch,
            "seconds": t_forward,
            "compile": None,
            "ratio": 1.0,
            "scaled": False,
        }
    ]
    for method in methods:
        if method in FULL_METHODS and skip_full:
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "batch": 0,
                    "seconds": float("nan"),
                    "compile": None,
                    "ratio": float("nan"),
                    "scaled": False,
                }
            )
            continue
        b = batch
        if method in FULL_METHODS and full_batch and full_batch < batch:
            b = full_batch
        xb, yb = x[:b], y[:b]
        spec = jaxcert.margin_spec(yb, 10)
        bound_method = jaxcert.get_method(method).with_key(jax.random.PRNGKey(1))
        if isinstance(bound_method, jaxcert.CrownOpt):
            bound_method = jaxcert.get_method(bound_method, steps=crown_opt_steps)

        def run(v, xb, spec, bound_method=bound_method):
            fn = lambda z: model.apply(v, z)  # noqa: E731
            s = jaxcert.LinfBall(xb, eps, clip=(0.0, 1.0))
            return jaxcert.bound(fn, s, bound_method, spec=spec, bound_upper=False).lower

        compile_s, seconds = _time(
            xla_jit(run), variables, xb, spec, min_reps=2 if b < batch else 3
        )
        seconds_per_batch = seconds * batch / b
        rows.append(
            {
                "model": name,
                "method": method,
                "batch": b,
                "seconds": seconds_per_batch,
                "compile": compile_s,
                "ratio": seconds_per_batch / t_forward,
                "scaled": b < batch,
            }
        )
        print(
            f"  {name:9s} {method:14s} {seconds_per_batch * 1e3:10.2f} ms/batch  "
            f"x{seconds_per_batch / t_forward:8.1f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def to_markdown(rows: list[dict], header: dict) -> str:
    lines = [
        f"Command: `{header['command']}`  ",
        f"Date: {header['date']}; machine: {header['machine']}; devices: {header['devices']}; "
        f"jax {header['jax']}, flax {header['flax']}.",
        "",
        "| model | method | time / batch (ms) | × forward | compile + 1st run (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["batch"] == 0:
            lines.append(
                f"| {r['model']} (batch {header['batches'][r['model']]}) | {r['method']} "
                "| not run on CPU (use `--large-full`) | | |"
            )
            continue
        note = f" (measured at batch {r['batch']}, scaled)" if r["scaled"] else ""
        compile_s = "" if r["compile"] is None else f"{r['compile']:.1f}"
        lines.append(
            f"| {r['model']} (batch {header['batches'][r['model']]}) | {r['method']}{note} | "
            f"{r['seconds'] * 1e3:.2f} | {r['ratio']:.1f} | {compile_s} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches (CPU laptops)")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--methods", nargs="*", default=list(jaxcert.METHODS))
    parser.add_argument(
        "--full-batch",
        type=int,
        default=None,
        help="batch for crown/fastlin/crown-opt (default 4 on CPU, the full batch on GPU)",
    )
    parser.add_argument(
        "--large-full", action="store_true", help="run crown/fastlin/crown-opt on DM-large on CPU"
    )
    parser.add_argument("--crown-opt-steps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write raw rows here")
    args = parser.parse_args(argv)

    on_cpu = jax.devices()[0].platform == "cpu"
    small_batch, large_batch = (20, 8) if args.quick else (100, 64)
    full_batch = args.full_batch or (4 if on_cpu else None)
    steps = args.crown_opt_steps
    rows = bench_model("dm_small", (28, 28, 1), small_batch, 0.3, args.methods, full_batch, steps)
    rows += bench_model(
        "dm_large",
        (32, 32, 3),
        large_batch,
        8 / 255,
        args.methods,
        full_batch,
        steps,
        skip_full=on_cpu and not args.large_full,
    )
    import flax

    header = {
        "command": "python -m benchmarks.bounds" + (" --quick" if args.quick else "") + " --write",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.system()}, {jax.local_device_count()} "
        f"{jax.devices()[0].platform} device(s)",
        "devices": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "batches": {"dm_small": small_batch, "dm_large": large_batch},
    }
    table = to_markdown(rows, header)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    if args.write:
        write_section("bounds", "Bounds: time per batch vs a forward pass", table)


if __name__ == "__main__":
    main()
