"""Evaluation: clean, PGD and verified error; certified accuracy over an eps grid.

Verified error is reported per verifier and for their best-of (an example counts as
verified when any sound verifier proves every margin positive): a network trained
with CROWN-IBP at small eps is verified far better by CROWN-IBP than by IBP, and
CROWN can be looser than IBP on IBP-trained networks. Everything runs with
``jax.default_matmul_precision("highest")`` so no TF32 matmul weakens a certificate.
Outputs ``certify.json``, ``certify.md`` and ``certify.png`` in the work directory.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcert.attacks import pgd
from jaxcert.bound_methods import CrownOpt, get_method
from jaxcert.bounds import bound
from jaxcert.ensemble import ensemble, ensemble_members
from jaxcert.errors import ConfigError
from jaxcert.losses import verified
from jaxcert.options import with_options
from jaxcert.radius import certified_radius
from jaxcert.sets import norm_ball
from jaxcert.specs import margin_spec
from jaxcert.train import restore_params
from jaxcert.workdir import locked
from jaxcert.xla_options import jit as xla_jit

Array = jax.Array

__all__ = ["evaluate", "certify", "write_report", "union_report"]


def _batched(fn: Callable[..., Array], x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
    """Applies a jitted per-batch function, padding the last batch to keep one shape."""
    outs = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        n = len(xb)
        if n < batch_size:  # pad with copies of the first example, drop after
            pad = batch_size - n
            xb = np.concatenate([xb, np.repeat(xb[:1], pad, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], pad, 0)])
        outs.append(np.asarray(fn(jnp.asarray(xb), jnp.asarray(yb)))[:n])
    return np.concatenate(outs)


def evaluate(
    apply_fn: Callable[[Any, Array], Array],
    params: Any,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    eps: float,
    verifiers: Sequence[str],
    eps_grid: Sequence[float] = (),
    pgd_steps: int = 200,
    pgd_step: float | None = None,
    pgd_restarts: int = 1,
    batch_size: int = 200,
    opt_steps: int = 20,
    clip: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    norm: str = "linf",
    radius: tuple[float, float] | None = None,
    return_masks: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, Any]]:
    """Clean / PGD / verified errors of ``apply_fn(params, .)`` on ``(x, y)``.

    Args:
      x: float images in ``[0, 1]``, ``(n, ...)``; y: ``(n,)`` labels.
      eps: the radius of the headline errors, in the ``norm`` (``"linf"`` or ``"l2"``:
        the balls are intersected with ``clip``, and PGD attacks in the same norm).
      verifiers: names of sound methods of :data:`jaxcert.METHODS` (a method that draws
        random numbers gets a key from ``seed``).
      eps_grid: radii for the certified-accuracy curve.
      pgd_step: PGD's step as a fraction of ``eps`` (None: ``2.5 / pgd_steps``).
      opt_steps: steps of :class:`~jaxcert.CrownOpt` verifiers.
      radius: ``(max, tol)``: also search each verifier's certified radius per example
        (:func:`jaxcert.certified_radius` on ``[0, max]``) and report its mean and median
        (0 for an example not certified at any radius, e.g. misclassified).
      return_masks: also return the per-example verified masks
        (``{"best": (n,), "grid": [(n,) per eps], "verifiers": {name: (n,)}}``), e.g. for
        :func:`union_report`.

    Returns:
      A JSON-able report: ``clean_error``, ``pgd_error``, ``verified_error`` (per
      verifier and ``"best"``) and ``certified_accuracy`` over ``eps_grid``.
    """
    fn = lambda z: apply_fn(params, z)  # noqa: E731
    key = jax.random.PRNGKey(seed)

    @xla_jit
    def correct(xb: Array, yb: Array) -> Array:
        return jnp.argmax(fn(xb), -1) == yb

    @xla_jit
    def pgd_correct(xb: Array, yb: Array) -> Array:
        step_size = None if pgd_step is None else pgd_step * eps
        adv = pgd(
            fn, xb, yb, eps, steps=pgd_steps, restarts=pgd_restarts, key=key, clip=clip,
            norm=norm, step_size=step_size,
        )  # fmt: skip
        return jnp.argmax(fn(adv), -1) == yb

    def make_verifier(name: str) -> Callable[[Array, Array, Array], Array]:
        # The radius is an argument, so each verifier compiles once for the whole grid.
        method = get_method(name).with_key(key)
        if isinstance(method, CrownOpt):
            method = with_options(method, steps=opt_steps)

        @xla_jit
        def run(xb: Array, yb: Array, radius: Array) -> Array:
            s = norm_ball(norm, xb, radius, clip)
            spec = margin_spec(yb, num_classes)
            return verified(bound(fn, s, method, spec=spec, bound_upper=False).lower)

        return run

    verifier_fns = {m: make_verifier(m) for m in verifiers}

    def make_radius(name: str) -> Callable[[Array, Array], Array]:
        method = get_method(name).with_key(key)
        if isinstance(method, CrownOpt):
            method = with_options(method, steps=opt_steps)
        assert radius is not None
        high, tol = radius
        return xla_jit(
            lambda xb, yb: certified_radius(
                fn, xb, yb, method, num_classes=num_classes, norm=norm, hi=high, tol=tol,
                clip=clip,
            )
        )  # fmt: skip

    computed: dict[tuple[str, float], np.ndarray] = {}

    def verified_at(method: str, radius: float) -> np.ndarray:
        # Once per (verifier, radius): eps is usually also a point of the grid.
        key = (method, float(radius))
        if key not in computed:
            run = verifier_fns[method]
            r = jnp.float32(radius)
            computed[key] = _batched(lambda xb, yb: run(xb, yb, r), x, y, batch_size)
        return computed[key]

    with jax.default_matmul_precision("highest"):
        clean = _batched(correct, x, y, batch_size)
        robust = _batched(pgd_correct, x, y, batch_size) & clean
        per_verifier = {m: verified_at(m, eps) for m in verifiers}
        best = np.logical_or.reduce(list(per_verifier.values()))
        radii = {}
        if radius is not None:
            for m in verifiers:
                r = _batched(make_radius(m), x, y, batch_size)
                radii[m] = {"mean": float(np.mean(r)), "median": float(np.median(r))}
        curve: dict[str, list[float]] = {m: [] for m in verifiers}
        curve["best"] = []
        grid_best = []
        for grid_eps in eps_grid:
            masks = {m: verified_at(m, float(grid_eps)) for m in verifiers}
            for m, mask in masks.items():
                curve[m].append(float(mask.mean()))
            grid_best.append(np.logical_or.reduce(list(masks.values())))
            curve["best"].append(float(grid_best[-1].mean()))

    report = {
        "num_examples": int(len(x)),
        "eps": float(eps),
        "norm": norm,
        "clean_error": float(1 - clean.mean()),
        "pgd_error": float(1 - robust.mean()),
        "pgd": {"steps": pgd_steps, "restarts": pgd_restarts, "step": pgd_step},
        "verified_error": {
            **{m: float(1 - v.mean()) for m, v in per_verifier.items()},
            "best": float(1 - best.mean()),
        },
        "certified_accuracy": {"eps": [float(e) for e in eps_grid], **curve},
    }
    if radius is not None:
        report["certified_radius"] = {"max": radius[0], "tol": radius[1], **radii}
    if return_masks:
        return report, {"best": best, "grid": grid_best, "verifiers": per_verifier}
    return report


def union_report(
    report: dict[str, Any], masks: dict[str, Any], other_masks: dict[str, Any], other: str
) -> dict[str, Any]:
    """Adds the "union" of two models' certificates (SingleProp's "IBP+SingleProp").

    An example counts when either model is verified on it (each verified example is
    also correctly classified by that model): ``union:<verifier>`` under each verifier
    both runs used (SingleProp 002 reports it per certifier, e.g. IBP), and ``union``
    for the best-of verifiers, also over the eps grid. This is not the certified accuracy
    of any single model or ensemble: it shows how complementary two trainings are.
    """
    union = masks["best"] | other_masks["best"]
    per_verifier = {
        f"union:{name}": float(1 - (mask | other_masks["verifiers"][name]).mean())
        for name, mask in masks["verifiers"].items()
        if name in other_masks["verifiers"]
    }
    out = dict(report)
    out["verified_error"] = {
        **report["verified_error"],
        **per_verifier,
        "union": float(1 - union.mean()),
    }
    curve = dict(report["certified_accuracy"])
    pairs = zip(masks["grid"], other_masks["grid"], strict=True)
    curve["union"] = [float((a | b).mean()) for a, b in pairs]
    out["certified_accuracy"] = curve
    out["union_with"] = other
    return out


def report_stem(split: str) -> str:
    """The file name (without suffix) of a certify report on ``split``.

    Example:
      >>> report_stem("test"), report_stem("validation")
      ('certify', 'certify_validation')
    """
    return "certify" if split == "test" else f"certify_{split}"


def write_report(report: dict[str, Any], workdir: str | Path) -> dict[str, Path]:
    """Writes ``certify.json``, ``certify.md`` and ``certify.png`` (``certify_validation.*``
    for a report on the validation split); returns their paths."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stem = report_stem(report.get("split", "test"))
    paths = {k: workdir / f"{stem}.{k}" for k in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2))

    ve = report["verified_error"]
    loaded = report.get("checkpoint_step")
    of_step = f", checkpoint step {loaded}" if loaded is not None else ""
    lines = [
        f"# Certification at eps = {report['eps']:g} ({report['num_examples']} "
        f"{report.get('split', 'test')} examples{of_step})",
        "",
        "| metric | error (%) |",
        "|---|---:|",
        f"| clean | {100 * report['clean_error']:.2f} |",
        f"| PGD ({report['pgd']['steps']} steps, {report['pgd']['restarts']} restarts) | "
        f"{100 * report['pgd_error']:.2f} |",
    ]
    lines += [f"| verified ({m}) | {100 * e:.2f} |" for m, e in ve.items()]
    curve = report["certified_accuracy"]
    if curve["eps"]:
        names = [k for k in curve if k != "eps"]
        lines += [
            "",
            "## Certified accuracy (%) over eps",
            "",
            "| eps | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for i, e in enumerate(curve["eps"]):
            lines.append(
                f"| {e:g} | " + " | ".join(f"{100 * curve[n][i]:.2f}" for n in names) + " |"
            )
    radii = report.get("certified_radius")
    if radii:
        names = [k for k in radii if k not in ("max", "tol")]
        lines += [
            "",
            f"## Certified radius (searched in [0, {radii['max']:g}] to {radii['tol']:g})",
            "",
            "| verifier | mean | median |",
            "|---|---:|---:|",
        ]
        lines += [f"| {n} | {radii[n]['mean']:.4f} | {radii[n]['median']:.4f} |" for n in names]
    paths["md"].write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in (k for k in curve if k != "eps"):
        style: dict[str, Any] = {"linewidth": 2.5, "color": "black"} if name == "best" else {}
        ax.plot(curve["eps"], [100 * v for v in curve[name]], marker="o", label=name, **style)
    ax.set_xlabel(f"eps ({report.get('norm', 'linf')})")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return paths


def certify(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Loads the newest readable checkpoint in ``workdir`` and writes the certify report
    (which names the checkpoint step it certified)."""
    with locked(workdir):
        return _certify(config, Path(workdir))


def _certify(config: Any, workdir: Path) -> dict[str, Any]:
    # This run's members (itself, or those it trained) and any other runs to average with.
    member_dirs = [d for _, d in ensemble_members(config, workdir)]
    member_dirs += [Path(other) for other in config.certify.ensemble_workdirs]
    exp, params, step = restore_params(config, member_dirs[0])
    apply_fn = exp.apply_fn
    if len(member_dirs) > 1:
        # Certify the averaged logits of the members (DoubleMargin's ensembles).
        members = [params] + [restore_params(config, other)[1] for other in member_dirs[1:]]
        averaged = ensemble([functools.partial(exp.apply_fn, m) for m in members])

        def apply_fn(_: Any, x: Array) -> Array:
            return averaged(x)

    ds = exp.dataset
    n = config.certify.num_examples
    if config.certify.split == "validation":
        if ds.x_val is None or ds.y_val is None:
            raise ConfigError("certify.split='validation' needs data.validation_size > 0")
        x, y = ds.x_val, ds.y_val
    else:
        x, y = ds.x_test, ds.y_test
    x, y = (x[:n], y[:n]) if n > 0 else (x, y)
    c = config.certify
    kwargs = dict(
        eps=c.eps,
        verifiers=tuple(c.verifiers),
        eps_grid=tuple(c.eps_grid),
        pgd_steps=c.pgd_steps,
        pgd_step=c.pgd_step if c.pgd_step > 0 else None,
        pgd_restarts=c.pgd_restarts,
        batch_size=c.batch_size,
        opt_steps=c.opt_steps,
        clip=(config.method.clip_min, config.method.clip_max),
        seed=config.seed,
        norm=config.certify.norm,
        radius=(c.radius_max, c.radius_tol) if c.radius else None,
        return_masks=True,
    )
    x = x.astype(np.float32) / 255.0
    result = evaluate(apply_fn, params, x, y, ds.num_classes, **kwargs)
    assert isinstance(result, tuple)  # return_masks=True
    report, masks = result
    if c.union_workdir:
        # The other model: same architecture and data, trained by another method.
        _, other_params, _ = restore_params(config, c.union_workdir)
        other = evaluate(exp.apply_fn, other_params, x, y, ds.num_classes, **kwargs)
        assert isinstance(other, tuple)
        report = union_report(report, masks, other[1], str(c.union_workdir))
    report["checkpoint_step"] = step
    if len(member_dirs) > 1:
        report["ensemble_of"] = [str(d) for d in member_dirs]
    report["split"] = config.certify.split
    report["model"] = config.model.name
    report["method"] = config.method.name
    report["data"] = config.data.name
    write_report(report, workdir)
    return report
