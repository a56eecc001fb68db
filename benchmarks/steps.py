"""Training-step time and memory of every method, as ratios measured in one run.

Run from the repository root:

    python -m benchmarks.steps            # DM-small/MNIST batch 100, DM-large/CIFAR batch 64
    python -m benchmarks.steps --quick    # DM-small only, fewer methods: a 2-core laptop
    python -m benchmarks.steps --write    # also replace the table in BENCHMARKS.md

A step is what ``jaxcert.train`` compiles: the method's loss, its gradient and an Adam
update, jitted, on random weights and inputs (the cost does not depend on them), at
mid-ramp hyper-parameters (eps > 0, kappa = 0.5, beta = 0.5, lambda = 0.5) with the
linear bound on. Reported per method: seconds per step (median), compile time, the
step's XLA temporary memory (``memory_analysis().temp_size_in_bytes``: the buffers one
step needs besides its inputs and outputs, available on CPU and GPU alike), XLA's
count of the step's floating-point operations (``cost_analysis()``; the time ratios'
floor where the work is convolution-bound), the
process's peak memory after the method ran (device ``peak_bytes_in_use`` where the
backend reports it, else peak RSS; a running maximum, so it is informative for the
methods that raise it, which run last), and ratios to the natural step and to the IBP
step. The targets of the speed issue are checked and any gap is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from benchmarks.report import run_header, write_section
from jaxcert import methods
from jaxcert.config import default_config
from jaxcert.models import get_model
from jaxcert.xla_options import jit as xla_jit

# "NAME+lf": method NAME with loss fusion (one backward row, jaxcert.loss_fusion).
# Ordered roughly by memory, so that the running peak-memory column rises with them.
METHODS = (
    "natural",
    "pgd",
    "singleprop-zero",
    "singleprop-fastlin",
    "double-margin",
    "ibp-reg",
    "ibp",
    "bcp",
    "crown-ibp+lf",
    "crown-ibp",
    "crown-ibp-opt",
)
QUICK_METHODS = (
    "natural",
    "singleprop-zero",
    "double-margin",
    "ibp",
    "crown-ibp+lf",
    "crown-ibp",
    "crown-ibp-opt",
)

# (numerator, denominator, limit, what): the speed issue's targets on step-time ratios.
TIME_TARGETS = (
    ("ibp", "natural", 3.2, "IBP step <= 3.2x natural step"),
    ("crown-ibp", "ibp", 3.5, "CROWN-IBP step <= 3.5x IBP step"),
    ("crown-ibp+lf", "ibp", 3.5, "CROWN-IBP step, loss fusion <= 3.5x IBP step"),
    ("crown-ibp-opt", "crown-ibp", 2.0, "crown-ibp-opt step <= 2x CROWN-IBP step"),
    ("singleprop-zero", "ibp", 0.7, "SingleProp-Zero step <= 0.7x IBP step"),
)
MEMORY_TARGETS = (
    ("crown-ibp", "ibp", 1.5, "CROWN-IBP memory <= 1.5x IBP memory"),
    ("crown-ibp+lf", "ibp", 1.5, "CROWN-IBP memory, loss fusion <= 1.5x IBP memory"),
)


def _median_time(fn, *args, min_time: float = 1.0, min_reps: int = 3) -> float:
    times: list[float] = []
    while len(times) < min_reps or sum(times) < min_time:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
        if len(times) >= 30:
            break
    return statistics.median(times)


def peak_memory_bytes() -> tuple[int, str]:
    """The process's peak memory so far: device peak bytes if reported, else peak RSS."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"


def compiled_flops(compiled) -> float | None:
    """XLA's count of a compiled step's floating-point operations (None if not given)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per device program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def method_loss(name: str, apply_fn, num_classes: int):
    """The loss of a benchmark method name: a registered method, ``+lf`` for loss fusion."""
    cfg = default_config().method
    cfg.pgd_steps = 7
    cfg.norm = "l2" if name == "bcp" else "linf"
    cfg.loss_fusion = name.endswith("+lf")
    return methods.make_loss(name.removesuffix("+lf"), apply_fn, num_classes, cfg)


def _step_fn(name: str, apply_fn, num_classes: int, eps: float):
    loss_fn = method_loss(name, apply_fn, num_classes)
    opt = optax.adam(1e-3)
    hparams = {
        "eps": jnp.float32(eps),
        "kappa": jnp.float32(0.5),
        "beta": jnp.float32(0.5),
        "lam": jnp.float32(0.5),
    }

    def step(params, opt_state, method_state, x, y, key):
        hp = {**hparams, "method_state": method_state}
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, hp, key)
        method_state = metrics.pop("method_state", method_state)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, method_state, metrics["loss"]

    return loss_fn, opt, xla_jit(step)


def bench(model_name: str, shape, batch: int, eps: float, names) -> list[dict]:
    model = get_model(model_name)
    kx, ky, kp, kk = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.uniform(kx, (batch, *shape))
    y = jax.random.randint(ky, (batch,), 0, 10)
    params = model.init(kp, x[:1])["params"]

    def apply_fn(p, z):
        return model.apply({"params": p}, z)

    rows = []
    for name in names:
        loss_fn, opt, step = _step_fn(name, apply_fn, 10, 2.0 if name == "bcp" else eps)
        init = getattr(loss_fn, "init_method_state", None)
        method_state = init(params, x, kk) if init else {}
        args = (params, opt.init(params), method_state, x, y, kk)
        start = time.perf_counter()
        compiled = step.lower(*args).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
        flops = compiled_flops(compiled)
        seconds = _median_time(compiled, *args)
        peak, peak_kind = peak_memory_bytes()
        rows.append(
            {
                "model": model_name,
                "batch": batch,
                "method": name,
                "seconds": seconds,
                "compile": compile_s,
                "temp_bytes": temp,
                "flops": flops,
                "peak_bytes": peak,
                "peak_kind": peak_kind,
            }
        )
        print(
            f"{model_name} {name:18s} {seconds * 1e3:9.1f} ms  compile {compile_s:5.1f} s",
            flush=True,
        )
    by_name = {r["method"]: r for r in rows}
    for r in rows:
        r["vs_natural"] = r["seconds"] / by_name["natural"]["seconds"]
        r["vs_ibp"] = r["seconds"] / by_name["ibp"]["seconds"] if "ibp" in by_name else None
    return rows


def check_targets(rows: list[dict]) -> list[str]:
    """One line per target: measured ratio, limit, met or the gap."""
    lines = []
    models = sorted({r["model"] for r in rows})
    for model in models:
        by = {r["method"]: r for r in rows if r["model"] == model}
        for num, den, limit, what in TIME_TARGETS:
            if num in by and den in by:
                ratio = by[num]["seconds"] / by[den]["seconds"]
                status = "met" if ratio <= limit else f"NOT met (gap {ratio / limit:.2f}x)"
                flops = ""
                if by[num].get("flops") and by[den].get("flops"):
                    flops = f" (FLOPs {by[num]['flops'] / by[den]['flops']:.2f}x)"
                lines.append(f"{model}: {what}: {ratio:.2f}{flops} -> {status}")
        for num, den, limit, what in MEMORY_TARGETS:
            if num in by and den in by and by[den]["temp_bytes"]:
                ratio = by[num]["temp_bytes"] / by[den]["temp_bytes"]
                status = "met" if ratio <= limit else f"NOT met (gap {ratio / limit:.2f}x)"
                lines.append(f"{model}: {what} (XLA temp buffers): {ratio:.2f} -> {status}")
    return lines


def to_markdown(rows: list[dict], header: dict, targets: list[str]) -> str:
    out = [
        f"Measured {header['date']} on {header['machine']} ({header['backend']}), "
        f"jax {header['jax']}, with `{header['command']}`.",
        "",
        "| model | batch | method | ms / step | x natural | x IBP | GFLOP | compile s "
        f"| temp MB | {rows[0]['peak_kind']} so far, MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vs_ibp = f"{r['vs_ibp']:.2f}" if r["vs_ibp"] is not None else "-"
        mem = f"{r['temp_bytes'] / 2**20:.1f}" if r["temp_bytes"] else "-"
        gflop = f"{r['flops'] / 1e9:.2f}" if r.get("flops") else "-"
        out.append(
            f"| {r['model']} | {r['batch']} | {r['method']} | {r['seconds'] * 1e3:.1f} | "
            f"{r['vs_natural']:.2f} | {vs_ibp} | {gflop} | {r['compile']:.1f} | {mem} | "
            f"{r['peak_bytes'] / 2**20:.0f} |"
        )
    out += ["", "Targets:", ""] + [f"* {line}" for line in targets]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="DM-small only, fewer methods")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--cifar-batch", type=int, default=0, help="DM-medium/large batch (64 on CPU, else 256)"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    rows = bench("dm_small", (28, 28, 1), 100, 0.3, QUICK_METHODS if args.quick else METHODS)
    if not args.quick:
        cifar_batch = args.cifar_batch or (64 if jax.default_backend() == "cpu" else 256)
        for name in ("dm_medium", "dm_large"):
            rows += bench(name, (32, 32, 3), cifar_batch, 8 / 255, METHODS)
    targets = check_targets(rows)
    print("\n".join(targets))
    header = run_header(f"python -m benchmarks.steps{' --quick' if args.quick else ''}")
    body = to_markdown(rows, header, targets)
    print(body)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    if args.write:
        write_section("steps", "Training steps", body)


if __name__ == "__main__":
    main(sys.argv[1:])
