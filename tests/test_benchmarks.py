"""The benchmark scripts' bookkeeping: target checks and BENCHMARKS.md sections."""

import pytest

from benchmarks import lirpa, report, scaling, steps


def _row(method, seconds, temp=1000, flops=None):
    return {
        "flops": flops,
        "model": "m",
        "batch": 1,
        "method": method,
        "seconds": seconds,
        "compile": 1.0,
        "temp_bytes": temp,
        "vs_natural": 1.0,
        "vs_ibp": 1.0,
        "peak_bytes": 2**30,
        "peak_kind": "peak RSS",
    }


def test_targets_report_met_and_the_gap():
    rows = [
        _row("natural", 1.0, flops=2e9),
        _row("ibp", 3.0, 1000, flops=5e9),
        _row("crown-ibp", 21.0, 3000),
        _row("singleprop-zero", 1.5),
        _row("crown-ibp+lf", 6.0, 1200),
    ]
    lines = "\n".join(steps.check_targets(rows))
    assert "IBP step <= 3.2x natural step: 3.00 (FLOPs 2.50x) -> met" in lines
    assert "CROWN-IBP step <= 3.5x IBP step: 7.00 -> NOT met (gap 2.00x)" in lines
    assert "SingleProp-Zero step <= 0.7x IBP step: 0.50 -> met" in lines
    assert "loss fusion <= 3.5x IBP step: 2.00 -> met" in lines
    assert "memory, loss fusion <= 1.5x IBP memory (XLA temp buffers): 1.20 -> met" in lines
    table = steps.to_markdown(
        rows, dict(date="d", machine="x", backend="cpu", jax="j", command="c"), []
    )
    assert "| peak RSS so far, MB |" in table and "| 1024 |" in table
    assert "| ibp | 3000.0 | 1.00 | 1.00 | 5.00 | 1.0 |" in table  # ms, ratios, GFLOP
    assert "| crown-ibp | 21000.0 | 1.00 | 1.00 | - | 1.0 |" in table  # no FLOP count
    assert "memory <= 1.5x IBP memory (XLA temp buffers): 3.00 -> NOT met (gap 2.00x)" in lines


def test_sections_are_replaced_in_place_and_prose_kept(tmp_path):
    path = tmp_path / "B.md"
    report.write_section("steps", "Training steps", "first", path)
    text = path.read_text()
    assert "## Training steps" in text and "first" in text
    path.write_text(text + "\nprose after\n")
    report.write_section("steps", "Training steps", "second", path)
    text = path.read_text()
    assert "second" in text and "first" not in text and "prose after" in text
    assert text.count("## Training steps") == 1


def test_lirpa_table_and_missing_install_message(capsys, monkeypatch):
    rows = [
        {
            "model": "m",
            "what": "bound ibp",
            "batch": 2,
            "jaxcert_ms": 2.0,
            "lirpa_ms": 6.0,
            "max_rel_diff": 1e-7,
        }
    ]
    header = dict(date="d", machine="x", jax="j", torch="t", lirpa="l", command="c")
    assert "| m | bound ibp | 2 | 2.0 | 6.0 | 3.00 | 1.0e-07 |" in lirpa.to_markdown(rows, header)
    rows.append(dict(rows[0], what="train step x", lirpa_ms=None, failure="RuntimeError: boom"))
    rows.append(dict(rows[0], what="bound lf", mean_bounds=(1.5, 1.25)))
    text = lirpa.to_markdown(rows, header)
    assert "| m | train step x | 2 | 2.0 | failed (see below) | - |" in text
    assert "train step x: auto_LiRPA raised RuntimeError: boom" in text
    assert "1.5000 (jaxcert) vs 1.2500 (auto_LiRPA)" in text
    monkeypatch.setattr(lirpa, "load_auto_lirpa", lambda: (None, "ImportError: no torch"))
    lirpa.main([])
    assert "auto_LiRPA is not available (ImportError: no torch)" in capsys.readouterr().out


def test_loss_fusion_variant_names_make_the_fused_loss():
    import jax.numpy as jnp

    loss_fn, _, _ = steps._step_fn("crown-ibp+lf", lambda p, x: x @ p, 3, 0.1)
    x, y = jnp.ones((2, 4)) * 0.5, jnp.array([0, 2])
    hp = {"eps": 0.1, "kappa": 0.0, "beta": 1.0, "lam": 0.0}
    _, metrics = loss_fn(jnp.eye(4, 3), x, y, hp, None)
    assert set(metrics) == {"loss", "natural_loss", "robust_loss", "clean_acc", "verified_acc"}


@pytest.mark.parametrize(
    "axis, value", [("batch", 25), ("width", 2), ("depth", 3), ("classes", 50)]
)
def test_scaling_points_vary_one_thing(axis, value):
    import jax

    model, batch, classes = scaling._point(axis, value)
    x = jax.numpy.zeros((1, 28, 28, 1))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    assert model.apply({"params": params}, x).shape == (1, classes)
    assert batch == (value if axis == "batch" else 100)
    kernels = [p["kernel"].shape for p in params.values()]
    if axis == "width":
        assert kernels[0][-1] == 32 and kernels[2][-1] == 200
    if axis == "depth":
        assert sum(len(k) == 4 for k in kernels) == 3


def test_scaling_table_has_the_ratios():
    rows = [
        {"axis": "classes", "value": 10, "method": m, "seconds": t}
        for m, t in zip(scaling.METHODS, (1.0, 2.0, 8.0, 3.0), strict=True)
    ]
    header = dict(date="d", machine="x", backend="cpu", jax="j", command="c")
    assert "| classes | 10 | 1000.0 | 2000.0 | 8000.0 | 3000.0 | 4.0 | 1.5 |" in (
        scaling.to_markdown(rows, header)
    )


def test_chains_table_gives_ratios_to_textbook_and_the_screened_share():
    from benchmarks import chains

    rows = [
        {
            "model": "m",
            "eps": 0.01,
            "chain": "textbook",
            "seconds": 2.0,
            "ratio": 1.0,
            "mean_lower": -1.5,
            "needed": 0.25,
        },
        {
            "model": "m",
            "eps": 0.01,
            "chain": "screened",
            "seconds": 0.5,
            "ratio": 0.25,
            "mean_lower": -1.25,
            "needed": 0.25,
        },
    ]
    header = {"command": "c", "date": "d", "machine": "x", "backend": "cpu", "jax": "j"}
    table = chains.to_markdown(rows, header, batch=4)
    assert "| m | 0.01 | 25% | textbook | 2000.0 | 1.00 | -1.5000 |" in table
    assert "| m | 0.01 | 25% | screened | 500.0 | 0.25 | -1.2500 |" in table


def test_needed_share_counts_the_neurons_ibp_leaves_unstable():
    import jax
    import jax.numpy as jnp

    import jaxcert
    from benchmarks import chains

    w = jnp.array([[1.0, 1.0, -1.0], [0.0, 1.0, 1.0]])

    def fn(x):  # relu inputs x @ w at x = (1, 0) +- 0.5: [0.5, 1.5], [0.5, 1.5], [-2, 0]
        return jax.nn.relu(x @ w) @ jnp.ones((3, 1))

    s = jaxcert.LinfBall(jnp.array([[1.0, 0.0]]), 0.5)
    assert chains.needed_share(fn, s) == 0.0
    s = jaxcert.LinfBall(jnp.array([[1.0, 0.0]]), 0.8)  # [0.2, 1.8], [-0.6, 2.6], [-2.6, 0.6]
    assert chains.needed_share(fn, s) == 2 / 3
