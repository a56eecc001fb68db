"""Training loop: learning, checkpoint-resume equality, NaN stop, 1-vs-2 devices."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from helpers_train import tiny_config, write_tiny_npz

from jaxcert import train as train_lib


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_training_logs_metrics_and_checkpoints(npz, tmp_path):
    c = tiny_config(npz, "crown-ibp", epochs=2)
    state, records = train_lib.train(c, tmp_path, progress=False)
    assert int(state.step) == 16  # 160 / 20 * 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 16 and json.loads(lines[-1]) == records[-1]
    for key in ("loss", "clean_acc", "verified_acc", "eps", "kappa", "beta", "lr", "step_time"):
        assert key in records[-1]
    assert records[0]["eps"] == 0.0 and records[-1]["eps"] == pytest.approx(0.05)
    assert records[-1]["clean_acc"] >= 0.6  # the tiny problem is learnt while eps ramps up
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 16 and 12 in steps


def test_resume_reproduces_the_uninterrupted_run(npz, tmp_path):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    full, full_records = train_lib.train(
        tiny_config(npz, "ibp", epochs=2), full_dir, progress=False
    )
    # Stop after the first epoch (checkpoint at step 8), then resume to the end.
    train_lib.train(tiny_config(npz, "ibp", epochs=1), part_dir, progress=False)
    resumed, resumed_records = train_lib.train(
        tiny_config(npz, "ibp", epochs=2), part_dir, progress=False
    )
    assert int(resumed.step) == int(full.step)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed_records[-1]["loss"] == full_records[-1]["loss"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(npz, tmp_path):
    c = tiny_config(npz, "natural", epochs=2)
    train_lib.train(c, tmp_path, progress=False)  # good checkpoints up to step 16
    c.train.epochs = 4
    c.train.lr = 1e30  # diverges at once
    with pytest.raises(FloatingPointError, match="last good checkpoint is step 16"):
        train_lib.train(c, tmp_path, progress=False)
    exp, params, step = train_lib.restore_params(c, tmp_path)
    assert step == 16
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))


def test_batch_size_must_divide_over_devices(npz, tmp_path, monkeypatch):
    c = tiny_config(npz)
    monkeypatch.setattr(jax, "device_count", lambda: 3)
    with pytest.raises(ValueError, match="not divisible"):
        train_lib.train(c, tmp_path, progress=False)


def test_two_devices_match_one(npz, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, jax
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from helpers_train import tiny_config
        from jaxcert import train
        c = tiny_config({str(npz)!r}, "crown-ibp", epochs=1)
        state, _ = train.train(c, sys.argv[1], progress=False)
        np.savez(sys.argv[2], *[np.asarray(x) for x in jax.tree.leaves(state.params)])
        print(jax.device_count())
        """
    )
    results = {}
    for n in (1, 2):
        env = dict(
            os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu"
        )
        out = tmp_path / f"params{n}.npz"
        proc = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"w{n}"), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().endswith(str(n))
        results[n] = np.load(out)
    for key in results[1].files:
        np.testing.assert_allclose(results[1][key], results[2][key], rtol=1e-4, atol=1e-5)


def _ahs_config(npz, epochs):
    c = tiny_config(npz, "singleprop-zero", epochs=epochs)
    c.data.validation_size = 40
    c.method.adaptive_lambda = True
    c.method.ahs_gamma = 0.5
    return c


def test_adaptive_lambda_is_the_ahs_formula_on_the_validation_split(npz, tmp_path):
    from jaxcert.schedules import adaptive_lambda

    c = _ahs_config(npz, epochs=2)
    state, records = train_lib.train(c, tmp_path, progress=False)
    record = json.loads((tmp_path / "ahs.json").read_text())
    assert sorted(int(k) for k in record) == [0, 6]  # 120 train examples / 20 per step
    for start, entry in record.items():
        want = adaptive_lambda(entry["val_natural_loss"], entry["val_regularizer"], 0.5)
        assert entry["lam"] == pytest.approx(want)
        logged = [r["lam"] for r in records if int(start) < r["step"] <= int(start) + 6]
        assert logged and all(v == pytest.approx(entry["lam"]) for v in logged)
    # Recompute the first epoch's value from the initial parameters.
    exp = train_lib.build(c)
    init = train_lib.init_state(exp, c.seed)
    hp = {"eps": exp.schedules.eps(0), "kappa": 1.0, "beta": 1.0, "lam": 0.0}
    means = train_lib.validation_means(exp, init.params, hp, 20)
    assert record["0"]["lam"] == pytest.approx(
        adaptive_lambda(means["natural_loss"], max(means["regularizer"], 0.0), 0.5)
    )
    assert 0 < record["6"]["lam"] < 0.5 / 1.5  # eps > 0 in epoch 2: R > 0


def test_adaptive_lambda_resume_reuses_the_recorded_value(npz, tmp_path):
    full, _ = train_lib.train(_ahs_config(npz, 2), tmp_path / "full", progress=False)
    train_lib.train(_ahs_config(npz, 1), tmp_path / "part", progress=False)
    resumed, _ = train_lib.train(_ahs_config(npz, 2), tmp_path / "part", progress=False)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_adaptive_lambda_needs_a_regulariser_method(npz, tmp_path):
    c = _ahs_config(npz, 1)
    c.method.name = "ibp"
    with pytest.raises(ValueError, match="regulariser method"):
        train_lib.train(c, tmp_path, progress=False)


def test_bcp_training_checkpoints_its_power_iteration_state(npz, tmp_path):
    def config(epochs):
        c = tiny_config(npz, "bcp", epochs=epochs)
        c.method.norm = "l2"
        c.method.eps_train = 0.3
        c.certify.norm = "l2"
        c.certify.eps = 0.1
        c.certify.eps_grid = (0.1,)
        c.certify.pgd_steps = 3
        c.certify.verifiers = ("bcp", "lmt", "ibp")
        return c

    full, _ = train_lib.train(config(2), tmp_path / "full", progress=False)
    assert full.method_state and int(full.step) == 16
    train_lib.train(config(1), tmp_path / "part", progress=False)
    resumed, _ = train_lib.train(config(2), tmp_path / "part", progress=False)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    for k in full.method_state:
        np.testing.assert_array_equal(full.method_state[k], resumed.method_state[k])

    from jaxcert.certify import certify

    report = certify(config(2), tmp_path / "full")
    assert report["norm"] == "l2"
    ve = report["verified_error"]
    assert report["pgd_error"] <= min(ve.values()) + 1e-9
    assert ve["bcp"] <= ve["lmt"] + 1e-9  # BCP's box only tightens LMT's ball


def test_checkpoints_without_method_state_still_restore(npz, tmp_path):
    import orbax.checkpoint as ocp

    c = tiny_config(npz, "ibp", epochs=1)
    exp = train_lib.build(c)
    state = train_lib.init_state(exp, c.seed)
    old_layout = {k: getattr(state, k) for k in ("step", "params", "opt_state", "key")}
    manager = ocp.CheckpointManager((tmp_path / "checkpoints").absolute())
    manager.save(3, args=ocp.args.StandardSave(old_layout))
    manager.wait_until_finished()
    _, params, step = train_lib.restore_params(c, tmp_path)
    assert step == 3
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_metrics_also_go_to_tensorboard(npz, tmp_path):
    import struct

    from tensorboardX.proto import event_pb2  # a test dependency (the [test] extra)

    train_lib.train(tiny_config(npz, "ibp", epochs=1), tmp_path, progress=False)
    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    data, losses = path.read_bytes(), []
    while data:  # TFRecord framing: length, crc, payload, crc
        (length,) = struct.unpack("<Q", data[:8])
        event = event_pb2.Event.FromString(data[12 : 12 + length])
        data = data[16 + length :]
        losses += [
            (event.step, v.simple_value) for v in event.summary.value if v.tag == "train/loss"
        ]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in losses] == [r["step"] for r in records]
    np.testing.assert_allclose([v for _, v in losses], [r["loss"] for r in records], rtol=1e-6)


def test_batch_norm_models_train_with_clean_batch_statistics(npz, tmp_path):
    from jaxcert.certify import certify

    c = tiny_config(npz, "ibp", epochs=2)
    c.model.name = "resnet_small"
    c.method.eps_train = 0.002  # a random 7-conv ResNet's IBP bounds are very loose
    exp = train_lib.build(c)
    assert exp.bn_momentum == pytest.approx(0.9)
    init = train_lib.init_state(exp, c.seed)
    # The step's loss equals the method's loss with eval-mode batch norm at the clean
    # batch's own statistics.
    x = jax.numpy.asarray(exp.dataset.x_train[:20], jax.numpy.float32) / 255.0
    y = jax.numpy.asarray(exp.dataset.y_train[:20])
    hp = {"eps": 0.02, "kappa": 0.5, "beta": 0.5, "lam": 0.0, "batch_stats": init.batch_stats}
    loss, metrics = jax.jit(exp.loss_fn)(init.params, x, y, hp, jax.random.PRNGKey(0))
    stats = train_lib.clean_batch_stats(exp.model, init.params, init.batch_stats, x)
    conv = stats["BatchNorm_0"]
    from jaxcert.methods import make_loss

    def apply(p, z):
        return exp.model.apply({"params": p, "batch_stats": stats}, z)

    want, _ = jax.jit(make_loss("ibp", apply, 3, c.method))(
        init.params, x, y, hp, jax.random.PRNGKey(0)
    )
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(metrics["batch_stats"]["BatchNorm_0"]["mean"], conv["mean"])
    assert not np.allclose(conv["mean"], init.batch_stats["BatchNorm_0"]["mean"])

    # The bounds are loose (IBP widths grow ~10x per layer), so the robust loss jumps
    # as eps ramps up; once eps is fixed (step 8) it must fall.
    state, records = train_lib.train(c, tmp_path, progress=False)
    assert records[-1]["eps"] == records[8]["eps"]
    assert records[-1]["loss"] < 0.5 * records[8]["loss"]
    before = np.asarray(init.batch_stats["BatchNorm_0"]["var"])
    assert not np.allclose(np.asarray(state.batch_stats["BatchNorm_0"]["var"]), before)
    c.certify.verifiers = ("ibp",)
    c.certify.eps_grid = (0.0,)
    c.certify.pgd_steps = 2
    report = certify(c, tmp_path)  # eval mode with the running averages
    assert report["clean_error"] <= report["pgd_error"] <= report["verified_error"]["best"]


def test_batch_norm_models_keep_the_methods_initial_state(npz):
    # BCP's power-iteration vectors start from 20 iterations, also under batch norm.
    c = tiny_config(npz, "bcp", epochs=2)
    c.model.name = "resnet_small"
    c.method.norm = "l2"
    exp = train_lib.build(c)
    state = train_lib.init_state(exp, c.seed)
    assert len(state.method_state) > 0
    x = jax.numpy.asarray(exp.dataset.x_train[:4], jax.numpy.float32) / 255.0
    y = jax.numpy.asarray(exp.dataset.y_train[:4])
    hp = {"eps": 0.1, "kappa": 0.5, "beta": 0.5, "lam": 0.0, "batch_stats": state.batch_stats}
    hp["method_state"] = state.method_state
    loss, metrics = jax.jit(exp.loss_fn)(state.params, x, y, hp, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))
    new = metrics["method_state"]
    same = jax.tree.map(lambda a, b: a.shape == b.shape, new, state.method_state)
    assert all(jax.tree.leaves(same))


def test_validation_passes_reuse_one_compiled_program(npz):
    exp = train_lib.build(_ahs_config(npz, epochs=1))
    traces, loss_fn = [], exp.loss_fn

    def counting_loss(*args):
        traces.append(1)
        return loss_fn(*args)

    exp = dataclasses.replace(exp, loss_fn=counting_loss)
    init = train_lib.init_state(exp, 0)
    hp = {"eps": exp.schedules.eps(0), "kappa": 1.0, "beta": 1.0, "lam": 0.0}
    first = train_lib.validation_means(exp, init.params, hp, 20)
    second = train_lib.validation_means(exp, init.params, hp, 20)  # the next epoch
    assert len(traces) == 1
    assert first == second


# ----------------------------------------------------- faults (issue 13, items 6-9)


def _steps_on_disk(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_runaway_loss_stops_training(npz, tmp_path):
    # Adam at lr 1e6 used to climb to a loss of 1e22 and exit normally.
    c = tiny_config(npz, "natural", epochs=2)
    c.train.lr = 1e6
    with pytest.raises(train_lib.TrainingDiverged, match="max_loss|non-finite") as info:
        train_lib.train(c, tmp_path, progress=False)
    assert isinstance(info.value, FloatingPointError)
    assert "lower train.lr" in str(info.value)


def test_the_diverged_state_is_never_the_good_checkpoint(npz, tmp_path):
    c = tiny_config(npz, "natural", epochs=2)
    c.train.keep_checkpoints = 1
    c.train.checkpoint_every_steps = 1
    train_lib.train(c, tmp_path, progress=False)  # good up to step 16
    c.train.epochs = 4
    c.train.lr = 1e30  # step 17 is computed from the good state; its update blows up
    with pytest.raises(train_lib.TrainingDiverged, match="last good checkpoint is step 16"):
        train_lib.train(c, tmp_path, progress=False)
    # Step 17's checkpoint (saved from the blown-up update) was discarded; with
    # keep_checkpoints=1 the good one survived because 17 was never proven.
    assert _steps_on_disk(tmp_path) == [16]
    c.train.lr = 3e-3  # a sane rerun resumes from the good state and trains on
    state, records = train_lib.train(c, tmp_path, progress=False)
    assert int(state.step) == 32 and all(np.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize(("keep", "expected"), [(1, [12, 16]), (2, [8, 12, 16])])
def test_old_checkpoints_are_pruned_only_once_a_newer_one_is_proven(npz, tmp_path, keep, expected):
    c = tiny_config(npz, "natural", epochs=2)  # checkpoints at steps 4, 8, 12 and 16
    c.train.keep_checkpoints = keep
    train_lib.train(c, tmp_path, progress=False)
    # 12 was proven by step 13; 16, the final one, by no step yet: it stays beside them.
    assert _steps_on_disk(tmp_path) == expected


def test_a_second_run_on_the_same_workdir_is_refused(npz, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from jaxcert.workdir import locked\n"
            f"with locked({str(tmp_path)!r}):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(train_lib.WorkdirLocked, match=f"pid {holder.pid}"):
            train_lib.train(tiny_config(npz, "natural", epochs=1), tmp_path, progress=False)
    finally:
        holder.kill()
        holder.wait()
    # The holder died: its lock went with it; a stale lock file does not block a resume.
    assert (tmp_path / ".jaxcert.lock").exists()
    state, _ = train_lib.train(tiny_config(npz, "natural", epochs=1), tmp_path, progress=False)
    assert int(state.step) == 8


def _corrupt(checkpoint_dir):
    files = [p for p in checkpoint_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        path.write_bytes(b"\x00garbage\xff" * 3)


def test_a_corrupt_latest_checkpoint_falls_back_to_an_older_one(npz, tmp_path, caplog):
    c = tiny_config(npz, "natural", epochs=2)
    train_lib.train(c, tmp_path, progress=False)
    _corrupt(tmp_path / "checkpoints" / "16")
    with caplog.at_level("WARNING"):
        _, params, step = train_lib.restore_params(c, tmp_path)
    assert step == 12 and "checkpoint step 16" in caplog.text and "unreadable" in caplog.text
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))
    # Resuming moves the broken one aside and trains through step 16 again.
    state, _ = train_lib.train(c, tmp_path, progress=False)
    assert int(state.step) == 16
    assert (tmp_path / "broken_checkpoints" / "16").exists()
    assert 16 in _steps_on_disk(tmp_path)


def test_no_readable_checkpoint_is_a_clear_error(npz, tmp_path):
    c = tiny_config(npz, "natural", epochs=1)
    train_lib.train(c, tmp_path, progress=False)
    for step in _steps_on_disk(tmp_path):
        _corrupt(tmp_path / "checkpoints" / str(step))
    with pytest.raises(train_lib.CheckpointError, match="no readable checkpoint"):
        train_lib.restore_params(c, tmp_path)


def test_sigterm_finishes_the_checkpoint_and_a_resume_logs_each_step_once(npz, tmp_path):
    config = {"npz": str(npz), "workdir": str(tmp_path)}
    script = textwrap.dedent(
        """
        import json, sys
        sys.path.insert(0, {tests!r})
        from helpers_train import tiny_config
        from jaxcert import train
        c = tiny_config({npz!r}, "natural", epochs=40)
        train.train(c, {workdir!r}, progress=False)
        """
    ).format(tests=str(os.path.dirname(__file__)), **config)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 10:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted (SIGTERM)" in err, err[-2000:]
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    last_checkpoint = _steps_on_disk(tmp_path)[-1]
    c = tiny_config(npz, "natural", epochs=3)
    state, _ = train_lib.train(c, tmp_path, progress=False)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, int(state.step) + 1)), (logged, last_checkpoint, steps)


def test_schedules_can_be_given_in_steps(npz, tmp_path):
    c = tiny_config(npz, "ibp", epochs=2)  # 8 steps an epoch
    c.train.warmup_steps, c.train.ramp_steps = 3, 6
    exp = train_lib.build(c)
    eps = [float(exp.schedules.eps(step)) for step in (0, 2, 3, 6, 9, 15)]
    assert (
        eps[:3] == [0.0, 0.0, 0.0] and 0 < eps[3] < 0.05 and eps[4] == eps[5] == pytest.approx(0.05)
    )
    c.train.ramp_steps = 20  # past the 16 steps of training
    with pytest.raises(train_lib.ConfigError, match="train.ramp_steps"):
        train_lib.build(c)
