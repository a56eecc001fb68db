"""Runs the papers' headline comparisons of ``RESULTS.md`` at one CPU budget.

    python experiments/reproduce.py --list
    python experiments/reproduce.py thesis34 singleprop --data=../shared/data
    python experiments/reproduce.py thesis34 --summary      # the Markdown table only

Each comparison trains every row from its paper's config (``experiments/*.py``) with
the same budget and seed, then certifies it; the budget overrides only what a 2-core
CPU cannot afford (data size, epochs, model size, PGD steps at evaluation) and is the
same for every row of one comparison. A row whose ``certify.json`` exists is skipped;
an interrupted row resumes from its checkpoints. ``--summary`` prints the table that
``RESULTS.md`` quotes. ``--threads=1`` pins XLA to one thread so that two queues can
share a 2-core machine without disturbing each other's timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# MNIST budget: all 60,000 training images, batch 100 (unless the paper's config says
# otherwise), 6 epochs: 1 warm-up, 3 ramp-up, lr x0.1 at epoch 5;
# DM-small (unless the comparison names another model); PGD-20 at evaluation; the full
# 10,000-image test set.
_MNIST = (
    "--config.model.name=dm_small",
    "--config.train.epochs=6",
    "--config.train.warmup_epochs=1",
    "--config.train.ramp_epochs=3",
    "--config.train.warmup_steps=-1",
    "--config.train.ramp_steps=-1",
    "--config.train.lr_decay=step",
    "--config.train.decay_epochs=(5,)",
    "--config.certify.pgd_steps=20",
    "--config.seed=0",
)
# CIFAR-10 subset budget: all 4,000 training images, batch 50, 30 epochs (2 warm-up,
# 15 ramp-up), lr x0.1 at epoch 25, PGD-20, all 1,000 test images; DM-small.
_CIFAR = (
    "--config.model.name=dm_small",
    "--config.train.batch_size=50",
    "--config.train.epochs=30",
    "--config.train.warmup_epochs=2",
    "--config.train.ramp_epochs=15",
    "--config.train.lr_decay=step",
    "--config.train.decay_epochs=(25,)",
    "--config.certify.pgd_steps=20",
    "--config.seed=0",
)


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    config: str  # experiments/<file>:<arg>
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Comparison:
    paper: str
    dataset: str  # "mnist" or "cifar10_subset": the .npz under --data
    budget: tuple[str, ...]
    rows: tuple[Row, ...]
    # Also certify every row on the validation split (the budget must hold one out), so
    # that a hyper-parameter swept over rows is chosen without reading the test set.
    validate: bool = False


COMPARISONS: dict[str, Comparison] = {
    "crown_ibp_cifar": Comparison(
        "003 Table 2, CIFAR-10 at 2/255 (beta = 1)",
        "cifar10_subset",
        _CIFAR,
        (
            Row("IBP", "cifar_crown_ibp.py:2", ("--config.method.name=ibp",)),
            Row("CROWN-IBP (beta 1)", "cifar_crown_ibp.py:2"),
        ),
    ),
    "thesis34": Comparison(
        "thesis Table 3.4, MNIST eps 0.2 (eps_train 0.3)",
        "mnist",
        _MNIST,
        (
            Row("IBP", "thesis_table34.py:mnist,ibp,0.2"),
            Row("CROWN-IBP (beta 1)", "thesis_table34.py:mnist,crown-ibp,0.2"),
            Row(
                "CAP-IBP (Fast-Lin slopes, beta 1)",
                "thesis_table34.py:mnist,crown-ibp,0.2",
                ("--config.method.name=cap-ibp",),
            ),
            Row("OURS (one-step slopes)", "thesis_table34.py:mnist,ours,0.2"),
        ),
    ),
    "singleprop": Comparison(
        "002 Table 1, MNIST eps 0.3, DM-small (5,000 validation images held out for all); "
        "certified on the first 2,000 test images (Fast-Lin and CNN-Cert-Zero are slow)",
        "mnist",
        (
            *_MNIST,
            "--config.data.validation_size=5000",
            "--config.certify.num_examples=2000",
            "--config.certify.eps_grid=(0.3,)",
        ),
        (
            Row("IBP (Gowal)", "singleprop_table1.py:mnist,small,ibp"),
            Row("SingleProp-Zero", "singleprop_table1.py:mnist,small,singleprop-zero"),
            Row("SingleProp-FastLin", "singleprop_table1.py:mnist,small,singleprop-fastlin"),
            Row("SingleProp-Zero + AHS", "singleprop_table1.py:mnist,small,singleprop-zero,ahs"),
            Row(
                "SingleProp-FastLin + AHS",
                "singleprop_table1.py:mnist,small,singleprop-fastlin,ahs",
            ),
        ),
    ),
    "doublemargin": Comparison(
        "000 Table 2, MNIST, DM-small: certified accuracy at eps 0.3 and certified radius "
        "(IBP, CROWN = CNN-Cert) on the first 500 test images (000 uses 200)",
        "mnist",
        (
            *_MNIST,
            "--config.certify.num_examples=500",
            "--config.certify.eps_grid=(0.3,)",
            "--config.certify.radius=True",
            "--config.certify.radius_max=0.5",
        ),
        (
            Row("natural", "doublemargin_table2.py:mnist,natural"),
            Row("L1", "doublemargin_table2.py:mnist,l1"),
            Row("ReLU stability", "doublemargin_table2.py:mnist,rs"),
            Row("IBP regulariser", "doublemargin_table2.py:mnist,ibp-reg"),
            Row("DoubleMargin (s + v)", "doublemargin_table2.py:mnist,double-margin"),
            Row("DoubleMargin (s only)", "doublemargin_table2.py:mnist,double-margin-s"),
            Row(
                "DoubleMargin (s + v), ensemble of 2 seeds",
                "doublemargin_table2.py:mnist,double-margin",
                ("--config.train.ensemble_members=2",),
            ),
        ),
    ),
    "tightness": Comparison(
        "001 Table 2, MNIST eps 0.2 (eps_train 0.3), DM-small, batch 256; gamma (001's "
        "value is lost) chosen by verified error on 5,000 held-out training images",
        "mnist",
        (*_MNIST, "--config.data.validation_size=5000"),
        (
            Row("CROWN-IBP (re-implemented)", "tightness_table2.py:0.2,0.0"),
            *(
                Row(f"CROWN-IBP + r (gamma {g})", f"tightness_table2.py:0.2,{g}")
                for g in ("0.5", "0.1", "0.01", "0.001")
            ),
        ),
        validate=True,
    ),
    "bcp": Comparison(
        "thesis Table 3.2, MNIST L2 eps 1.58, 4C3F, batch 50, the first 30,000 training "
        "images; certified by BCP and IBP on the first 2,000 test images (CROWN on 4C3F "
        "takes hours on one core)",
        "mnist",
        (
            *_MNIST,
            "--config.data.train_size=30000",
            "--config.model.name=cnn_4c3f",
            "--config.certify.num_examples=2000",
            "--config.certify.eps_grid=(1.58,)",
            "--config.certify.verifiers=('bcp','ibp')",
        ),
        (
            Row("LMT", "bcp_table32.py:mnist,4c3f,lmt"),
            Row("BCP", "bcp_table32.py:mnist,4c3f,bcp"),
        ),
    ),
}


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")


def commands(name: str, data_dir: str, root: str) -> list[tuple[Row, Path, list[str]]]:
    """The train command of each row of comparison ``name`` (certify: ``--mode=certify``)."""
    comp = COMPARISONS[name]
    out = []
    for row in comp.rows:
        workdir = Path(root) / name / _slug(row.label)
        cmd = [
            sys.executable,
            "-m",
            "jaxcert.main",
            f"--config=experiments/{row.config}",
            "--config.data.name=npz",
            f"--config.data.path={Path(data_dir) / (comp.dataset + '.npz')}",
            *comp.budget,
            *row.overrides,
            f"--workdir={workdir}",
        ]
        out.append((row, workdir, cmd))
    return out


def _steps(comp: Comparison, workdir: Path) -> list[tuple[str, list[str]]]:
    """What is left to run for one row: training, then each certification not done yet."""
    test_done = (workdir / "certify.json").exists()
    val_done = not comp.validate or (workdir / "certify_validation.json").exists()
    steps = []
    if not (test_done and val_done):
        steps.append(("train", ["--mode=train"]))  # resumes, or returns at once when done
    if not val_done:
        steps.append(("validation", ["--mode=certify", "--config.certify.split=validation"]))
    if not test_done:
        steps.append(("certify", ["--mode=certify"]))
    return steps


def _median_step_seconds(workdir: Path) -> float | None:
    """Median seconds per training step, from ``metrics.jsonl``."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    times = [
        r["step_time"]
        for r in map(json.loads, path.read_text().splitlines())
        if "step_time" in r and r.get("step", 0) > 0
    ]
    if not times:
        return None
    times.sort()
    return times[len(times) // 2]


def summary(name: str, root: str) -> str:
    """The Markdown table of comparison ``name`` from the rows' ``certify.json``."""
    comp = COMPARISONS[name]
    header: list[str] = []
    lines = []
    for row in comp.rows:
        report_path = Path(root) / name / _slug(row.label) / "certify.json"
        if not report_path.exists():
            lines.append(f"| {row.label} | (not run yet) |")
            continue
        report = json.loads(report_path.read_text())
        cols = ["clean err", "PGD err"]
        cells = [f"{100 * report['clean_error']:.2f}%", f"{100 * report['pgd_error']:.2f}%"]
        for verifier, error in report["verified_error"].items():
            cols.append(f"verified err ({verifier})")
            cells.append(f"{100 * error:.2f}%")
        for verifier, stats in report.get("certified_radius", {}).items():
            if isinstance(stats, dict):
                cols.append(f"mean radius ({verifier})")
                cells.append(f"{stats['mean']:.4f}")
        if comp.validate:
            val_path = report_path.parent / "certify_validation.json"
            cols.append("val. verified err (best)")
            val = json.loads(val_path.read_text()) if val_path.exists() else None
            cells.append("?" if val is None else f"{100 * val['verified_error']['best']:.2f}%")
        step = _median_step_seconds(report_path.parent)
        cols.append("s/step")
        cells.append("?" if step is None else f"{step:.3f}")
        header = header or cols
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if not header:
        return f"{name}: nothing run yet"
    top = "| row | " + " | ".join(header) + " |"
    return "\n".join([top, "|---" * (len(header) + 1) + "|", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="comparisons to run (default: all)")
    parser.add_argument("--data", default="../shared/data", help="folder with the .npz files")
    parser.add_argument("--root", default="workdir/reproduce", help="work directories go here")
    parser.add_argument("--threads", type=int, default=0, help="XLA threads (0: all cores)")
    parser.add_argument("--list", action="store_true", help="list the comparisons")
    parser.add_argument("--summary", action="store_true", help="print the tables only")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--rows",
        nargs="+",
        default=(),
        help="run only the rows whose slug contains one of these (e.g. s_only ensemble)",
    )
    args = parser.parse_args()
    names = args.names or list(COMPARISONS)
    unknown = sorted(set(names) - set(COMPARISONS))
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; choose from {sorted(COMPARISONS)}")
    if args.list:
        for name, comp in COMPARISONS.items():
            print(f"{name}: {comp.paper} ({len(comp.rows)} rows)")
        return
    env = dict(os.environ, TQDM_DISABLE="1")
    if args.threads:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads="
            + str(args.threads)
        ).strip()
    for name in names:
        if not args.summary:
            for row, workdir, cmd in commands(name, args.data, args.root):
                if args.rows and not any(part in _slug(row.label) for part in args.rows):
                    continue
                for step, extra in _steps(COMPARISONS[name], workdir):
                    print(" ".join(cmd[2:] + extra), flush=True)
                    if args.dry_run:
                        continue
                    tic = time.time()
                    subprocess.run([*cmd, *extra], env=env, check=True)
                    print(f"# {row.label}: {step} took {time.time() - tic:.0f} s", flush=True)
        print(f"\n### {name}: {COMPARISONS[name].paper}\n")
        print(summary(name, args.root))


if __name__ == "__main__":
    main()
