"""CROWN's chains of intermediate bounds side by side: time and tightness.

Run from the repository root:

    python -m benchmarks.chains            # DM-small, batch 4, three radii
    python -m benchmarks.chains --write    # also replace the table in BENCHMARKS.md

``Crown`` bounds every ReLU input by its own backward passes. Textbook CROWN uses them
for every neuron; ``screen_ibp`` keeps IBP's bounds for the neurons IBP proves stable
(auto_LiRPA's default) and ``intersect_ibp`` intersects every bound with IBP's; the
default runs the intersected and the screened chain and keeps the tighter final bound
per output. The table gives each one's time as a ratio to textbook CROWN in the same
run, its mean margin lower bound, and the share of ReLU-input neurons that screening
leaves to the backward passes (what a verifier with dynamic shapes, such as
auto_LiRPA, would compute; jaxcert computes every neuron, see BENCHMARKS.md). Random
weights: that share depends on the weights and the radius, hence three radii.
"""

from __future__ import annotations

import argparse
import sys

import jax.numpy as jnp

import jaxcert
from benchmarks.bounds import _setup, _time
from benchmarks.report import run_header, write_section
from jaxcert.domains import interval
from jaxcert.domains.backward import slope_chooser
from jaxcert.domains.intermediate import crown_intervals, screenable_nodes
from jaxcert.xla_options import jit as xla_jit

# (label, intersect_ibp, screen_ibp)
CHAINS = (
    ("textbook", False, False),
    ("intersected", True, False),
    ("screened", False, True),
    ("default (both)", True, True),
)


def needed_share(fn, input_set: jaxcert.InputSet) -> float:
    """The share of ReLU-input neurons that the screened chain bounds by backward passes
    (unstable under IBP from the refined bounds before them, for some example)."""
    graph = jaxcert.graph.trace(fn, input_set.shape, jnp.float32)
    intervals = crown_intervals(
        graph, input_set, slope_chooser("adaptive"), intersect_ibp=False, screen_ibp=True
    )
    needed = total = 0
    for index in sorted(screenable_nodes(graph)):
        if index == 0:
            continue
        lo, hi = interval.propagate_node(graph.nodes[index], intervals)
        unstable = (lo < 0) & (hi > 0)
        needed += int(jnp.sum(jnp.any(unstable.reshape(unstable.shape[0], -1), axis=0)))
        total += unstable[0].size
    return needed / max(total, 1)


def bench(model_name: str, shape: tuple[int, ...], batch: int, radii: list[float]) -> list[dict]:
    rows = []
    for eps in radii:
        model, variables, x, y, _ = _setup(model_name, shape, batch, eps)
        rows += _bench_radius(model_name, model, variables, x, y, eps)
    return rows


def _bench_radius(model_name, model, variables, x, y, eps: float) -> list[dict]:
    spec = jaxcert.margin_spec(y, 10)
    share = needed_share(lambda z: model.apply(variables, z), jaxcert.LinfBall(x, eps))
    rows: list[dict] = []
    for label, intersect, screen in CHAINS:
        method = jaxcert.Crown(intersect_ibp=intersect, screen_ibp=screen)

        def run(v, x, spec, method=method):
            s = jaxcert.LinfBall(x, eps, clip=(0.0, 1.0))
            f = lambda z: model.apply(v, z)  # noqa: E731
            return jaxcert.bound(f, s, method, spec=spec, bound_upper=False).lower

        compiled = xla_jit(run)
        _, seconds = _time(compiled, variables, x, spec, min_reps=2)
        lower = compiled(variables, x, spec)
        base = rows[0]["seconds"] if rows else seconds
        rows.append(
            {
                "model": model_name,
                "eps": eps,
                "chain": label,
                "seconds": seconds,
                "ratio": seconds / base,
                "mean_lower": float(jnp.mean(lower)),
                "needed": share,
            }
        )
        print(
            f"  eps {eps:<6g} {label:15s} {seconds * 1e3:9.1f} ms  x{seconds / base:5.2f}"
            f"  mean margin lower bound {float(jnp.mean(lower)):10.4f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def to_markdown(rows: list[dict], header: dict, batch: int) -> str:
    lines = [
        f"Command: `{header['command']}`  ",
        f"Date: {header['date']}; machine: {header['machine']}; backend: "
        f"{header['backend']}; jax {header['jax']}. Batch {batch}, margin specification "
        "(9 rows), lower bounds only.",
        "",
        "| model | eps | neurons bounded by passes (screened) | chain | time (ms) "
        "| × textbook | mean margin lower bound |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['eps']:g} | {100 * r['needed']:.0f}% | {r['chain']} | "
            f"{r['seconds'] * 1e3:.1f} | {r['ratio']:.2f} | {r['mean_lower']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one radius, batch 2")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    batch = 2 if args.quick else 4
    radii = [0.01] if args.quick else [0.002, 0.01, 0.05]
    rows = bench("dm_small", (28, 28, 1), batch, radii)
    command = "python -m benchmarks.chains" + (" --quick" if args.quick else "") + " --write"
    table = to_markdown(rows, run_header(command), batch)
    print(table)
    if args.write:
        write_section("chains", "CROWN's intermediate-bound chains: screening", table)


if __name__ == "__main__":
    main()
