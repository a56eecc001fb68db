"""Certify: error orderings and report files that agree with the numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_train import tiny_config, write_tiny_npz

from jaxcert.certify import certify
from jaxcert.train import restore_params, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("certify")
    npz = write_tiny_npz(workdir / "tiny.npz")
    c = tiny_config(npz, "ibp", epochs=3)
    c.certify.verifiers = ("ibp", "crown-ibp", "crown", "crown-ibp-opt", "crown-opt")
    c.certify.opt_steps = 3
    train(c, workdir, progress=False)
    return c, workdir, certify(c, workdir)


def test_verified_error_bounds_pgd_error_bounds_clean_error(trained):
    _, _, report = trained
    clean, pgd = report["clean_error"], report["pgd_error"]
    assert 0 <= clean <= pgd <= 1
    for verifier, err in report["verified_error"].items():
        assert pgd <= err <= 1, verifier
    best = report["verified_error"]["best"]
    assert best <= min(v for k, v in report["verified_error"].items() if k != "best")
    assert clean < 0.5  # the tiny problem is learnt
    curve = report["certified_accuracy"]
    assert curve["eps"] == [0.0, 0.02]
    assert curve["best"][0] == pytest.approx(1 - clean)  # eps = 0 certifies exactly the correct
    assert curve["best"][1] <= curve["best"][0]


def test_report_files_agree_with_the_returned_numbers(trained):
    _, workdir, report = trained
    on_disk = json.loads((workdir / "certify.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    md = (workdir / "certify.md").read_text()
    assert f"| clean | {100 * report['clean_error']:.2f} |" in md
    for verifier, err in report["verified_error"].items():
        assert f"| verified ({verifier}) | {100 * err:.2f} |" in md
    png = (workdir / "certify.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_certify_without_checkpoint_is_a_clear_error(tmp_path):
    npz = write_tiny_npz(tmp_path / "tiny.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        certify(tiny_config(npz), tmp_path / "empty")


def test_union_with_another_run_counts_either_models_certificates(trained, tmp_path):
    import numpy as np

    from jaxcert.certify import evaluate
    from jaxcert.train import restore_params

    c, workdir, _ = trained
    other = tiny_config(Path(c.data.path), "singleprop-zero")
    other.train.epochs = 2
    other.method.lam_end = 0.5
    train(other, tmp_path / "sp", progress=False)
    c2 = tiny_config(Path(c.data.path), "ibp", epochs=3)
    c2.certify.verifiers = ("ibp",)
    c2.certify.union_workdir = str(tmp_path / "sp")
    report = certify(c2, workdir)
    # Recompute both models' masks and their union by hand.
    masks = []
    for wd in (workdir, tmp_path / "sp"):
        exp, params, _ = restore_params(c2, wd)
        x = exp.dataset.x_test.astype(np.float32) / 255.0
        _, m = evaluate(
            exp.apply_fn,
            params,
            x,
            exp.dataset.y_test,
            3,
            eps=c2.certify.eps,
            verifiers=("ibp",),
            eps_grid=c2.certify.eps_grid,
            pgd_steps=2,
            return_masks=True,
        )
        masks.append(m)
    union = masks[0]["best"] | masks[1]["best"]
    assert report["verified_error"]["union"] == pytest.approx(1 - union.mean())
    assert report["verified_error"]["union"] <= report["verified_error"]["best"]
    assert len(report["certified_accuracy"]["union"]) == len(c2.certify.eps_grid)
    assert "verified (union)" in (workdir / "certify.md").read_text()


def test_certify_an_ensemble_of_runs(trained, tmp_path):
    import numpy as np

    from jaxcert.train import restore_params

    c, workdir, _ = trained
    other = tiny_config(Path(c.data.path), "ibp", epochs=1)
    other.seed = 1
    train(other, tmp_path / "second", progress=False)
    c2 = tiny_config(Path(c.data.path), "ibp", epochs=3)
    c2.certify.verifiers = ("ibp", "crown-ibp")
    c2.certify.ensemble_workdirs = (str(tmp_path / "second"),)
    report = certify(c2, workdir)
    assert report["ensemble_of"] == [str(workdir), str(tmp_path / "second")]
    exp, p1, _ = restore_params(c2, workdir)
    _, p2, _ = restore_params(c2, tmp_path / "second")
    x = exp.dataset.x_test.astype(np.float32) / 255.0
    logits = (exp.apply_fn(p1, x) + exp.apply_fn(p2, x)) / 2
    clean_error = 1 - float(np.mean(np.argmax(logits, -1) == exp.dataset.y_test))
    assert report["clean_error"] == pytest.approx(clean_error)
    assert report["pgd_error"] <= report["verified_error"]["best"]


def test_certify_falls_back_from_a_corrupt_checkpoint_and_says_which_it_used(tmp_path):
    npz = write_tiny_npz(tmp_path / "tiny.npz")
    c = tiny_config(npz, "natural", epochs=2)
    c.certify.verifiers = ("ibp",)
    c.certify.num_examples = 8
    train(c, tmp_path / "run", progress=False)
    latest = tmp_path / "run" / "checkpoints" / "16"
    for path in (p for p in latest.rglob("*") if p.is_file()):
        path.write_bytes(b"not a checkpoint")
    report = certify(c, tmp_path / "run")
    assert report["checkpoint_step"] == 12
    assert "checkpoint step 12" in (tmp_path / "run" / "certify.md").read_text()
    assert latest.exists()  # certify only reads: the broken one stays for inspection


def test_certify_reports_the_certified_radius(tmp_path):
    npz = write_tiny_npz(tmp_path / "tiny.npz")
    c = tiny_config(npz, "ibp", epochs=2)
    c.certify.verifiers = ("ibp", "crown-ibp")
    c.certify.num_examples = 16
    c.certify.radius = True
    c.certify.radius_max = 0.2
    c.certify.radius_tol = 0.005
    train(c, tmp_path / "run", progress=False)
    report = certify(c, tmp_path / "run")
    radii = report["certified_radius"]
    assert radii["max"] == 0.2 and radii["tol"] == 0.005
    for verifier in ("ibp", "crown-ibp"):
        assert 0 <= radii[verifier]["median"] <= 0.2 and 0 <= radii[verifier]["mean"] <= 0.2
    # An example verified at eps = 0.02 has a radius of at least 0.02 (to the tolerance).
    curve = report["certified_accuracy"]
    for verifier in ("ibp", "crown-ibp"):
        verified_at = curve[verifier][curve["eps"].index(0.02)]
        assert radii[verifier]["mean"] >= (0.02 - 0.005) * verified_at, verifier
    assert "Certified radius" in (tmp_path / "run" / "certify.md").read_text()


def test_union_is_reported_per_verifier_too():
    import numpy as np

    from jaxcert.certify import union_report

    def masks(best, ibp):
        return {"best": np.array(best, bool), "grid": [], "verifiers": {"ibp": np.array(ibp, bool)}}

    report = {"verified_error": {"ibp": 0.5, "best": 0.4}, "certified_accuracy": {"eps": []}}
    out = union_report(report, masks([1, 0, 0], [1, 0, 0]), masks([0, 1, 0], [0, 0, 1]), "sp")
    assert out["verified_error"]["union:ibp"] == pytest.approx(1 / 3)  # examples 0 and 2
    assert out["verified_error"]["union"] == pytest.approx(1 / 3)  # examples 0 and 1
    assert out["union_with"] == "sp"


def test_an_ensemble_is_trained_member_by_member_and_certified_as_one(tmp_path):
    from jaxcert.main import run

    c = tiny_config(write_tiny_npz(tmp_path / "tiny.npz"), "ibp", epochs=1)
    c.seed = 3
    c.train.ensemble_members = 2
    c.certify.verifiers = ("ibp",)
    report = run(c, str(tmp_path / "ens"), "train_and_certify")
    dirs = [tmp_path / "ens" / "member_0", tmp_path / "ens" / "member_1"]
    assert report["ensemble_of"] == [str(d) for d in dirs]
    assert (tmp_path / "ens" / "certify.json").exists()
    # Each member is an ordinary run with its own seed: different initialisations.
    assert [json.loads((d / "config.json").read_text())["seed"] for d in dirs] == [3, 4]
    exp, p0, _ = restore_params(c, dirs[0])
    _, p1, _ = restore_params(c, dirs[1])
    x = exp.dataset.x_test.astype(np.float32) / 255.0
    out0, out1 = exp.apply_fn(p0, x), exp.apply_fn(p1, x)
    assert not np.allclose(out0, out1)
    logits = (out0 + out1) / 2
    clean_error = 1 - float(np.mean(np.argmax(logits, -1) == exp.dataset.y_test))
    assert report["clean_error"] == pytest.approx(clean_error)


def test_certify_on_the_validation_split_reads_held_out_training_examples(tmp_path):
    from jaxcert.main import run

    c = tiny_config(write_tiny_npz(tmp_path / "tiny.npz"), "ibp", epochs=1)
    c.data.validation_size = 24
    c.certify.verifiers = ("ibp",)
    run(c, str(tmp_path / "run"), "train_and_certify")
    c.certify.split = "validation"
    report = run(c, str(tmp_path / "run"), "certify")
    assert report["split"] == "validation" and report["num_examples"] == 24
    # Its own files: the test report of the same run is left as it was.
    on_disk = json.loads((tmp_path / "run" / "certify_validation.json").read_text())
    assert on_disk["split"] == "validation"
    assert json.loads((tmp_path / "run" / "certify.json").read_text())["split"] == "test"
    assert "24 validation examples" in (tmp_path / "run" / "certify_validation.md").read_text()
    exp, params, _ = restore_params(c, tmp_path / "run")
    x = exp.dataset.x_val.astype(np.float32) / 255.0
    clean = 1 - float(np.mean(np.argmax(exp.apply_fn(params, x), -1) == exp.dataset.y_val))
    assert report["clean_error"] == pytest.approx(clean)


def test_certify_on_the_validation_split_without_one_is_a_config_error(tmp_path):
    from jaxcert.config import validate
    from jaxcert.errors import ConfigError

    c = tiny_config(write_tiny_npz(tmp_path / "tiny.npz"), "ibp")
    c.certify.split = "validation"
    with pytest.raises(ConfigError, match="data.validation_size"):
        validate(c)
    c.certify.split = "train"
    with pytest.raises(ConfigError, match="certify.split"):
        validate(c)
