"""Command line: ``python -m jaxcert.main --config=experiments/NAME.py [--config.KEY=VALUE]``.

Modes: ``train``, ``certify`` (latest checkpoint of ``--workdir``) and
``train_and_certify`` (default). Unknown or ill-typed keys are refused by
``ml_collections``; impossible values by :func:`jaxcert.config.validate`. Every
anticipated error (:class:`jaxcert.errors.JaxcertError`: config, data, checkpoints, a
busy work directory, divergence) prints one line and exits with status 2; an
interruption (SIGINT, SIGTERM) with 130 once the in-flight checkpoint is written;
unexpected errors keep their traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcert.config import default_config, validate
from jaxcert.errors import JaxcertError, TrainingInterrupted

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/*.py); default: the offline quickstart."
)
flags.DEFINE_string("workdir", "workdir/quickstart", "Checkpoints, metrics and reports go here.")
flags.DEFINE_enum(
    "mode", "train_and_certify", ["train", "certify", "train_and_certify"], "What to run."
)


def run(config, workdir: str, mode: str) -> dict | None:
    """Validates the config and runs ``mode``; returns the certify report if any."""
    validate(config)
    from jaxcert.certify import certify, report_stem
    from jaxcert.ensemble import ensemble_members
    from jaxcert.train import train

    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))
    if mode in ("train", "train_and_certify"):
        members = ensemble_members(config, workdir)
        for i, (member_config, member_dir) in enumerate(members):
            if len(members) > 1:
                print(f"ensemble member {i + 1}/{len(members)}: {member_dir}")
                member_dir.mkdir(parents=True, exist_ok=True)
                (member_dir / "config.json").write_text(member_config.to_json_best_effort(indent=2))
            _, records = train(member_config, member_dir)
            if records:
                print("last training metrics:", json.dumps(records[-1]))
    if mode in ("certify", "train_and_certify"):
        report = certify(config, workdir)
        print((Path(workdir) / f"{report_stem(config.certify.split)}.md").read_text())
        return report
    return None


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    config = FLAGS.config
    if config is None:
        config = default_config()
    try:
        run(config, FLAGS.workdir, FLAGS.mode)
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(130)
    except JaxcertError as e:  # anticipated: one line; anything else keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
