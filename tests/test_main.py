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


def _one_line_error(proc, message):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_anticipated_errors_print_one_line(tmp_path):
    missing = _main(
        f"--config={QUICKSTART}",
        f"--workdir={tmp_path}",
        "--config.data.name=npz",
        f"--config.data.path={tmp_path / 'nowhere.npz'}",
        timeout=120,
    )
    _one_line_error(missing, "no such .npz file")
    bad = tmp_path / "bad.npz"
    bad.write_text("not an archive")
    unreadable = _main(
        f"--config={QUICKSTART}",
        f"--workdir={tmp_path}",
        "--config.data.name=npz",
        f"--config.data.path={bad}",
        timeout=120,
    )
    _one_line_error(unreadable, "is not a readable .npz archive")
    no_run = _main(f"--config={QUICKSTART}", f"--workdir={tmp_path / 'empty'}", "--mode=certify")
    _one_line_error(no_run, "no checkpoint in")


def test_a_busy_workdir_is_refused_naming_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from jaxcert.workdir import locked\n"
            f"with locked({str(tmp_path)!r}):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = _main(f"--config={QUICKSTART}", f"--workdir={tmp_path}", timeout=120)
        _one_line_error(proc, f"is in use by another run (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
