"""How step time grows with batch size, width, depth and the number of classes.

Run from the repository root:

    python -m benchmarks.scaling            # four sweeps, table + benchmarks/scaling.png
    python -m benchmarks.scaling --quick    # two points per sweep
    python -m benchmarks.scaling --write    # also replace the table in BENCHMARKS.md

Each point is a full training step (loss, gradient, Adam update; as in
:mod:`benchmarks.steps`) of ``natural``, ``ibp``, ``crown-ibp`` (one backward row per
margin, ``num_classes - 1``) and ``crown-ibp+lf`` (loss fusion, one row), on 28x28x1
inputs at eps 0.1. The sweeps vary one thing from DM-small at batch 100:

* batch: 25 ... 200;
* width: every layer's width times 0.5 ... 4 (convs 16k, 32k; dense 100k);
* depth: 1 ... 8 convolutions 3x3/16 (padding 1, the first with stride 2), then dense 100;
* classes: 10 ... 200 (Tiny-ImageNet has 200): the margin bound's cost grows with the
  number of rows, the fused one's does not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

from benchmarks.report import run_header, write_section
from benchmarks.steps import _median_time, _step_fn
from jaxcert.models import ConvNet, ConvSpec

METHODS = ("natural", "ibp", "crown-ibp", "crown-ibp+lf")
SWEEPS = {
    "batch": (25, 50, 100, 200),
    "width": (0.5, 1, 2, 4),
    "depth": (1, 2, 4, 8),
    "classes": (10, 50, 100, 200),
}
QUICK_SWEEPS = {"batch": (25, 100), "width": (1, 2), "depth": (1, 4), "classes": (10, 100)}
PLOT = Path(__file__).with_name("scaling.png")


def scaled_dm_small(width: float = 1, num_classes: int = 10) -> ConvNet:
    """DM-small with every layer ``width`` times as wide."""
    convs = (ConvSpec(int(16 * width), 4, 2), ConvSpec(int(32 * width), 4, 1))
    cls = type("ScaledDMSmall", (ConvNet,), {"convs": convs, "hidden": (int(100 * width),)})
    return cls(num_classes=num_classes)


def deep_convnet(depth: int) -> ConvNet:
    """``depth`` 3x3/16 convolutions (the first with stride 2), dense 100, 10 logits."""
    convs = (ConvSpec(16, 3, 2, 1),) + (ConvSpec(16, 3, 1, 1),) * (depth - 1)
    return type("DeepConvNet", (ConvNet,), {"convs": convs, "hidden": (100,)})()


def _point(axis: str, value) -> tuple[ConvNet, int, int]:
    """(model, batch, classes) of one point of a sweep."""
    if axis == "batch":
        return scaled_dm_small(), int(value), 10
    if axis == "width":
        return scaled_dm_small(width=value), 100, 10
    if axis == "depth":
        return deep_convnet(int(value)), 100, 10
    return scaled_dm_small(num_classes=int(value)), 100, int(value)


def measure(axis: str, value) -> list[dict]:
    model, batch, classes = _point(axis, value)
    kx, ky, kp, kk = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.uniform(kx, (batch, 28, 28, 1))
    y = jax.random.randint(ky, (batch,), 0, classes)
    params = model.init(kp, x[:1])["params"]

    def apply_fn(p, z):
        return model.apply({"params": p}, z)

    rows = []
    for name in METHODS:
        _, opt, step = _step_fn(name, apply_fn, classes, 0.1)
        args = (params, opt.init(params), {}, x, y, kk)
        compiled = step.lower(*args).compile()
        seconds = _median_time(compiled, *args, min_time=0.5)
        rows.append({"axis": axis, "value": value, "method": name, "seconds": seconds})
        print(f"{axis}={value} {name:14s} {seconds * 1e3:9.1f} ms", flush=True)
    return rows


def to_markdown(rows: list[dict], header: dict) -> str:
    out = [
        f"Measured {header['date']} on {header['machine']} ({header['backend']}), "
        f"jax {header['jax']}, with `{header['command']}`; plot: `benchmarks/scaling.png`.",
        "",
        "| sweep | value | " + " | ".join(f"{m} ms" for m in METHODS) + " | CROWN-IBP / IBP "
        "| loss fusion / IBP |",
        "|---|---:|" + "---:|" * (len(METHODS) + 2),
    ]
    points = sorted({(r["axis"], r["value"]) for r in rows}, key=lambda p: (p[0], p[1]))
    for axis, value in points:
        t = {r["method"]: r["seconds"] for r in rows if (r["axis"], r["value"]) == (axis, value)}
        cells = " | ".join(f"{t[m] * 1e3:.1f}" for m in METHODS)
        out.append(
            f"| {axis} | {value} | {cells} | {t['crown-ibp'] / t['ibp']:.1f} | "
            f"{t['crown-ibp+lf'] / t['ibp']:.1f} |"
        )
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(r["axis"] for r in rows))
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4 * len(axes_names), 3.4))
    for ax, axis in zip(list(getattr(axes, "flat", [axes])), axes_names, strict=True):
        for method in METHODS:
            mine = [r for r in rows if r["axis"] == axis and r["method"] == method]
            pts = sorted((r["value"], r["seconds"]) for r in mine)
            ax.plot([p[0] for p in pts], [1e3 * p[1] for p in pts], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        values = sorted({r["value"] for r in rows if r["axis"] == axis})
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.set_ylabel("ms / step")
        ax.grid(True, which="both", alpha=0.3)
    axes_list = list(getattr(axes, "flat", [axes]))
    axes_list[0].legend(fontsize=8)
    fig.suptitle("jaxcert training step time (DM-small family)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two points per sweep")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, default=PLOT, help="where the PNG goes")
    args = parser.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    start = time.perf_counter()
    rows = []
    for axis, values in (QUICK_SWEEPS if args.quick else SWEEPS).items():
        for value in values:
            rows += measure(axis, value)
    header = run_header(f"python -m benchmarks.scaling{' --quick' if args.quick else ''}")
    body = to_markdown(rows, header)
    print(body)
    plot(rows, args.plot)
    print(f"plot: {args.plot} ({time.perf_counter() - start:.0f} s in all)")
    if args.write:
        write_section("scaling", "Scaling: batch, width, depth, classes", body)


if __name__ == "__main__":
    main(sys.argv[1:])
